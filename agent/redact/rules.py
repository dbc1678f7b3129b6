"""What a redaction rule is, and how one is checked and compiled.

A :class:`Rule` names one shape of secret. Its privacy class says what
happens to a field it matches:

- ``"forbidden"``: the whole field (one argv entry, one path, one address)
  becomes ``[REDACTED:<rule name>]``. For values whose mere presence is the
  leak: private key blocks, cloud and SaaS tokens, ``Authorization:`` headers.
  Nothing of the field survives, because a token glued to its surroundings
  cannot be cut out reliably.
- ``"sensitive"``: only the secret part (one capture group of the pattern)
  becomes ``***`` (or the rule's ``replacement``), and the rest of the field
  is kept: ``--token=abc`` becomes ``--token=***``, and a URL keeps its host.

A sensitive rule may be ``positional``: a match marks an argv entry (a
subcommand such as ``add_user``, a flag such as ``htpasswd -b``) after which
a later argv entry, by position, is the secret (``rabbitmqctl add_user USER
PW``), and that entry goes whole.

A forbidden rule may be ``only_when_cut``: it applies only to a field the
capture cut short (``comm`` at 15 bytes, an argv entry or a path at its
buffer's size), where a token's known prefix running to the field's end is
all that is left of it, too short for the full-length rule.

There is no ``"public"`` rule: a value no rule matches is public and is kept
byte for byte. An allow-list rule would be a way to leak, so none exists.

:func:`compile_rule` checks a rule once, up front, and raises
:class:`RedactionConfigError` naming the rule and what was expected: a bad
rule set is refused whole rather than run with a hole in it (fail closed on
configuration). What it cannot check: whether a pattern matches what its
author meant, or how slowly it runs on hostile input (Python's ``re`` has no
time limit). The engine bounds field length for that reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias

import blake3
import msgspec

from agent.errors import UsageError

__all__ = [
    "ERROR_MARKER",
    "MASK",
    "RULE_NAME",
    "CompiledRule",
    "Matcher",
    "PrivacyClass",
    "RedactionConfigError",
    "Rule",
    "RuleDigest",
    "compile_rule",
    "digest_rule",
    "marker",
]

PrivacyClass: TypeAlias = Literal["sensitive", "forbidden"]
"""What a rule does to what it matches: mask the secret part, or drop the field."""

MASK: Final = "***"
"""What a sensitive rule puts in place of the secret, unless it says otherwise."""

RULE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Rule names: short, lowercase, safe inside a marker and as a metrics label."""

ERROR_MARKER: Final = "[REDACTED:error]"
"""What a field becomes when redacting it failed: the raw value is never kept."""

_RESERVED_NAMES: Final = frozenset({"error"})


def marker(rule_name: str) -> str:
    """The text a field becomes when the forbidden rule ``rule_name`` matches it."""
    return f"[REDACTED:{rule_name}]"


