"""Redacting whole capture events and profiles: which fields, under which names.

This is the one place that says which fields of a native event are free text
from the host and go through the redactor, and under which field names the
redactor counts them: every output (the evidence mapper, ``--events``, the
profile, the snapshot) calls :func:`redact_event` or :func:`redact_profile`
instead of choosing fields itself, so no output can forget one.

Redacted fields: ``comm``; an exec's ``filename`` and ``argv``; a file
event's ``path`` and ``path2``; a socket address that is not an IP address
(a UNIX path, an abstract name); a /proc record's ``comm``, ``exe`` and
``cmdline``. Text the capture cut short is redacted as cut (a token prefix
running to the cut is a secret whose rest was lost): argv entries listed in
``args_cut``, paths flagged cut, and a ``comm`` that fills the kernel's
15 bytes. IP addresses, ports and syscall names are not redacted.

Both functions are pure given the redactor (whose counters move), and never
raise for any text: the redactor fails closed field by field.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Final, Protocol, TypeAlias

import blake3
import msgspec

from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
)
from agent.redact.engine import RedactedArgv, RedactedText, RedactionTally, Redactor

__all__ = [
    "COMM_CUT_BYTES",
    "MEMO_CAPACITY",
    "MEMO_MAX_BYTES",
    "CurrentMemo",
    "MemoStats",
    "RedactionMemo",
    "TextRedactor",
    "comm_is_cut",
    "redact_endpoint",
    "redact_event",
    "rules_summary",
    "same_rules",
]

COMM_CUT_BYTES: Final = 15
"""The kernel keeps at most 15 bytes of a task's name (TASK_COMM_LEN - 1)."""

MEMO_CAPACITY: Final = 16384
"""Results a :class:`RedactionMemo` keeps; the oldest go first, counted."""

MEMO_MAX_BYTES: Final = 2**20
"""About how much text a :class:`RedactionMemo` holds (an estimate)."""

_ENTRY_BYTES: Final = 200  # a key tuple, a result struct, its tally, the dict slot
_COUNTER_BYTES: Final = 100  # one (name, count) pair a tally holds


class TextRedactor(Protocol):
    """What redacting an event needs: :class:`~agent.redact.Redactor` or a
    :class:`RedactionMemo` in front of one."""

    def redact_text_detail(self, value: str, field: str, *, cut: bool = False) -> RedactedText: ...

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv: ...


def same_rules(redactor: Redactor) -> Redactor:
    """A redactor with ``redactor``'s compiled rules and counters of its own:
    for an output that must not move the evidence mapper's counters (which
    go into ``capture.stop``), or that runs in another thread."""
    return Redactor(redactor.rules, max_field_chars=redactor.max_field_chars)


def comm_is_cut(comm: str) -> bool:
    """Does ``comm`` fill the kernel's 15 bytes (so the name may go on)?"""
    if len(comm) < COMM_CUT_BYTES and comm.isascii():
        return False
    return len(comm.encode("utf-8", "surrogateescape")) >= COMM_CUT_BYTES


def redact_endpoint(
    redactor: TextRedactor, endpoint: Endpoint | None, fired: set[str]
) -> Endpoint | None:
    """A socket address with its free text (not an IP address) redacted."""
    if endpoint is None or endpoint.family in ("ipv4", "ipv6"):
        return endpoint
    result = redactor.redact_text_detail(endpoint.address, "address")
    fired.update(result.fired)
    if result.text == endpoint.address:
        return endpoint
    return Endpoint(endpoint.family, result.text, endpoint.port)


def redact_event(redactor: TextRedactor, event: Event) -> tuple[Event, tuple[str, ...]]:
    """``event`` with every free-text field redacted, and the rules that
    changed something (sorted; ``"error"`` for a field that failed)."""
    fired: set[str] = set()

    def text(value: str, field: str, cut: bool = False) -> str:
        if not value:
            return value
        result = redactor.redact_text_detail(value, field, cut=cut)
        fired.update(result.fired)
        return result.text

    replace = msgspec.structs.replace
    redacted: Event
    if isinstance(event, FileEvent):
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            path=text(event.path, "path", event.path_cut),
            path2=text(event.path2, "path2", event.path2_cut),
        )
    elif isinstance(event, ExecEvent):
        argv = redactor.redact_argv(event.argv, "argv", cut=event.args_cut)
        fired.update(argv.fired)
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            filename=text(event.filename, "filename", event.filename_cut),
            argv=argv.argv,
        )
    elif isinstance(event, NetEvent):
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            endpoint=redact_endpoint(redactor, event.endpoint, fired),
        )
    elif isinstance(event, ForkEvent | ExitEvent):
        redacted = replace(event, comm=text(event.comm, "comm", comm_is_cut(event.comm)))
    elif isinstance(event, ProcessSeen):
        cmdline = redactor.redact_argv(event.cmdline, "cmdline")
        fired.update(cmdline.fired)
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            exe=text(event.exe, "exe"),
            cmdline=cmdline.argv,
        )
    else:  # syscall counts: names and numbers only
        redacted = event
    return redacted, tuple(sorted(fired))


class MemoStats(msgspec.Struct, frozen=True):
    """A memo's size, caps and counters (``/v1/stats``, the cache metrics)."""

    entries: int
    capacity: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


_Key: TypeAlias = tuple[str, object, object]  # (field, value or argv, cut)


