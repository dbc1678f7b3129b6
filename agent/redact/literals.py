"""What text a regular expression cannot match without: its necessary literals.

The prefilter (:mod:`agent.redact.prefilter`) rules a redaction rule out for
a field when none of the literals every match of the rule's pattern contains
occurs in the field. This module finds those literals, by walking the parse
tree Python's own ``re`` builds for the pattern (``re._parser``: the same
parse the rule is compiled from, so flags, escapes and classes are read
exactly as ``re`` reads them).

Soundness is one-sided and is all that matters: a literal reported here must
be in every match (else a rule is skipped on a field it matches, and a
secret leaks). Reporting too little only costs speed. So anything this walk
does not know (an opcode, a class with categories, a back-reference) counts
as "no knowledge", never as a literal, and a pattern with nothing necessary
found gets :data:`None`: its rule then runs on every field, as before.

What can go wrong: a future Python changing ``re._parser``'s tree. Every
unknown shape degrades to "no knowledge"; an import or parse failure gives
:data:`None` for every pattern (all rules run); the tests check that every
built-in rule still yields literals, so a change is noticed.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

__all__ = ["Atom", "Needs", "needs_of"]

_LIMIT: Final = 64  # most strings in a set of alternatives followed exactly
_MAX_CLASS: Final = 8  # most characters of a class followed as alternatives
_MAX_ATOM: Final = 64  # longest literal kept (longer ones are cut: a prefix is still necessary)
_KEEP: Final = 3  # necessary sets kept per pattern, best first

try:  # the parser re itself uses; private, so guarded (see the module docstring)
    _P: Any = importlib.import_module("re._parser")
    _C: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - a Python without it: no prefilter
    _P = _C = None


class Atom(NamedTuple):
    """A literal; ``ci``: matched ignoring case (as ``re``'s ``(?i)`` does)."""

    text: str
    ci: bool


class Needs(NamedTuple):
    """What every match of a pattern contains.

    Attributes:
        anchored: the match starts at the field's start (``\\A``) with one of
            these; empty when the pattern is not anchored or nothing is known.
        floating: each set is necessary (all of them): the match contains at
            least one literal of every set. Best first (longest shortest
            literal).
    """

    anchored: frozenset[Atom]
    floating: tuple[frozenset[Atom], ...]


class _Info(NamedTuple):
    """What a node matches: ``exact``, a finite superset of the strings it can
    match (None: unknown or too many); ``needs``, sets each of which every
    match contains one literal of."""

    exact: frozenset[Atom] | None
    needs: tuple[frozenset[Atom], ...]


_EMPTY: Final = frozenset({Atom("", False)})
_NOTHING: Final = _Info(None, ())
_ZERO_WIDTH: Final = _Info(_EMPTY, ())


def needs_of(pattern: re.Pattern[str]) -> Needs | None:
    """The necessary literals of a compiled pattern, or None if none are known.

    Never raises: a pattern this walk cannot read gets None (its rule always runs).
    """
    if _P is None or not isinstance(pattern.pattern, str):
        return None
    try:
        tree = _P.parse(pattern.pattern, pattern.flags)
        ci = bool(tree.state.flags & re.IGNORECASE)
        items = list(tree.data)
        info = _sequence(items, ci)
        anchored = _anchored(items, ci)
    except Exception:  # an unknown tree shape: no prefilter for this pattern
        return None
    floating = _ranked(_useful(s) for s in (*info.needs, *_as_needs(info.exact)))
    if not anchored and not floating:
        return None
    return Needs(anchored, floating[:_KEEP])


def _anchored(items: Sequence[tuple[Any, Any]], ci: bool) -> frozenset[Atom]:
    """The strings a match of a pattern that starts with ``\\A`` starts with."""
    if not items or items[0] != (_C.AT, _C.AT_BEGINNING_STRING):
        return frozenset()
    run = _EMPTY
    for op, av in items[1:]:
        info = _node(op, av, ci)
        if info.exact is None or len(run) * len(info.exact) > _LIMIT:
            break
        run = _product(run, info.exact)
    return _useful(run)


def _useful(atoms: frozenset[Atom]) -> frozenset[Atom]:
    """``atoms`` as a necessary set, or empty when it is none (holds ``""``)."""
    if not atoms or any(not a.text for a in atoms):
        return frozenset()
    return atoms


def _as_needs(exact: frozenset[Atom] | None) -> tuple[frozenset[Atom], ...]:
    return () if exact is None else (exact,)


def _ranked(sets: Iterable[frozenset[Atom]]) -> tuple[frozenset[Atom], ...]:
    """Distinct non-empty sets, most selective first: longest shortest literal,
    then fewest literals."""
    unique = {s for s in sets if s}
    return tuple(sorted(unique, key=lambda s: (-min(len(a.text) for a in s), len(s), sorted(s))))


def _best(info: _Info) -> frozenset[Atom]:
    """One necessary set of a node (empty if none)."""
    ranked = _ranked((*map(_useful, info.needs), *map(_useful, _as_needs(info.exact))))
    return ranked[0] if ranked else frozenset()


def _product(left: frozenset[Atom], right: frozenset[Atom]) -> frozenset[Atom]:
    """Every concatenation; ignoring case if either part does (more matches, never fewer)."""
    return frozenset(Atom((a.text + b.text)[:_MAX_ATOM], a.ci or b.ci) for a in left for b in right)


def _sequence(items: Iterable[tuple[Any, Any]], ci: bool) -> _Info:
    """Nodes one after another: runs of exactly known nodes concatenate."""
    run: frozenset[Atom] = _EMPTY
    exact = True
    needs: list[frozenset[Atom]] = []
    for op, av in items:
        info = _node(op, av, ci)
        if info.exact is not None and len(run) * len(info.exact) <= _LIMIT:
            run = _product(run, info.exact)
            needs.extend(info.needs)
            continue
        exact = False
        needs.append(_useful(run))
        needs.extend(info.needs)
        run = _EMPTY if info.exact is None else info.exact
    needs.append(_useful(run))
    return _Info(run if exact else None, tuple(s for s in needs if s))


def _alternatives(branches: Sequence[Iterable[tuple[Any, Any]]], ci: bool) -> _Info:
    """One of several sequences: the union of their strings and of their needs."""
    infos = [_sequence(branch, ci) for branch in branches]
    exact: frozenset[Atom] | None = frozenset()
    for info in infos:
        if exact is None or info.exact is None or len(exact) + len(info.exact) > _LIMIT:
            exact = None
            break
        exact = exact | info.exact
    union: frozenset[Atom] = frozenset()
    for info in infos:
        best = _best(info)
        if not best:
            return _Info(exact, ())
        union = union | best
    return _Info(exact, (union,) if len(union) <= _LIMIT else ())


def _node(op: Any, av: Any, ci: bool) -> _Info:
    """One parse-tree node; whatever is not known is :data:`_NOTHING`."""
    if op is _C.LITERAL:
        return _Info(frozenset({_char(chr(av), ci)}), ())
    if op is _C.IN:
        return _class(av, ci)
    if op is _C.SUBPATTERN:
        _, add, remove, sub = av
        return _sequence(sub, (ci or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE)
    if op is _C.ATOMIC_GROUP:  # matches a subset of what the group alone would
        return _sequence(av, ci)
    if op is _C.BRANCH:
        return _alternatives(av[1], ci)
    if op is _C.GROUPREF_EXISTS:  # (?(group)yes|no): one of the two
        _, yes, no = av
        return _alternatives([yes, no if no is not None else []], ci)
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
        return _repeat(av, ci)
    if op in (_C.AT, _C.ASSERT, _C.ASSERT_NOT):  # zero width: nothing consumed
        return _ZERO_WIDTH
    return _NOTHING  # ANY, NOT_LITERAL, GROUPREF, and anything unknown


def _char(char: str, ci: bool) -> Atom:
    """One character; ignoring case only where that matters: ``re`` folds no
    character onto an ASCII character that is not a letter (``-``, ``=``)."""
    return Atom(char, ci and not (char.isascii() and not char.isalpha()))


def _class(items: Sequence[tuple[Any, Any]], ci: bool) -> _Info:
    """A character class of a few literal characters (no negation, no category)."""
    chars: set[str] = set()
    for op, av in items:
        if op is _C.LITERAL:
            chars.add(chr(av))
        elif op is _C.RANGE and av[1] - av[0] < _MAX_CLASS:
            chars.update(chr(c) for c in range(av[0], av[1] + 1))
        else:
            return _NOTHING
        if len(chars) > _MAX_CLASS:
            return _NOTHING
    return _Info(frozenset(_char(c, ci) for c in chars), ())


def _repeat(av: tuple[Any, Any, Any], ci: bool) -> _Info:
    low, high, sub = av
    info = _sequence(sub, ci)
    if low == 0:
        if high == 1 and info.exact is not None and len(info.exact) < _LIMIT:
            return _Info(info.exact | _EMPTY, ())  # x?: x or nothing
        return _NOTHING
    needs = (*info.needs, *_as_needs(info.exact))
    if info.exact is not None and low == high and len(info.exact) ** low <= _LIMIT:
        exact = _EMPTY
        for _ in range(low):
            exact = _product(exact, info.exact)
        return _Info(exact, needs)
    return _Info(None, needs)