class RedactionConfigError(UsageError):
    """A rule is malformed; the message names the rule and what was expected.

    A :class:`~agent.errors.UsageError`, so the CLI prints it as one line and
    exits 2 instead of starting without the rule.
    """


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One shape of secret. Plain data: :func:`compile_rule` checks and compiles it.

    Attributes:
        name: names the rule in markers, stats and errors; lowercase letters,
            digits, ``.``, ``_`` and ``-``, at most 64 characters. ``error``
            is reserved for failures.
        privacy: ``"forbidden"`` drops the whole field on any match;
            ``"sensitive"`` replaces only ``group`` of each match.
        pattern: a Python regular expression, searched for anywhere in the
            field (anchor it with ``\\A``/``\\Z`` to match whole argv entries).
            Inline flags such as ``(?i)`` go at its start. It must not match
            the empty string: such a rule would fire on every field.
        group: sensitive rules only: the capture group (number or name) that
            holds the secret; 0 is the whole match. Forbidden rules leave it 0.
        replacement: sensitive rules only: literal text put in place of the
            secret (no backreferences, so it can never copy the secret).
        next_arg: sensitive rules only, argv only: when the pattern matches an
            entry but ``group`` took no part in the match (``--token`` with no
            ``=value``), the *next* argv entry is the secret and becomes
            ``replacement`` whole (``***`` if ``replacement`` is empty).
            ``group`` must then be an optional group.
        programs: argv only: when given, the rule applies only to entries
            after one whose basename is one of these (``mysql`` covers
            ``/usr/bin/mysql`` and ``sudo mysql ...``), and never to paths or
            addresses. For flags like ``-p`` that are secrets to one program
            and harmless to every other (``mkdir -p``, ``ssh -p 22``). A flag
            in a bundle of short options (``ldapsearch -xw PW``) is the
            pattern's to allow: ``\\A-[xZ]*w(.+)?\\Z``, listing only the
            program's letters that take no value (in ``-Dw`` the ``w`` is
            ``-D``'s value, not a flag).
        positional: sensitive rules only, argv only; 0 (the default) is off.
            When N, an argv entry the pattern matches (the *trigger*: a
            subcommand such as ``\\Aadd_user\\Z``, a flag such as ``-b``) is
            kept as it is, and the Nth positional entry after it, and every
            entry after that one, become ``replacement`` whole (``***`` if
            ``replacement`` is empty). Counting starts at the entry after the
            trigger: entries that start with ``-`` (options; one that another
            rule turned into a marker is not) are skipped until the first
            positional one, and ``--`` ends the skipping; from the
            first positional entry on, every entry counts. So an option that
            takes a value (``-C 10``) or options among the positional entries
            move the masking earlier, never later; what they cost is an entry
            masked that was no secret. (With N = 1, a secret that starts with
            ``-`` is taken for an option and kept.) Only the first trigger of a rule in an argv counts (a later one could only
            mask less). ``group`` must be 0 and ``next_arg`` false: nothing in
            the trigger itself is replaced.
        only_when_cut: forbidden rules only: the rule applies only to a field
            the caller says the capture cut short (``cut=`` in the engine),
            and to no other. For a token prefix anchored at the field's end
            (``sk_live_[0-9A-Za-z]*\\Z``), with a minimum length the
            full-length rule cannot afford. The engine shows such a rule only
            the last :data:`~agent.redact.engine.CUT_WINDOW_CHARS` characters
            of the field, which bounds its time.
    """

    name: str
    privacy: PrivacyClass
    pattern: str
    group: int | str = 0
    replacement: str = MASK
    next_arg: bool = False
    programs: tuple[str, ...] = ()
    positional: int = 0
    only_when_cut: bool = False


class RuleDigest(msgspec.Struct, frozen=True, kw_only=True):
    """What a rule is, for the evidence log, without its pattern.

    A configured pattern may hold a literal secret (``corp_s3cr3t``), so only
    its blake3 digest is given: enough to tell which rules ran and whether a
    rule changed between two records, nothing to read the pattern back from.
    What it cannot hide: a pattern short or guessable enough to be found by
    hashing candidates (a literal ``hunter2``); use a shape, not a value.

    Attributes:
        name, privacy, group, replacement, next_arg, programs, positional,
        only_when_cut:
            as in :class:`Rule` (a replacement is written into every field the
            rule changes, so it is no more secret here).
        builtin: the rule is one of :data:`~agent.redact.BUILTIN_RULES`,
            unchanged.
        pattern_blake3: hex blake3 of the pattern's UTF-8 bytes (a lone
            surrogate encoded as its three bytes, so any ``str`` digests).
    """

    name: str
    privacy: PrivacyClass
    builtin: bool
    pattern_blake3: str
    group: int | str = 0
    replacement: str = MASK
    next_arg: bool = False
    programs: tuple[str, ...] = ()
    positional: int = 0
    only_when_cut: bool = False


def digest_rule(rule: Rule, *, builtin: bool) -> RuleDigest:
    """``rule`` as a :class:`RuleDigest`; never raises for any ``str`` pattern."""
    pattern = rule.pattern.encode("utf-8", "surrogatepass")
    return RuleDigest(
        name=rule.name,
        privacy=rule.privacy,
        builtin=builtin,
        pattern_blake3=blake3.blake3(pattern).hexdigest(),
        group=rule.group,
        replacement=rule.replacement,
        next_arg=rule.next_arg,
        programs=rule.programs,
        positional=rule.positional,
        only_when_cut=rule.only_when_cut,
    )


class Matcher(Protocol):
    """The part of :class:`re.Pattern` the engine uses; tests substitute their own."""

    def search(self, string: str, /) -> re.Match[str] | None: ...

    def finditer(self, string: str, /) -> Iterator[re.Match[str]]: ...


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A checked rule with its compiled pattern. Build one with :func:`compile_rule`.

    Constructing it directly skips every check; that is for tests that need a
    matcher which misbehaves.
    """

    rule: Rule
    matcher: Matcher