class RedactionMemo:
    """A bounded memo in front of a redactor, for outputs that see the same
    text again and again (library paths, comm names, a snapshot taken twice).

    Results are what the redactor returned for the same ``(field, value,
    cut)``, and a result answered from the memo moves the redactor's
    counters exactly as running the rules again would: the memo keeps what
    the first call added (a :class:`~agent.redact.RedactionTally`) and
    replays it. Holds at most ``capacity`` results and about ``max_bytes``
    (an estimate: characters, plus a fixed cost per entry and per counter);
    the oldest go first, counted in :attr:`evictions`. A value that cannot
    be a key (not hashable) is redacted without the memo, counted as a miss.
    Not thread-safe, like the redactor.
    """

    def __init__(
        self,
        redactor: Redactor,
        capacity: int = MEMO_CAPACITY,
        max_bytes: int = MEMO_MAX_BYTES,
    ) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"memo capacity and bytes must be positive: {capacity}, {max_bytes}")
        self.redactor = redactor
        self.capacity = capacity
        self.max_bytes = max_bytes
        # One table, oldest first: key -> (result, what it counted, its estimated cost).
        self._entries: OrderedDict[
            _Key, tuple[RedactedText | RedactedArgv, RedactionTally, int]
        ] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> MemoStats:
        return MemoStats(
            entries=len(self._entries), capacity=self.capacity, bytes=self.bytes,
            max_bytes=self.max_bytes, hits=self.hits, misses=self.misses,
            evictions=self.evictions,
        )  # fmt: skip

    def redact_text_detail(self, value: str, field: str, *, cut: bool = False) -> RedactedText:
        key: _Key = (field, value, bool(cut))  # the redactor reads cut as a truth value
        try:
            found = self._entries.get(key)
        except TypeError:  # a value that cannot be a key: answered, never kept
            found = None
        if found is not None:
            self.hits += 1
            self.redactor.replay(found[1])
            result = found[0]
            assert isinstance(result, RedactedText)  # a text key holds a text result
            return result
        self.misses += 1
        text, tally = self.redactor.redact_text_tallied(value, field, cut=cut)
        self._keep(key, text, tally, 2 * (_chars(value) + len(text.text)))
        return text

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv:
        entries = tuple(argv)
        try:
            cut_at = frozenset(cut)  # as the redactor reads it: a set of indexes
        except TypeError:
            cut_at = None
        if cut_at is None:
            self.misses += 1
            return self.redactor.redact_argv(entries, field, cut=cut)
        key: _Key = (field, entries, cut_at)
        found = self._lookup(key)
        if found is not None:
            assert isinstance(found, RedactedArgv)
            return found
        self.misses += 1
        redacted, tally = self.redactor.redact_argv_tallied(entries, field, cut=cut_at)
        size = sum(map(_chars, entries)) + sum(map(len, redacted.argv))
        self._keep(key, redacted, tally, 2 * size + 16 * (len(entries) + len(cut_at)))
        return redacted

    def _lookup(self, key: _Key) -> RedactedText | RedactedArgv | None:
        """The kept result for ``key``, its counters replayed; None on a miss
        (a key that cannot be hashed is one, and is never kept)."""
        try:
            found = self._entries.get(key)
        except TypeError:
            return None
        if found is None:
            return None
        self.hits += 1
        self.redactor.replay(found[1])
        return found[0]

    def _keep(
        self, key: _Key, result: RedactedText | RedactedArgv, tally: RedactionTally, size: int
    ) -> None:
        cost = _ENTRY_BYTES + size + _COUNTER_BYTES * tally.size()
        if cost > self.max_bytes:
            return  # bigger than the whole memo: not kept, nothing evicted for it
        try:
            self._entries[key] = (result, tally, cost)
        except TypeError:
            return  # a value that cannot be a key: answered, not kept
        self.bytes += cost
        while len(self._entries) > self.capacity or self.bytes > self.max_bytes:
            _, (_, _, gone) = self._entries.popitem(last=False)
            self.bytes -= gone
            self.evictions += 1


def _chars(value: object) -> int:
    """A value's length in characters for the estimate (0 for a non-text one)."""
    return len(value) if isinstance(value, str) else 0


def rules_summary(redactor: Redactor) -> dict[str, object]:
    """Which rules a redactor runs, for ``capture.start``/``capture.config``
    evidence, without a single pattern: the built-in set as a count and one
    blake3 over its digests (it changes only with the tracehound version),
    every other rule as its :class:`~agent.redact.RuleDigest`."""
    digests = redactor.describe()
    builtin = [d for d in digests if d.builtin]
    joined = b"".join(msgspec.json.encode(d) for d in builtin)
    return {
        "builtin": {"count": len(builtin), "blake3": blake3.blake3(joined).hexdigest()},
        "configured": [msgspec.to_builtins(d) for d in digests if not d.builtin],
    }


class CurrentMemo:
    """A :class:`RedactionMemo` for the rules that apply now: ``rules()``
    returns the daemon's current redactor (a reload may replace it), and a
    new memo over a copy of it (:func:`same_rules`) is made when it does."""

    def __init__(self, rules: Callable[[], Redactor]) -> None:
        self._rules = rules
        self._source: Redactor | None = None
        self._memo: RedactionMemo | None = None

    @property
    def memo(self) -> RedactionMemo | None:
        """The memo in use, if any yet (its size and evictions, for stats)."""
        return self._memo

    def get(self) -> RedactionMemo:
        source = self._rules()
        if self._memo is None or source is not self._source:
            self._source, self._memo = source, RedactionMemo(same_rules(source))
        return self._memo
