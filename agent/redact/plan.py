"""The rules that apply to one field, in the order they are tried, and the
prefilter that rules them out (see :mod:`agent.redact.prefilter`).

A :class:`Plan` holds four stages of :data:`Step` (a rule and its check,
None for a rule that must always run) and the gates over their checks.
For a field, :meth:`Plan.live` says which steps of each stage to try, in
order, each once: every step without a check, and the checked steps whose
check passes among the gates' candidates; when no gate finds anything, only
the unchecked ones. There is a gate per ``programs`` list among the rules
(the rules every field gets are one), so a field costs one scan plus one per
scoped group its argv has named. Built once per set of applicable rules: at
construction for paths and addresses, and per set of programs seen in an
argv (cached by the engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple, TypeAlias

from agent.redact.prefilter import Check, Gate, gate_for
from agent.redact.rules import CompiledRule

__all__ = ["Live", "Plan", "Step"]

Step: TypeAlias = tuple[CompiledRule, Check | None]
"""A rule and its check; None: the rule runs wherever it applies."""

_POSITIONAL, _FORBIDDEN, _CUT, _SENSITIVE = range(4)
_FEW_LATER: Final = 12  # up to this many later rules, a check each beats the gate's candidates


class Live(NamedTuple):
    """Indexes into each stage of a :class:`Plan` of the steps to try, in order."""

    positional: tuple[int, ...]
    forbidden: tuple[int, ...]
    cut_forbidden: tuple[int, ...]
    sensitive: tuple[int, ...]


def _unchecked(steps: tuple[Step, ...]) -> tuple[int, ...]:
    return tuple(i for i, (_, check) in enumerate(steps) if check is None)


def _groups(*stages: tuple[Step, ...]) -> dict[tuple[str, ...], tuple[Check, ...]]:
    """The checks of ``stages``, by the programs their rules are scoped to.

    A gate per group, not per plan: an argv's plan is one of as many sets of
    programs as an attacker cares to name, but its groups are among the
    rules' few ``programs`` lists, so the gates (compiled regexes, cached)
    are few, and an argv of new programs compiles nothing.
    """
    groups: dict[tuple[str, ...], dict[Check, None]] = {}
    for steps in stages:
        for compiled, check in steps:
            if check is not None:
                groups.setdefault(compiled.rule.programs, {})[check] = None
    return {programs: tuple(checks) for programs, checks in groups.items()}


def _gates(groups: Iterable[tuple[Check, ...]]) -> tuple[Gate, ...]:
    return tuple(gate for gate in map(gate_for, groups) if gate is not None)


class Plan:
    """The rules that apply to one field, by how they are tried, each in order:
    ``positional`` (argv only), ``forbidden``, ``cut_forbidden`` (forbidden,
    ``only_when_cut``) and ``sensitive``."""

    __slots__ = (
        "_where",
        "all_checked",
        "both_gates",
        "cut_forbidden",
        "cut_gates",
        "forbidden",
        "gates",
        "positional",
        "sensitive",
        "unchecked",
    )

    def __init__(
        self,
        forbidden: Sequence[Step],
        cut_forbidden: Sequence[Step],
        sensitive: Sequence[Step],
        positional: Sequence[Step],
    ) -> None:
        self.positional: Final = tuple(positional)
        self.forbidden: Final = tuple(forbidden)
        self.cut_forbidden: Final = tuple(cut_forbidden)
        self.sensitive: Final = tuple(sensitive)
        stages = (self.positional, self.forbidden, self.cut_forbidden, self.sensitive)
        self.unchecked: Final = Live(*(_unchecked(steps) for steps in stages))
        # Where each check's rules are (one check may serve two rules with one pattern).
        where: dict[Check, list[tuple[int, int]]] = {}
        for stage, steps in enumerate(stages):
            for index, (_, check) in enumerate(steps):
                if check is not None:
                    where.setdefault(check, []).append((stage, index))
        self._where: Final = {check: tuple(spots) for check, spots in where.items()}
        main = _groups(self.positional, self.forbidden, self.sensitive)
        cut = _groups(self.cut_forbidden)
        self.gates: Final = _gates(main.values())
        """Over the positional, forbidden and sensitive rules' checks."""
        self.cut_gates: Final = _gates(cut.values())
        """Over the cut-only rules' checks, for a cut field's tail."""
        both = dict(main)
        for programs, checks in cut.items():
            both[programs] = tuple(dict.fromkeys(both.get(programs, ()) + checks))
        self.both_gates: Final = _gates(both.values())
        """Both, for a cut field that is its own tail (one scan for the rules
        every field gets)."""
        self.all_checked: Final = not (self.unchecked.forbidden or self.unchecked.sensitive)
        """Every forbidden and sensitive rule has a check: a text field (not an
        argv entry, not cut) no gate finds anything in is left as it is
        without trying a rule (see :meth:`clean`)."""

    def clean(self, text: str) -> bool:
        """Can no rule of the forbidden and sensitive stages match ``text``, a
        field that is not cut? True only when every one of them has a check
        (:attr:`all_checked`) and no gate finds any literal: exactly when
        :meth:`live` would name no step to try. One scan per gate, nothing
        else: a distinct path's cost."""
        if not self.all_checked:
            return False
        for gate in self.gates:  # noqa: SIM110 (a loop: all() would add a generator per field)
            if gate.may_match(text)[0]:
                return False
        return True

    def live(self, text: str, gates: tuple[Gate, ...]) -> Live:
        """The steps to try on ``text``, given the gates over the stages asked about."""
        low: str | None = None
        candidates: list[Check] = []
        for gate in gates:
            hit, found_low = gate.may_match(text)
            if hit:
                low = found_low
                candidates.extend(gate.candidates(text, low))
        if not candidates:
            return self.unchecked
        return self._passing(text, low, candidates, -1)

    def sensitive_after(self, text: str, index: int) -> tuple[int, ...]:
        """The sensitive steps after ``index`` to try on ``text``, a text a
        rule just changed (it may now hold what a later rule looks for).

        A few later rules: each one's check; more: the gates' candidates first.
        """
        low = text.lower() if text.isascii() else None
        later = self.sensitive[index + 1 :]
        if len(later) <= _FEW_LATER:
            return tuple(
                i
                for i, (_, check) in enumerate(later, index + 1)
                if check is None or check.could_match(text, low)
            )
        candidates = [c for gate in self.gates for c in gate.candidates(text, low)]
        return self._passing(text, low, candidates, index).sensitive

    def _passing(self, text: str, low: str | None, candidates: Iterable[Check], after: int) -> Live:
        """The unchecked steps, and those of ``candidates`` whose check passes
        (in the sensitive stage, only after index ``after``)."""
        # A check may come from two gates (one pattern, two programs lists).
        passing = [c for c in dict.fromkeys(candidates) if c.could_match(text, low)]
        if not passing and after < 0:
            return self.unchecked
        picked: list[set[int]] = [set(indexes) for indexes in self.unchecked]
        if after >= 0:
            picked[_SENSITIVE] = {i for i in picked[_SENSITIVE] if i > after}
        for check in passing:
            for stage, index in self._where.get(check, ()):
                if stage != _SENSITIVE or index > after:
                    picked[stage].add(index)
        return Live(*(tuple(sorted(indexes)) for indexes in picked))
