"""The redactor: argv vectors, paths and addresses in, redacted copies out.

Sans-I/O and deterministic: the output depends only on the rules and the
input. The only state is :attr:`Redactor.stats`, a set of counters.

Per field (one argv entry, one path, one address):

1. if it is not a ``str`` or is longer than ``max_field_chars``, it fails
   (below): Python's ``re`` has no time limit, and a bound on length is what
   keeps a badly written rule from stalling capture;
2. if a forbidden rule matches anywhere in it, the whole field becomes
   ``[REDACTED:<rule>]``; if the caller says the capture cut the field short
   (``cut=``), the ``only_when_cut`` rules are tried next, on the field's last
   :data:`CUT_WINDOW_CHARS` characters;
3. otherwise each sensitive rule runs in turn, on the previous one's output,
   replacing its secret group in every match.

In argv, two kinds of rule also mask later entries whole: a ``next_arg`` rule
the entry right after its flag (``--password PW``), and a ``positional`` rule
its Nth positional entry after the entry it matched, and every entry after
that one (``rabbitmqctl add_user USER PW``; counting is described in
:class:`~agent.redact.rules.Rule`). A masked entry is a value: it is not
redacted further, and triggers nothing.

Which rules apply to a field is worked out once: at construction for paths
and addresses (every rule without ``programs``), and per set of scoped
programs an argv names (a :class:`~agent.redact.plan.Plan`, cached). A field
costs one scan for the literals those rules need
(:mod:`agent.redact.prefilter`); only the rules whose literals are all there
are tried, one regex search each, in the order above, so the output and the
counters are those of trying every rule. A rule the prefilter knows no
literal of is tried on every field it applies to. An argv in which no
positional rule has matched costs nothing more.

Fail closed: if anything raises while a field is redacted (a rule's matcher,
a non-text value), the field becomes ``[REDACTED:error]`` and
``stats.failures[<reason>]`` rises; the raw value is never returned. In argv,
the entry after a failed one becomes ``[REDACTED:error]`` too (reason
``after-failure``) when any rule uses ``next_arg``, because the failed entry
may have been ``--password`` and the next one its value; and every positional
rule that applies to the failed entry counts it as its trigger, because the
failed entry may have been ``add_user``. Nothing else raises:
only an ``argv`` that is not iterable, which is the caller's bug.

Text is any ``str``: lone surrogates (bytes that were not UTF-8, decoded with
``surrogateescape``) and control characters are matched like any other
character and never raise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import ClassVar, Final, NamedTuple, TypeVar

import msgspec

from agent.redact.builtin import BUILTIN_RULES
from agent.redact.config import parse_rules
from agent.redact.plan import Plan, Step
from agent.redact.prefilter import check_for
from agent.redact.rules import (
    ERROR_MARKER,
    MASK,
    CompiledRule,
    RedactionConfigError,
    Rule,
    RuleDigest,
    compile_rule,
    digest_rule,
    marker,
)

__all__ = [
    "CUT_WINDOW_CHARS",
    "DEFAULT_MAX_FIELD_CHARS",
    "RedactedArgv",
    "RedactedText",
    "RedactionStats",
    "RedactionTally",
    "Redactor",
]

_T = TypeVar("_T")

DEFAULT_MAX_FIELD_CHARS: Final = 16384
"""Longest field redacted; a longer one becomes ``[REDACTED:error]`` (reason
``too-long``). Captured argv entries and paths are at most 4096 bytes (the
BPF side cuts them), so this only trips on hostile or corrupt input; it also
bounds the time a field can take (about 0.1 s for the worst built-in case)."""

CUT_WINDOW_CHARS: Final = 1024
"""How much of a cut field's end the ``only_when_cut`` rules see. Their
patterns run to the field's end (``...\\Z``), which Python's ``re`` finds by
trying every start: on a whole long field that is quadratic. A token that
starts further back than this already has the length its full-length rule
needs. Captured fields are cut at 15 (comm), 127 (argv) or 255 (paths) bytes,
well inside the window."""

_ERROR: Final = "error"
_NEVER: Final = 1 << 62  # start index of a program-scoped rule whose program is absent
_PLANS: Final = 64  # argv plans kept (one per set of scoped programs seen), least recent out


class RedactedArgv(msgspec.Struct, frozen=True):
    """A redacted argv, and which rules changed it.

    ``fired`` holds each rule name once, sorted, plus ``"error"`` if a field
    failed; empty means ``argv`` equals the input.
    """

    argv: tuple[str, ...]
    fired: tuple[str, ...] = ()


class RedactedText(msgspec.Struct, frozen=True):
    """A redacted path or address, and which rules changed it (as in RedactedArgv)."""

    text: str
    fired: tuple[str, ...] = ()


class RedactionStats(msgspec.Struct):
    """Counters since the redactor was made. A copy: changing it changes nothing.

    Attributes:
        fields: fields looked at (argv entries, paths, addresses).
        fields_redacted: by rule name, fields that rule changed.
        failures: by reason, fields that became ``[REDACTED:error]``:
            ``rule:<name>`` (that rule raised), ``not-text``, ``too-long``,
            ``after-failure`` (argv entry masked because the one before failed).
        failures_by_field: by the ``field`` name given (``argv``, ``path``...),
            the same failures.
    """

    fields: int = 0
    fields_redacted: dict[str, int] = msgspec.field(default_factory=dict)
    failures: dict[str, int] = msgspec.field(default_factory=dict)
    failures_by_field: dict[str, int] = msgspec.field(default_factory=dict)


class RedactionTally(msgspec.Struct, frozen=True):
    """What one call added to a redactor's counters, so that a memo answering
    the same call again can add exactly the same (:meth:`Redactor.replay`).

    The fields are those of :class:`RedactionStats`, as sorted pairs.
    """

    fields: int = 0
    fields_redacted: tuple[tuple[str, int], ...] = ()
    failures: tuple[tuple[str, int], ...] = ()
    failures_by_field: tuple[tuple[str, int], ...] = ()

    def size(self) -> int:
        """How many counters it moves besides ``fields``."""
        return len(self.fields_redacted) + len(self.failures) + len(self.failures_by_field)


_FIELDS_ONLY: Final = tuple(RedactionTally(n) for n in range(64))  # most calls: nothing redacted


def _tally(stats: RedactionStats) -> RedactionTally:
    moved = stats.fields_redacted or stats.failures or stats.failures_by_field
    if not moved and stats.fields < len(_FIELDS_ONLY):
        return _FIELDS_ONLY[stats.fields]
    return RedactionTally(
        stats.fields,
        tuple(sorted(stats.fields_redacted.items())),
        tuple(sorted(stats.failures.items())),
        tuple(sorted(stats.failures_by_field.items())),
    )


def _add(counts: dict[str, int], pairs: tuple[tuple[str, int], ...]) -> None:
    for key, count in pairs:
        counts[key] = counts.get(key, 0) + count


class _FieldFailed(Exception):
    """Redacting one field went wrong; ``reason`` is the failure counter's key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Outcome(NamedTuple):
    """What redacting one field produced."""

    text: str
    fired: list[str]
    next_is_secret: CompiledRule | None  # the rule that makes the next argv entry a value
    triggered: list[CompiledRule]  # positional rules whose pattern matched this argv entry


