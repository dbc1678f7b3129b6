"""Ruling redaction rules out of a field in one scan, before any rule runs.

Most fields (library paths, comm names, ordinary argv) hold no secret, and
trying ~100 patterns one after another on each costs tens of microseconds.
Every pattern has literals that any match of it contains
(:mod:`agent.redact.literals`): ``ghp_`` for a GitHub token, ``password``
(ignoring case) for a password assignment, a leading ``-`` for a flag. A
:class:`Gate` searches a field once for any of those literals, of every rule
of a set; when there is none, no rule of the set can match, and none runs.
When there is one, each rule's :class:`Check` (all of its necessary
literals) says which rules could match, and only those run, in their usual
order, so the output is the same.

Fail closed: a rule whose pattern yields no necessary literal (or is not a
real ``re`` pattern, such as a test's planted matcher) gets no check and
runs on every field it applies to. Only "cannot match" is ever concluded
here, never "matches".

Case: a literal from an ignore-case part of a pattern is found ignoring case
as ``re`` does. On ASCII text that is ASCII case (the fast path: one
``lower()`` and ``in`` tests, and a gate regex with ``[pP]`` classes); ``re``
also folds a few non-ASCII characters onto ASCII letters (U+017F, the long
s, matches ``s``; the Kelvin sign ``k``), so text that is not ASCII is searched with
regexes compiled in ``re``'s own ignore-case mode instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Final, TypeAlias

from agent.redact.literals import Atom, Needs, needs_of

__all__ = ["Check", "Gate", "check_for", "gate_for"]

# ASCII characters from most to least common in paths, argv and comm; the
# gate scans for one character per literal, the rarest (unlisted ones rank
# rarest of all).
# (Measured over 75,000 paths under /usr and /etc and this host's cmdlines.)
_COMMON: Final = (
    '/olesictrudapn_g-byh.mk1f2v3x6S4jEw0C8ALM5qGzI97TRPND+BOFV"UXW H@YK:,JQZ{}()=|>;\\&['
)
_RANK: Final = {c: i for i, c in enumerate(_COMMON)}


def _rank(atom: Atom, index: int) -> int:
    char = atom.text[index]
    if atom.ci and char.isalpha():
        return min(_RANK.get(char.lower(), len(_COMMON)), _RANK.get(char.upper(), len(_COMMON)))
    return _RANK.get(char, len(_COMMON))


def _unicode(atom: Atom) -> str:
    """``atom`` as a regex in ``re``'s own (Unicode) ignore-case semantics."""
    text = re.escape(atom.text)
    return f"(?i:{text})" if atom.ci else text


def _ascii(text: str, ci: bool) -> str:
    """``text`` as a regex for ASCII text: a letter ignoring case as ``[pP]``."""
    if not ci:
        return re.escape(text)
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else re.escape(c) for c in text
    )


def _ascii_safe(atoms: Iterable[Atom]) -> bool:
    """Can ASCII case rules find these in ASCII text? Not for an ignore-case
    literal that is not ASCII (``re`` folds U+017F onto ``s``)."""
    return all(a.text.isascii() or not a.ci for a in atoms)


def _frequency(char: str, ci: bool) -> float:
    """About how often ``char`` is a given character of a field (Zipf over
    :data:`_COMMON`'s order; an unlisted one rarer than any listed)."""
    if ci and char.isalpha() and char.lower() != char.upper():
        return _frequency(char.lower(), False) + _frequency(char.upper(), False)
    rank = _RANK.get(char)
    return 0.001 if rank is None else 0.1 / (1 + rank / 3)


# How often a field starts with a character, where that differs from
# anywhere else: argv options, absolute paths.
_AT_START: Final = {"-": 0.3, "/": 0.5}


def _hit_rate(atoms: frozenset[Atom], *, at_start: bool = False) -> float:
    """About how likely a position of a field (its first, ``at_start``)
    starts one of ``atoms``: what costs a gate hit and the checks."""
    total = 0.0
    for atom in atoms:
        odds = 1.0
        for index, char in enumerate(atom.text):
            if at_start and index == 0 and char in _AT_START:
                odds *= _AT_START[char]
            else:
                odds *= _frequency(char, atom.ci)
        total += odds
    return total


_FIELD_CHARS: Final = 32  # a typical field's length: where a floating literal may start
_HIT_COST: Final = 40  # a gate hit (candidates, checks) against a stop at a character


def _stop_rate(atoms: frozenset[Atom]) -> float:
    """About how likely a position of a field holds a character a gate must
    stop at for ``atoms`` (their rarest characters)."""
    chars = {char for atom in atoms for char in _anchor(atom)[1]}
    return sum(_frequency(char, False) for char in chars)