def _fail(where: str, rule: Rule, problem: str) -> RedactionConfigError:
    return RedactionConfigError(f"redaction rule {where} ({rule.name!r}): {problem}")


def compile_rule(rule: Rule, where: str = "") -> CompiledRule:
    """Check ``rule`` and compile its pattern.

    ``where`` says where the rule came from (``$[3]`` for the fourth entry of
    a config list) and starts every error message.

    Raises:
        RedactionConfigError: the name is malformed or reserved, the privacy
            class is unknown, the pattern does not compile or matches the
            empty string, the group does not exist, a sensitive-only
            setting is given to a forbidden rule, or ``positional`` is not a
            count or is combined with a group or ``next_arg``.
    """
    where = where or "<rule>"
    if not RULE_NAME.fullmatch(rule.name):
        raise _fail(
            where,
            rule,
            f"name must match {RULE_NAME.pattern} (lowercase letters, digits, '.', '_', '-')",
        )
    if rule.name in _RESERVED_NAMES:
        raise _fail(where, rule, f"the name {rule.name!r} is reserved; choose another")
    if rule.privacy not in ("sensitive", "forbidden"):
        raise _fail(
            where, rule, f"privacy must be 'sensitive' or 'forbidden', got {rule.privacy!r}"
        )
    try:
        compiled = re.compile(rule.pattern)
    except re.error as exc:
        raise _fail(
            where, rule, f"pattern does not compile ({exc}); expected a Python regular expression"
        ) from None
    if compiled.search("") is not None:
        raise _fail(
            where, rule, "pattern matches the empty string, so it would fire on every field"
        )
    _check_group(where, rule, compiled)
    for program in rule.programs:
        if not program or "/" in program:
            raise _fail(where, rule, f"programs must be basenames such as 'mysql', got {program!r}")
    return CompiledRule(rule, compiled)


def _check_group(where: str, rule: Rule, compiled: re.Pattern[str]) -> None:
    if rule.privacy == "forbidden":
        if rule.group != 0:
            raise _fail(
                where, rule, "group is for sensitive rules; a forbidden rule drops the whole field"
            )
        if rule.replacement != MASK:
            raise _fail(
                where,
                rule,
                "replacement is for sensitive rules; a forbidden rule's field becomes a marker",
            )
        if rule.next_arg:
            raise _fail(where, rule, "next_arg is for sensitive rules")
        if rule.positional != 0:
            raise _fail(where, rule, "positional is for sensitive rules")
        return
    if rule.only_when_cut:
        raise _fail(
            where,
            rule,
            "only_when_cut is for forbidden rules; a cut field's tail is dropped whole",
        )
    group = rule.group
    if isinstance(group, bool) or not isinstance(group, int | str):
        raise _fail(where, rule, f"group must be a group number or name, got {group!r}")
    if isinstance(group, int):
        if not 0 <= group <= compiled.groups:
            raise _fail(
                where,
                rule,
                f"group {group} does not exist; the pattern has groups 0 to {compiled.groups}",
            )
    elif group not in compiled.groupindex:
        names = ", ".join(sorted(compiled.groupindex)) or "none"
        raise _fail(
            where, rule, f"group {group!r} does not exist; the pattern's named groups: {names}"
        )
    if rule.positional != 0:
        _check_positional(where, rule)
        return
    if rule.next_arg and group == 0:
        raise _fail(
            where,
            rule,
            "next_arg needs an optional capture group for the inline value "
            "(as in --token(?:=(.*))?); group 0 always takes part in a match",
        )


def _check_positional(where: str, rule: Rule) -> None:
    positional = rule.positional
    if isinstance(positional, bool) or not isinstance(positional, int) or positional < 0:
        raise _fail(
            where,
            rule,
            f"positional must be 0 (off) or which positional entry is the secret "
            f"(1 is the first), got {positional!r}",
        )
    if rule.group != 0:
        raise _fail(
            where,
            rule,
            "a positional rule keeps the entry it matches; leave group 0 "
            "(the secret is a later entry, masked whole)",
        )
    if rule.next_arg:
        raise _fail(where, rule, "next_arg and positional cannot be combined; choose one")