class _Count:
    """How far one triggered positional rule is from its secret, within one argv.

    See :class:`~agent.redact.rules.Rule` (``positional``) for what counts.
    """

    __slots__ = ("remaining", "rule", "skipping")

    def __init__(self, rule: CompiledRule) -> None:
        self.rule = rule
        self.remaining = max(rule.rule.positional, 1)
        self.skipping = True  # options are skipped until the first positional entry

    def step(self, entry: object, shown: str) -> bool:
        """Count the next entry, given as ``entry`` and redacted as ``shown``; true
        if it is the secret (the Nth positional entry) or after it.

        An option is an entry that starts with ``-`` both as given and as
        shown: one a rule turned into a marker counts. So redacting the output
        again skips at least as much, and masks nothing more.
        """
        if self.remaining == 0:
            return True
        if self.skipping and _is_option(entry) and _is_option(shown):
            if entry == "--":
                self.skipping = False
            return False
        self.skipping = False
        self.remaining -= 1
        return self.remaining == 0


def _is_option(value: object) -> bool:
    return isinstance(value, str) and len(value) > 1 and value[0] == "-"


def _masking(counts: list[_Count]) -> CompiledRule | None:
    """The positional rule that masks every entry from here on, if any."""
    for count in counts:
        if count.remaining == 0:
            return count.rule
    return None


