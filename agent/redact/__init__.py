"""Redaction: secrets out of argv, paths and addresses before they become evidence.

Sans-I/O and deterministic. Every value is in one of three privacy classes:

- public (no rule matches): kept byte for byte;
- sensitive: the secret part becomes ``***`` (``--token=abc`` to
  ``--token=***``; a URL loses its ``user:pass@``, keeps its host);
- forbidden: the whole field becomes ``[REDACTED:<rule>]`` (private keys,
  cloud and SaaS tokens, ``Authorization:`` values). A field the capture cut
  short (``cut=``) also loses a token prefix that runs to its end.

Fail closed: a field whose redaction fails becomes ``[REDACTED:error]`` and a
counter in :attr:`Redactor.stats` rises; a bad configured rule stops start-up
with a :class:`RedactionConfigError` naming it.

- ``rules``: :class:`Rule`, checking and compiling one.
- ``builtin``: :data:`BUILTIN_RULES`, the shapes everyone gets.
- ``config``: configured rules (a list of dicts) to Rules.
- ``engine``: :class:`Redactor`, which applies a rule set;
  :meth:`Redactor.describe` lists it as :class:`RuleDigest` values (pattern
  digests, never patterns) for the evidence log.
- ``literals``, ``prefilter``, ``plan``: the literals every match of a
  pattern needs, the one scan that rules out every rule lacking them, and
  the per-field plan of which rules to try.
"""

from __future__ import annotations

from agent.redact.builtin import BUILTIN_RULES
from agent.redact.config import parse_rules
from agent.redact.engine import (
    CUT_WINDOW_CHARS,
    DEFAULT_MAX_FIELD_CHARS,
    RedactedArgv,
    RedactedText,
    RedactionStats,
    RedactionTally,
    Redactor,
)
from agent.redact.rules import (
    ERROR_MARKER,
    MASK,
    CompiledRule,
    Matcher,
    PrivacyClass,
    RedactionConfigError,
    Rule,
    RuleDigest,
    compile_rule,
    digest_rule,
    marker,
)

__all__ = [
    "BUILTIN_RULES",
    "CUT_WINDOW_CHARS",
    "DEFAULT_MAX_FIELD_CHARS",
    "ERROR_MARKER",
    "MASK",
    "CompiledRule",
    "Matcher",
    "PrivacyClass",
    "RedactedArgv",
    "RedactedText",
    "RedactionConfigError",
    "RedactionStats",
    "RedactionTally",
    "Redactor",
    "Rule",
    "RuleDigest",
    "compile_rule",
    "digest_rule",
    "marker",
    "parse_rules",
]