def _primary(needs: Needs) -> tuple[bool, frozenset[Atom]] | None:
    """The one set a gate searches for: the cheapest for ordinary fields. An
    anchored set is looked for at the field's start only, costing a hit
    when it is there; a floating one costs a stop wherever its rarest
    characters are, and a hit wherever it is. Only sets the gate can search
    ASCII text for; None if there is none."""
    options: list[tuple[float, int, bool, frozenset[Atom]]] = []
    if needs.anchored and _ascii_safe(needs.anchored):
        cost = _hit_rate(needs.anchored, at_start=True) * _HIT_COST
        options.append((cost, len(needs.anchored), True, needs.anchored))
    for atoms in needs.floating:
        if _ascii_safe(atoms):
            cost = (_hit_rate(atoms) * _HIT_COST + _stop_rate(atoms)) * _FIELD_CHARS
            options.append((cost, len(atoms), False, atoms))
    if not options:
        return None
    _, _, anchored, atoms = min(options, key=lambda o: (o[0], o[1], not o[2]))
    return anchored, atoms


@functools.lru_cache(maxsize=8192)
def _anchor(atom: Atom) -> tuple[int, frozenset[str]]:
    """Where a gate finds ``atom``: its rarest character's index, and the
    characters of ASCII text that can be it (both cases for a letter
    ignoring case)."""
    at = max(range(len(atom.text)), key=lambda i: (_rank(atom, i), -i))
    char = atom.text[at]
    firsts = {char.lower(), char.upper()} if atom.ci and char.isalpha() else {char}
    return at, frozenset(firsts)


_Probe: TypeAlias = Callable[[str, str], bool]
"""Does an ASCII text (given as is and lowered) hold one literal of a set?"""

_FEW: Final = 2  # up to this many literals, ``in`` tests; more: one regex search


def _probe(anchored: bool, atoms: frozenset[Atom]) -> _Probe:
    """A set's test for ASCII text, where ignoring case is ASCII case: a
    literal ignoring case is looked for, lowered, in the lowered text."""
    cased = tuple(sorted(a.text for a in atoms if not a.ci))
    folded = tuple(sorted(a.text.lower() for a in atoms if a.ci))
    if anchored:
        return lambda text, low: text.startswith(cased) or low.startswith(folded)
    if len(cased) + len(folded) <= _FEW:
        return lambda text, low: any(a in text for a in cased) or any(a in low for a in folded)
    find_cased = re.compile("|".join(map(re.escape, cased))).search if cased else None
    find_folded = re.compile("|".join(map(re.escape, folded))).search if folded else None
    return lambda text, low: (
        (find_cased is not None and find_cased(text) is not None)
        or (find_folded is not None and find_folded(low) is not None)
    )


class Check:
    """Could a rule's pattern match a text? False only when it cannot: some
    literal every match needs is absent. ``primary`` is the set a
    :class:`Gate` looks for on the rule's behalf."""

    __slots__ = ("_probes", "_regexes", "_sets", "needs", "primary")

    def __init__(self, needs: Needs, primary: tuple[bool, frozenset[Atom]]) -> None:
        self.needs = needs
        self.primary = primary
        sets = [(True, needs.anchored)] if needs.anchored else []
        sets.extend((False, atoms) for atoms in needs.floating)
        # The least likely to be in a field first: most checks fail at once.
        sets.sort(
            key=lambda spec: (
                _hit_rate(spec[1], at_start=True) if spec[0] else _hit_rate(spec[1]) * _FIELD_CHARS
            )
        )
        # ASCII text: a probe per set; none when a set needs re's own
        # semantics even there (an ignore-case literal that is not ASCII).
        fast = all(_ascii_safe(atoms) for _, atoms in sets)
        self._probes: Final = tuple(_probe(*spec) for spec in (sets if fast else ()))
        self._sets: Final = tuple(sets)
        self._regexes: tuple[tuple[re.Pattern[str], bool], ...] | None = None  # when needed

    def could_match(self, text: str, low: str | None) -> bool:
        """``low`` is ``text.lower()`` when ``text`` is ASCII, else None."""
        if low is not None and self._probes:
            for probe in self._probes:  # noqa: SIM110 - a loop: no generator per call
                if not probe(text, low):
                    return False
            return True
        if self._regexes is None:  # any text: each set as a regex, match() if anchored
            self._regexes = tuple(
                (re.compile("|".join(_unicode(a) for a in sorted(atoms))), anchored)
                for anchored, atoms in self._sets
            )
        for regex, anchored in self._regexes:
            if (regex.match(text) if anchored else regex.search(text)) is None:
                return False
        return True