def _step(counts: list[_Count], entry: object, shown: str) -> CompiledRule | None:
    """Step every count over one entry; the first rule whose secret it is, if any."""
    secret_of: CompiledRule | None = None
    for count in counts:
        if count.step(entry, shown) and secret_of is None:
            secret_of = count.rule
    return secret_of


_NO_CUT: Final[frozenset[int]] = frozenset()


def _basename(entry: str) -> str:
    return entry.rpartition("/")[2]


class Redactor:
    """Applies a fixed rule set to argv vectors, paths and addresses.

    Build one with :meth:`builtin`, :meth:`from_config`, or directly from
    rules (``Redactor(BUILTIN_RULES + (my_rule,))``). Rules are checked and
    compiled once; a bad one raises :class:`RedactionConfigError` here, never
    later while redacting. ``CompiledRule`` objects are taken as they are,
    unchecked (tests use this to plant a matcher that raises).

    Each field is first scanned once for the literals the applicable rules
    need (:mod:`agent.redact.prefilter`); only rules that could match it
    are tried, in the usual order, so the output and the counters are those
    of trying every rule. A rule the prefilter knows nothing about is tried
    on every field.

    Not thread-safe: the counters are updated without a lock.
    """

    _prefilter: ClassVar[bool] = True  # False: every rule tried on every field (tests, bench)

    def __init__(
        self,
        rules: Iterable[Rule | CompiledRule],
        *,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ) -> None:
        if max_field_chars < 1:
            raise RedactionConfigError(f"max_field_chars must be at least 1, got {max_field_chars}")
        compiled: list[CompiledRule] = []
        seen: set[str] = set()
        for index, rule in enumerate(rules):
            item = rule if isinstance(rule, CompiledRule) else compile_rule(rule, f"#{index}")
            if item.rule.name in seen:
                raise RedactionConfigError(
                    f"redaction rule #{index} ({item.rule.name!r}): "
                    "another rule has this name; names must be unique"
                )
            seen.add(item.rule.name)
            compiled.append(item)
        self.rules: Final[tuple[CompiledRule, ...]] = tuple(compiled)
        self.max_field_chars: Final = max_field_chars
        # Forbidden rules are tried first, all of them, then the cut-only ones
        # (for a cut field), then sensitive ones in order. A sensitive rule
        # built unchecked with only_when_cut applies always (more, not less).
        forbidden = [r for r in compiled if r.rule.privacy == "forbidden"]
        self._ordered: Final = tuple(
            [r for r in forbidden if not r.rule.only_when_cut]
            + [r for r in forbidden if r.rule.only_when_cut]
            + [r for r in compiled if r.rule.privacy != "forbidden"]
        )
        self._scoped: Final = {
            name: [i for i, r in enumerate(self._ordered) if name in r.rule.programs]
            for r in self._ordered
            for name in r.rule.programs
        }
        self._initial_starts: Final = tuple(_NEVER if r.rule.programs else 0 for r in self._ordered)
        self._scoped_positions: Final = tuple(
            i for i, r in enumerate(self._ordered) if r.rule.programs
        )
        self._uses_next_arg: Final = any(r.rule.next_arg for r in compiled)
        self._steps: Final[tuple[Step, ...]] = tuple(
            (r, check_for(r.matcher) if self._prefilter else None) for r in self._ordered
        )
        self._plans: OrderedDict[tuple[int, ...], Plan] = OrderedDict()
        # Paths, addresses, and argv entries before any scoped program.
        self._base_plan: Final = self._plan([_NEVER] * len(self._ordered), 0)
        self._stats = RedactionStats()
        self._spare = RedactionStats()  # a tallied call's counters, before they are added
        self._digests: tuple[RuleDigest, ...] | None = None

    @classmethod
    def builtin(cls, *, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> Redactor:
        """A redactor with :data:`BUILTIN_RULES` only."""
        return cls(BUILTIN_RULES, max_field_chars=max_field_chars)

    @classmethod
    def from_config(
        cls,
        entries: object,
        *,
        builtin: bool = True,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    ) -> Redactor:
        """A redactor from configured rules (a list of dicts), after the built-in ones.

        Each dict has the fields of :class:`Rule` (``name``, ``privacy``,
        ``pattern``, optionally ``group``, ``replacement``, ``next_arg``,
        ``programs``, ``positional``, ``only_when_cut``); unknown keys are
        refused. ``builtin=False`` leaves the
        built-in rules out, which is rarely what you want.

        Raises:
            RedactionConfigError: naming the entry (``$[2]``) and its rule, for
                a value of the wrong type, an unknown key, a bad pattern or
                group, or a name used twice (a built-in name included).
        """
        configured = parse_rules(entries)
        base = BUILTIN_RULES if builtin else ()
        taken = {rule.name: "a built-in rule" for rule in base}
        compiled: list[CompiledRule] = [compile_rule(rule, "<builtin>") for rule in base]
        for index, rule in enumerate(configured):
            where = f"$[{index}]"
            if rule.name in taken:
                raise RedactionConfigError(
                    f"redaction rule {where} ({rule.name!r}): the name is already used by "
                    f"{taken[rule.name]}; names must be unique"
                )
            taken[rule.name] = f"rule {where}"
            compiled.append(compile_rule(rule, where))
        return cls(compiled, max_field_chars=max_field_chars)

    @property
    def stats(self) -> RedactionStats:
        """A snapshot of the counters (see :class:`RedactionStats`)."""
        return RedactionStats(
            fields=self._stats.fields,
            fields_redacted=dict(self._stats.fields_redacted),
            failures=dict(self._stats.failures),
            failures_by_field=dict(self._stats.failures_by_field),
        )

    def live_counters(self) -> RedactionStats:
        """The counters themselves, not a copy: for a memo in front of this
        redactor that adds a replayed call's ``fields`` without a call
        (:class:`~agent.redact.events.RedactionMemo`). Always the same
        object; only ever add to it what :meth:`replay` would."""
        return self._stats

    def describe(self) -> tuple[RuleDigest, ...]:
        """Every rule, in the order given, as a :class:`RuleDigest`: no pattern text.

        For ``capture.config`` evidence: which rules ran, in a form that
        cannot print a secret someone put in a pattern. ``builtin`` is true
        for a rule equal to one of :data:`BUILTIN_RULES`. A rule given as a
        :class:`CompiledRule` is described by its rule; its matcher is not
        looked at.
        """
        if self._digests is None:
            builtin = frozenset(BUILTIN_RULES)
            self._digests = tuple(
                digest_rule(r.rule, builtin=r.rule in builtin) for r in self.rules
            )
        return self._digests

    # --- public entry points -------------------------------------------------

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv:
        """Redact an exec argv; entry *i* of the result stands for entry *i* of ``argv``.

        ``field`` names the argv in failure counters. Program-scoped rules,
        ``next_arg`` and ``positional`` apply here only. ``cut`` holds the indexes of entries the
        capture cut short: those get the ``only_when_cut`` rules too (an index
        that is no entry's is ignored).
        """
        entries = tuple(argv)
        cut_at = frozenset(cut) if cut else _NO_CUT
        starts, switches = self._scope_starts(entries)
        plan = self._base_plan
        out: list[str] = []
        fired: set[str] = set()
        value_of: CompiledRule | None = None  # the flag rule whose value this entry is
        after_failure = False
        counts: list[_Count] = []  # positional rules triggered so far, in this argv
        for index, entry in enumerate(entries):
            self._stats.fields += 1
            if index in switches:
                plan = self._plan(starts, index)
            if after_failure:
                after_failure = False
                out.append(self._fail("after-failure", field))
                _step(counts, entry, out[-1])
                continue
            masked_by = value_of or _masking(counts)
            if masked_by is not None:
                out.append(self._mask(masked_by, fired))
                value_of = None
                _step(counts, entry, out[-1])
                continue
            try:
                outcome = self._redact_field(entry, plan, index in cut_at, argv=True)
            except _FieldFailed as failed:
                out.append(self._fail(failed.reason, field))
                fired.add(_ERROR)
                after_failure = self._uses_next_arg
                _step(counts, entry, out[-1])
                _trigger(counts, [r for r, _ in plan.positional])  # it may have been the trigger
                continue
            secret_of = _step(counts, entry, outcome.text) if counts else None
            if secret_of is not None:  # the Nth positional entry: its own redaction is moot
                out.append(self._mask(secret_of, fired))
                continue
            out.append(outcome.text)
            fired.update(outcome.fired)
            for name in outcome.fired:
                self._count_redacted(name)
            value_of = outcome.next_is_secret
            if outcome.triggered:
                _trigger(counts, outcome.triggered)
        return RedactedArgv(tuple(out), tuple(sorted(fired)))

    def redact_text(self, value: str, field: str, *, cut: bool = False) -> str:
        """Redact one path or address; ``field`` names it in failure counters.

        ``cut``: the capture cut the value short (a ``comm`` of 15 bytes, a
        path of 255), so the ``only_when_cut`` rules apply too.
        """
        return self.redact_text_detail(value, field, cut=cut).text

    def redact_text_detail(self, value: str, field: str, *, cut: bool = False) -> RedactedText:
        """As :meth:`redact_text`, and say which rules fired."""
        self._stats.fields += 1
        plan = self._base_plan
        if (
            not cut
            and type(value) is str
            and len(value) <= self.max_field_chars
            and plan.clean(value)
        ):  # most paths: one scan finds no literal any rule needs
            return RedactedText(value)
        try:
            outcome = self._redact_field(value, plan, cut, argv=False)
        except _FieldFailed as failed:
            return RedactedText(self._fail(failed.reason, field), (_ERROR,))
        if not outcome.fired:
            return RedactedText(outcome.text)
        for name in outcome.fired:
            self._count_redacted(name)
        return RedactedText(outcome.text, tuple(sorted(set(outcome.fired))))

    # --- for memos -----------------------------------------------------------

    def redact_text_tallied(
        self, value: str, field: str, *, cut: bool = False
    ) -> tuple[RedactedText, RedactionTally]:
        """:meth:`redact_text_detail`, and what it added to the counters."""
        # _tallied without the closure: a memo's misses (distinct paths) are
        # all this call.
        outer, self._stats = self._stats, self._spare
        try:
            result = self.redact_text_detail(value, field, cut=cut)
        except BaseException:
            self._discard_spare()
            raise
        finally:
            self._stats = outer
        return result, self._settle()

    def redact_argv_tallied(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> tuple[RedactedArgv, RedactionTally]:
        """:meth:`redact_argv`, and what it added to the counters."""
        return self._tallied(lambda: self.redact_argv(argv, field, cut=cut))

    def _tallied(self, call: Callable[[], _T]) -> tuple[_T, RedactionTally]:
        """Run ``call`` against the spare counters; its result and what it
        counted (added to ours, see :meth:`_settle`)."""
        outer, self._stats = self._stats, self._spare
        try:
            result = call()
        except BaseException:
            self._discard_spare()
            raise
        finally:
            self._stats = outer
        return result, self._settle()

    def replay(self, tally: RedactionTally) -> None:
        """Add ``tally`` to the counters, as if its call had run again.

        For a memo answering a call it has seen: the output is a function of
        the call's arguments, and so are the counters it moves, so
        replaying the first call's tally leaves the counters exactly where
        running the rules again would.
        """
        stats = self._stats
        stats.fields += tally.fields
        if tally.fields_redacted:
            _add(stats.fields_redacted, tally.fields_redacted)
        if tally.failures:
            _add(stats.failures, tally.failures)
        if tally.failures_by_field:
            _add(stats.failures_by_field, tally.failures_by_field)

    def _settle(self) -> RedactionTally:
        """What the spare counters hold, added to ours; the spare emptied."""
        spare = self._spare
        fields = spare.fields
        if not (spare.fields_redacted or spare.failures or spare.failures_by_field) and (
            fields < len(_FIELDS_ONLY)
        ):  # the usual call: fields looked at, nothing redacted or failed
            self._stats.fields += fields
            spare.fields = 0
            return _FIELDS_ONLY[fields]
        tally = _tally(spare)
        self.replay(tally)
        if tally.size():
            self._discard_spare()
        spare.fields = 0
        return tally

    def _discard_spare(self) -> None:
        spare = self._spare
        spare.fields = 0
        spare.fields_redacted.clear()
        spare.failures.clear()
        spare.failures_by_field.clear()

    # --- internals -----------------------------------------------------------

    def _scope_starts(self, entries: tuple[object, ...]) -> tuple[list[int], set[int]]:
        """For each rule in ``_ordered``, the first argv index it applies to; and
        the indexes where a program-scoped rule starts to apply (where the plan changes)."""
        starts = list(self._initial_starts)
        switches: set[int] = set()
        if not self._scoped:
            return starts, switches
        for index, entry in enumerate(entries):
            if not isinstance(entry, str):
                continue
            for rule_index in self._scoped.get(_basename(entry), ()):
                if starts[rule_index] == _NEVER:
                    starts[rule_index] = index + 1
                    switches.add(index + 1)
        return starts, switches

    def _plan(self, starts: Sequence[int], index: int) -> Plan:
        """The rules that apply to argv entry ``index``, given each rule's start.

        Cached by which program-scoped rules apply (the rest always do): the
        plan's gates are compiled regexes, built once per set of programs.
        """
        key = tuple(p for p in self._scoped_positions if index >= starts[p])
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        forbidden: list[Step] = []
        cut_forbidden: list[Step] = []
        sensitive: list[Step] = []
        positional: list[Step] = []
        for position, step in enumerate(self._steps):
            rule = step[0].rule
            if rule.programs and index < starts[position]:
                continue
            if rule.privacy == "forbidden":
                (cut_forbidden if rule.only_when_cut else forbidden).append(step)
            elif rule.positional:
                positional.append(step)
            else:
                sensitive.append(step)
        plan = Plan(forbidden, cut_forbidden, sensitive, positional)
        self._plans[key] = plan
        if len(self._plans) > _PLANS:
            self._plans.popitem(last=False)
        return plan

    def _redact_field(self, value: object, plan: Plan, cut: bool, *, argv: bool) -> _Outcome:
        """Redact one field with the rules of ``plan``; ``argv``: it is an argv entry.

        Only the steps :meth:`Plan.live` names are tried (the others cannot
        match), in order; a rule that changes the text makes every later
        sensitive rule a candidate again, checked against the new text.

        Raises only :class:`_FieldFailed`; whatever else goes wrong is turned
        into one, so the caller cannot pass a raw value on by mistake.
        """
        if not isinstance(value, str):
            raise _FieldFailed("not-text")
        if len(value) > self.max_field_chars:
            raise _FieldFailed("too-long")
        text = value
        fired: list[str] = []
        next_is_secret: CompiledRule | None = None
        triggered: list[CompiledRule] = []
        compiled: CompiledRule | None = None
        try:
            cut_here = cut and bool(plan.cut_forbidden)
            whole_tail = len(text) <= CUT_WINDOW_CHARS
            # The tail is the field: one scan for both, else one for each.
            live = plan.live(text, plan.both_gates if cut_here and whole_tail else plan.gates)
            if argv:
                for index in live.positional:
                    compiled = plan.positional[index][0]
                    if compiled.matcher.search(text) is not None:
                        triggered.append(compiled)
            for index in live.forbidden:
                compiled = plan.forbidden[index][0]
                if compiled.matcher.search(text) is not None:
                    name = compiled.rule.name
                    return _Outcome(marker(name), [name], None, triggered)
            if cut_here:
                tail, cut_live = text, live.cut_forbidden
                if not whole_tail:
                    tail = text[-CUT_WINDOW_CHARS:]
                    cut_live = plan.live(tail, plan.cut_gates).cut_forbidden
                for index in cut_live:
                    compiled = plan.cut_forbidden[index][0]
                    if compiled.matcher.search(tail) is not None:
                        name = compiled.rule.name
                        return _Outcome(marker(name), [name], None, triggered)
            visit = live.sensitive
            at = 0
            while at < len(visit):
                index = visit[at]
                at += 1
                compiled = plan.sensitive[index][0]
                if compiled.matcher.search(text) is None:
                    continue  # most fields: one search, not a finditer and its loop
                text, changed, wants_next = _apply_sensitive(compiled, text)
                if changed:
                    fired.append(compiled.rule.name)
                    # New text: a later rule may match it though it could not the old one.
                    visit, at = plan.sensitive_after(text, index), 0
                if wants_next and argv and next_is_secret is None:
                    next_is_secret = compiled
        except Exception:
            name = compiled.rule.name if compiled is not None else _ERROR
            raise _FieldFailed(f"rule:{name}") from None
        return _Outcome(text, fired, next_is_secret, triggered)

    def _mask(self, compiled: CompiledRule, fired: set[str]) -> str:
        """What an argv entry that ``compiled`` says is a secret becomes, counted."""
        fired.add(compiled.rule.name)
        self._count_redacted(compiled.rule.name)
        return compiled.rule.replacement or MASK

    def _count_redacted(self, name: str) -> None:
        counts = self._stats.fields_redacted
        counts[name] = counts.get(name, 0) + 1

    def _fail(self, reason: str, field: str) -> str:
        failures = self._stats.failures
        failures[reason] = failures.get(reason, 0) + 1
        by_field = self._stats.failures_by_field
        by_field[field] = by_field.get(field, 0) + 1
        return ERROR_MARKER


def _trigger(counts: list[_Count], rules: Iterable[CompiledRule]) -> None:
    """Start counting for each of ``rules`` not already counting in this argv.

    A rule's first trigger is kept: its count can only be nearer the secret
    than a later trigger's, so a later one would mask nothing more.
    """
    for compiled in rules:
        if all(count.rule is not compiled for count in counts):
            counts.append(_Count(compiled))


def _apply_sensitive(compiled: CompiledRule, text: str) -> tuple[str, bool, bool]:
    """Replace the secret group of every match of a sensitive rule.

    Returns the new text, whether it differs from ``text`` (masking ``***``
    again is no change), and whether a match asked for the next argv entry to
    be treated as the secret (``next_arg``, and the group took no part).
    """
    rule = compiled.rule
    pieces: list[str] = []
    cursor = 0
    wants_next = False
    for match in compiled.matcher.finditer(text):
        start, end = match.span(rule.group)
        if start < 0:
            wants_next = wants_next or rule.next_arg
            continue
        if end <= cursor or start == end:
            continue  # empty, or inside what an earlier match already replaced
        if start < cursor:
            cursor = end  # overlaps the last replacement (a group in a lookaround): extend it
            continue
        pieces.append(text[cursor:start])
        pieces.append(rule.replacement)
        cursor = end
    if not pieces:
        return text, False, wants_next
    pieces.append(text[cursor:])
    redacted = "".join(pieces)
    return redacted, redacted != text, wants_next


class _PlainRedactor(Redactor):
    """The same engine with no prefilter: every rule tried on every field it
    applies to, as before the prefilter existed. What the prefiltered path
    must agree with, output and counters (the property tests, the bench)."""

    _prefilter = False
