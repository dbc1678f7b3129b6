"""Configured redaction rules: a list of plain dicts (from TOML, JSON or YAML) to Rules.

Only the shape is checked here: a list of objects, each with the fields of
:class:`~agent.redact.rules.Rule` and the right types, no unknown keys (a
typo such as ``gruop`` would otherwise be silently ignored, and the rule
would redact less than its author thinks). What the values mean (a pattern
that compiles, a group that exists) is checked by
:func:`~agent.redact.rules.compile_rule`. Either way the error names the
entry (``$[2]``), its rule name when it has one, and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from agent.redact.rules import RedactionConfigError, Rule

__all__ = ["parse_rules"]


def parse_rules(entries: object) -> tuple[Rule, ...]:
    """Turn configured rule entries into :class:`Rule` values, in order.

    Raises:
        RedactionConfigError: ``entries`` is not a list, an entry is not an
            object, or a field is missing, unknown or of the wrong type.
    """
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence):
        raise RedactionConfigError(
            f"redaction rules: expected a list of rule objects, got {type(entries).__name__}"
        )
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        where = f"$[{index}]"
        if not isinstance(entry, Mapping):
            raise RedactionConfigError(
                f"redaction rule {where}: expected an object with name, privacy and pattern, "
                f"got {type(entry).__name__}"
            )
        name = entry.get("name")
        label = f" ({name!r})" if isinstance(name, str) else ""
        try:
            rule = msgspec.convert(dict(entry), Rule, strict=True)
        except msgspec.ValidationError as exc:
            raise RedactionConfigError(f"redaction rule {where}{label}: {_describe(exc)}") from None
        rules.append(rule)
    return tuple(rules)


def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec's message, with its ``$...`` path made relative to the rule.

    msgspec says ``Expected `str`, got `int` - at `$.pattern```; the entry is
    already named, so the field is enough.
    """
    message = str(exc)
    head, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    field = path.rstrip("`")
    return f"field {field!r}: {head}{_EXPECTED.get(field, '')}"


_EXPECTED: Final = {
    "privacy": "; expected 'sensitive' or 'forbidden' (what no rule matches is public)",
    "group": "; expected a capture group number (0 is the whole match) or name",
    "programs": "; expected a list of program basenames such as ['mysql']",
    "positional": "; expected a whole number: 0 (off), or which positional argv entry after "
    "the match is the secret (1 is the first)",
    "only_when_cut": "; expected true or false (true: only for fields the capture cut short)",
}