def check_for(matcher: object) -> Check | None:
    """The check for a rule's matcher; None (the rule always runs) when the
    matcher is not a compiled ``re`` pattern or no literal is known for it.

    Cached by pattern, so a copy of a redactor
    (:func:`~agent.redact.events.same_rules`) costs no analysis.
    """
    try:
        return _check(matcher)
    except TypeError:  # a matcher that cannot be hashed (a test's): it always runs
        return None


@functools.lru_cache(maxsize=4096)
def _check(matcher: object) -> Check | None:
    if not isinstance(matcher, re.Pattern) or not isinstance(matcher.pattern, str):
        return None
    needs = needs_of(matcher)
    if needs is None:
        return None
    primary = _primary(needs)
    return None if primary is None else Check(needs, primary)


class Gate:
    """One scan for any rule of a set of checks.

    :meth:`may_match` is False only when no rule of ``checks`` can match a
    text. When it is True, :meth:`candidates` narrows the checks worth
    asking to those whose gate literal is in the text: found where the gate
    regex matches (searched again from the next character each time, so
    overlapping literals are all found), or starting the text.
    Rules without a check are not its business (the engine runs them anyway).
    """

    __slots__ = (
        "_anchored_cased",
        "_anchored_folded",
        "_ascii_regex",
        "_by_char",
        "_by_folded",
        "_by_prefix",
        "_floating",
        "_folded_lengths",
        "_prefix_lengths",
        "_spots",
        "_unicode_pattern",
        "_unicode_regex",
        "checks",
    )

    def __init__(self, checks: Iterable[Check]) -> None:
        self.checks: Final = tuple(checks)
        anchored: set[Atom] = set()
        floating: set[Atom] = set()
        by_char: dict[str, dict[tuple[str, int, bool], set[Check]]] = {}
        by_prefix: dict[str, set[Check]] = {}
        by_folded: dict[str, set[Check]] = {}
        for check in self.checks:
            is_anchored, atoms = check.primary
            (anchored if is_anchored else floating).update(atoms)
            for atom in atoms:
                if is_anchored:
                    table, key = (
                        (by_folded, atom.text.lower()) if atom.ci else (by_prefix, atom.text)
                    )
                    table.setdefault(key, set()).add(check)
                else:
                    at, firsts = _anchor(atom)
                    for char in firsts:
                        spot = (atom.text, at, atom.ci)
                        by_char.setdefault(char, {}).setdefault(spot, set()).add(check)
        self._anchored_cased = tuple(sorted(a.text for a in anchored if not a.ci))
        self._anchored_folded = tuple(sorted(a.text.lower() for a in anchored if a.ci))
        # By the character a literal is found at: a regex matched there that
        # says, group by group, which checks' literals are there (compiled
        # when first needed, as are the gate regex and the Unicode one: a gate
        # is built at start-up, and most fields never need them).
        self._spots = by_char
        self._by_char: dict[str, tuple[re.Pattern[str], tuple[frozenset[Check], ...]]] = {}
        self._by_prefix = {k: frozenset(v) for k, v in by_prefix.items()}
        self._prefix_lengths = tuple(sorted({len(k) for k in by_prefix}))
        self._by_folded = {k: frozenset(v) for k, v in by_folded.items()}
        self._folded_lengths = tuple(sorted({len(k) for k in by_folded}))
        self._floating = frozenset(floating)
        self._ascii_regex: re.Pattern[str] | None = None  # compiled at the first field
        # The same, zero width: every place a floating literal starts, overlaps
        # included (slower: run only once the gate has found one).
        parts = [f"\\A(?:{'|'.join(_unicode(a) for a in sorted(anchored))})"] if anchored else []
        parts.extend(_unicode(a) for a in sorted(floating))
        self._unicode_pattern = "|".join(parts)
        self._unicode_regex: re.Pattern[str] | None = None

    def _ascii_gate(self) -> re.Pattern[str] | None:
        """The gate regex for ASCII text (None: no floating literal), compiled once."""
        if self._ascii_regex is None and self._floating:
            self._ascii_regex = _ascii_gate(self._floating)
        return self._ascii_regex

    def may_match(self, text: str) -> tuple[bool, str | None]:
        """Whether a rule could match, and ``text.lower()`` if ``text`` is ASCII
        and one could (what the checks are then given)."""
        if not text.isascii():
            if not self._unicode_pattern:
                return False, None
            if self._unicode_regex is None:
                self._unicode_regex = re.compile(self._unicode_pattern)
            return self._unicode_regex.search(text) is not None, None
        regex = self._ascii_gate()
        if regex is not None and regex.search(text) is not None:
            return True, text.lower()
        if self._anchored_cased and text.startswith(self._anchored_cased):
            return True, text.lower()
        if self._anchored_folded:
            low = text.lower()
            if low.startswith(self._anchored_folded):
                return True, low
        return False, None

    def candidates(self, text: str, low: str | None) -> Iterable[Check]:
        """The checks that could pass on ``text`` (``low`` as for
        :meth:`Check.could_match`): every one when ``text`` is not ASCII
        (``re`` folds some non-ASCII characters onto ASCII letters)."""
        if low is None:
            return self.checks
        found: set[Check] = set()
        regex = self._ascii_gate()
        if regex is not None:
            place = regex.search(text)
            while place is not None:  # every place a floating literal is found, overlaps included
                at = place.start()
                char = text[at]
                found_at = self._by_char.get(char)
                if found_at is None:
                    found_at = self._by_char[char] = _found_at(char, self._spots[char])
                spot, owners = found_at
                here = spot.match(text, at)
                if here is None:  # cannot be: the character is there
                    return self.checks
                spans = here.regs
                for index, checks in enumerate(owners, 1):
                    if spans[index][0] >= 0:
                        found.update(checks)
                place = regex.search(text, at + 1)
        for length in self._prefix_lengths:
            hit = self._by_prefix.get(text[:length])
            if hit is not None:
                found.update(hit)
        for length in self._folded_lengths:
            hit = self._by_folded.get(low[:length])
            if hit is not None:
                found.update(hit)
        return found


