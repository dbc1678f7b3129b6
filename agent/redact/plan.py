"""The rules that apply to one field, in the order they are tried, and the
prefilter that rules them out (see :mod:`agent.redact.prefilter`).

A :class:`Plan` holds four stages of :data:`Step` (a rule and its check,
None for a rule that must always run), and the gates that rule every
checked rule of a stage out in one scan. Built once per set of applicable
rules: at construction for paths and addresses, and per set of programs
seen in an argv (cached by the engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeAlias

from agent.redact.prefilter import Check, gate_for
from agent.redact.rules import CompiledRule

__all__ = ["Plan", "Step"]

Step: TypeAlias = tuple[CompiledRule, Check | None]
"""A rule and its check; None: the rule runs wherever it applies."""

_MISS: Final[tuple[bool, str | None]] = (False, None)


def _unchecked(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    return tuple(step for step in steps if step[1] is None)


def _checks(*stages: tuple[Step, ...]) -> tuple[Check, ...]:
    return tuple(check for steps in stages for _, check in steps if check is not None)


class Plan:
    """The rules that apply to one field, by how they are tried, each in order.

    ``forbidden``, ``cut_forbidden`` (forbidden, ``only_when_cut``),
    ``sensitive`` and ``positional`` (argv only) are every step; the
    ``unchecked_*`` ones only those without a check, which are all that can
    match a field the gate found nothing in. ``sensitive_all`` and
    ``sensitive_unchecked`` index ``sensitive``.
    """

    __slots__ = (
        "_both_gate",
        "_cut_gate",
        "_gate",
        "cut_forbidden",
        "forbidden",
        "positional",
        "sensitive",
        "sensitive_all",
        "sensitive_unchecked",
        "unchecked_cut_forbidden",
        "unchecked_forbidden",
        "unchecked_positional",
    )

    def __init__(
        self,
        forbidden: Sequence[Step],
        cut_forbidden: Sequence[Step],
        sensitive: Sequence[Step],
        positional: Sequence[Step],
    ) -> None:
        self.forbidden: Final = tuple(forbidden)
        self.cut_forbidden: Final = tuple(cut_forbidden)
        self.sensitive: Final = tuple(sensitive)
        self.positional: Final = tuple(positional)
        self.unchecked_forbidden: Final = _unchecked(self.forbidden)
        self.unchecked_cut_forbidden: Final = _unchecked(self.cut_forbidden)
        self.unchecked_positional: Final = _unchecked(self.positional)
        self.sensitive_all: Final = tuple(range(len(self.sensitive)))
        self.sensitive_unchecked: Final = tuple(
            i for i, (_, check) in enumerate(self.sensitive) if check is None
        )
        main = _checks(self.forbidden, self.sensitive, self.positional)
        cut = _checks(self.cut_forbidden)
        self._gate: Final = gate_for(main)
        self._cut_gate: Final = gate_for(cut)
        self._both_gate: Final = gate_for(main + cut)

    def scan(self, text: str) -> tuple[bool, str | None]:
        """Could a checked forbidden, sensitive or positional rule match
        ``text``? And ``text.lower()`` for the checks, when ``text`` is ASCII."""
        return _MISS if self._gate is None else self._gate.may_match(text)

    def scan_cut(self, tail: str) -> tuple[bool, str | None]:
        """The same for the ``only_when_cut`` rules, on a cut field's tail."""
        return _MISS if self._cut_gate is None else self._cut_gate.may_match(tail)

    def scan_both(self, text: str) -> tuple[bool, str | None]:
        """:meth:`scan` and :meth:`scan_cut` in one, for a cut field that is
        its own tail (no longer than the cut window)."""
        return _MISS if self._both_gate is None else self._both_gate.may_match(text)