def _found_at(
    char: str, spots: dict[tuple[str, int, bool], set[Check]]
) -> tuple[re.Pattern[str], tuple[frozenset[Check], ...]]:
    """A regex matched where ``char`` is in a text, with one optional empty
    group per set of owner checks, taking part when one of that set's
    literals (found at ``char``) is there: all of them at once, overlaps
    included, in one match."""
    by_owners: dict[frozenset[Check], list[str]] = {}
    for (text, at, ci), checks in spots.items():
        test = f"(?={_ascii(text[at + 1 :], ci)})" if at + 1 < len(text) else ""
        if at:
            test += f"(?<={_ascii(text[: at + 1], ci)})"
        by_owners.setdefault(frozenset(checks), []).append(test)
    owner_sets = tuple(by_owners)
    groups = "".join(
        f"(?:(?:{'|'.join(by_owners[o])})(?P<g{i}>))?" for i, o in enumerate(owner_sets)
    )
    return re.compile(re.escape(char) + groups), owner_sets


@functools.lru_cache(maxsize=256)
def gate_for(checks: tuple[Check, ...]) -> Gate | None:
    """The gate over ``checks`` (None for none); cached, since every argv that
    names the same programs has the same rules."""
    return Gate(checks) if checks else None


def _ascii_gate(atoms: Iterable[Atom]) -> re.Pattern[str] | None:
    """A regex finding any of ``atoms`` in ASCII text, fast in ``re``.

    ``re`` skips ahead to where a pattern can start only when it knows the
    set of first characters, and tries every alternative at every other
    place. So each literal is written from its rarest character (an
    alternative per character, each starting with that character as a plain
    literal), the rest after it, and then the whole literal checked behind:
    ``password`` is found at a ``w`` or ``W``, as
    ``w[oO][rR][dD](?<=[pP][aA][sS][sS][wW][oO][rR][dD])``.
    """
    by_char: dict[str, set[str]] = {}
    for atom in atoms:
        at, firsts = _anchor(atom)
        before, after = atom.text[:at], atom.text[at + 1 :]
        rest = _ascii(after, atom.ci)
        if before:  # looked at last, once the rest matched: most places fail sooner
            rest += f"(?<={_ascii(atom.text, atom.ci)})"
        for first in firsts:
            by_char.setdefault(first, set()).add(rest)
    if not by_char:
        return None
    alternatives = []
    # Commonest first: at most places where a literal's character is found,
    # that alternative is tried after fewer others.
    for first in sorted(by_char, key=lambda c: (_RANK.get(c, len(_COMMON)), c)):
        rests = by_char[first]
        head = re.escape(first)
        if "" in rests:
            alternatives.append(head)
        else:
            alternatives.append(f"{head}(?:{'|'.join(sorted(rests))})")
    return re.compile("|".join(alternatives))
