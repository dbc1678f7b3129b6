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
from typing import Final, NamedTuple, Protocol, TypeAlias

import blake3
import msgspec

from agent.capture.events import (
    CallEvent,
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    UringEvent,
)
from agent.capture.kinds import PATH_CUT, PATH_NAME_CUT
from agent.redact.engine import RedactedArgv, RedactedText, RedactionTally, Redactor

__all__ = [
    "COMM_CUT_BYTES",
    "MEMO_CAPACITY",
    "MEMO_MAX_BYTES",
    "CurrentMemo",
    "MemoStats",
    "RedactedFile",
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
    redacted, names = _endpoint(_fields_of(redactor), endpoint)
    fired.update(names)
    return redacted


class FieldRedactor(Protocol):
    """What the per-kind functions below call: one text field or one argv,
    positional arguments, the result with the rules that fired.
    :class:`RedactionMemo` is one; :func:`redact_event` adapts any
    :class:`TextRedactor` to it."""

    def text(self, value: str, field: str, cut: bool) -> RedactedText: ...

    def comm(self, value: str) -> RedactedText:
        """``text(value, "comm", comm_is_cut(value))``."""
        ...

    def argv(self, argv: Sequence[str], field: str, cut: Collection[int]) -> RedactedArgv: ...


class _Direct:
    """A :class:`TextRedactor` as a :class:`FieldRedactor`."""

    __slots__ = ("_redactor",)

    def __init__(self, redactor: TextRedactor) -> None:
        self._redactor = redactor

    def text(self, value: str, field: str, cut: bool) -> RedactedText:
        return self._redactor.redact_text_detail(value, field, cut=cut)

    def comm(self, value: str) -> RedactedText:
        return self._redactor.redact_text_detail(value, "comm", cut=comm_is_cut(value))

    def argv(self, argv: Sequence[str], field: str, cut: Collection[int]) -> RedactedArgv:
        return self._redactor.redact_argv(argv, field, cut=cut)


def _fields_of(redactor: TextRedactor) -> FieldRedactor:
    return redactor if isinstance(redactor, RedactionMemo) else _Direct(redactor)


def _joined(names: tuple[str, ...]) -> tuple[str, ...]:
    """Rule names fired on several fields (concatenated), each once, sorted."""
    return tuple(sorted(set(names))) if names else ()


_NOTHING: Final = RedactedText("")
#: An absolute path's flags that say it may be cut (a rule must not see a
#: cut secret as whole).
_ABS_CUT: Final = PATH_CUT | PATH_NAME_CUT


# One function per kind of event says which of its fields are free text, under
# which names they are counted, and which count as cut: redact_event builds
# the redacted event from them, and the evidence mapper (which needs only the
# redacted values) calls them directly. Empty text is not a field: left as is
# (the empty string), not counted.


def redact_comm(redactor: FieldRedactor, comm: str) -> RedactedText:
    """A task's ``comm``, cut when it fills the kernel's 15 bytes."""
    return redactor.comm(comm) if comm else _NOTHING


class RedactedFile(NamedTuple):
    """A file event's free text, redacted: ``abs_path``/``abs_path2`` are
    redacted as ``path``/``path2`` (the same rules see the same file)."""

    comm: str
    path: str
    path2: str
    abs_path: str
    abs_path2: str
    fired: tuple[str, ...]


def redact_file(redactor: FieldRedactor, event: FileEvent) -> RedactedFile:
    """A file event's ``comm``, paths as passed and absolute paths, redacted,
    and the rules that fired. An absolute path equal to the name as passed
    (an absolute open) is redacted once."""
    comm = redact_comm(redactor, event.comm)
    path = redactor.text(event.path, "path", event.path_cut) if event.path else _NOTHING
    path2 = redactor.text(event.path2, "path2", event.path2_cut) if event.path2 else _NOTHING
    fired = comm.fired + path.fired + path2.fired
    abs_path, abs_path2 = path.text, path2.text
    if event.abs_path != event.path:
        result = (
            redactor.text(event.abs_path, "path", bool(event.abs_flags & _ABS_CUT))
            if event.abs_path
            else _NOTHING
        )
        abs_path, fired = result.text, fired + result.fired
    if event.abs_path2 != event.path2:
        result = (
            redactor.text(event.abs_path2, "path2", bool(event.abs2_flags & _ABS_CUT))
            if event.abs_path2
            else _NOTHING
        )
        abs_path2, fired = result.text, fired + result.fired
    return RedactedFile(
        comm.text, path.text, path2.text, abs_path, abs_path2, _joined(fired) if fired else ()
    )


def redact_call(
    redactor: FieldRedactor, event: CallEvent
) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """A call's ``comm`` and strings (mount source and target, module params
    and name, memfd name...), redacted, and the rules that fired."""
    comm = redact_comm(redactor, event.comm)
    fired = comm.fired
    text: dict[str, str] = {}
    for name, value in event.text.items():
        result = redactor.text(value, name, name in event.text_cut) if value else _NOTHING
        text[name] = result.text
        fired += result.fired
    return comm.text, text, _joined(fired) if fired else ()


def redact_exec(
    redactor: FieldRedactor, event: ExecEvent
) -> tuple[str, str, tuple[str, ...], str, str, tuple[str, ...]]:
    """An exec's ``comm``, ``filename``, ``argv``, ``cwd`` and ``exe``,
    redacted, and the rules that fired."""
    argv = redactor.argv(event.argv, "argv", event.args_cut)
    comm = redact_comm(redactor, event.comm)
    filename = (
        redactor.text(event.filename, "filename", event.filename_cut)
        if event.filename
        else _NOTHING
    )
    cwd = redactor.text(event.cwd, "cwd", bool(event.cwd_flags & 1)) if event.cwd else _NOTHING
    exe = redactor.text(event.exe, "exe", bool(event.exe_flags & 1)) if event.exe else _NOTHING
    fired = argv.fired + comm.fired + filename.fired + cwd.fired + exe.fired
    return comm.text, filename.text, argv.argv, cwd.text, exe.text, _joined(fired)


def redact_net(
    redactor: FieldRedactor, event: NetEvent
) -> tuple[str, Endpoint | None, tuple[str, ...]]:
    """A socket event's ``comm`` and address (not an IP one), redacted, and the rules that fired."""
    comm = redact_comm(redactor, event.comm)
    endpoint, fired = _endpoint(redactor, event.endpoint)
    return comm.text, endpoint, _joined(comm.fired + fired)


def _endpoint(
    redactor: FieldRedactor, endpoint: Endpoint | None
) -> tuple[Endpoint | None, tuple[str, ...]]:
    if endpoint is None or endpoint.family in ("ipv4", "ipv6"):
        return endpoint, ()
    result = redactor.text(endpoint.address, "address", False)
    if result.text == endpoint.address:
        return endpoint, result.fired
    return Endpoint(endpoint.family, result.text, endpoint.port), result.fired


def redact_uring(
    redactor: FieldRedactor, event: UringEvent
) -> tuple[str, str, str, str, Endpoint | None, tuple[str, ...]]:
    """An io_uring record's ``comm``, ``path``, ``path2``, ``abs_path`` and
    address (not an IP one), redacted, and the rules that fired. The
    absolute path is never cut silently: a cut walk is flagged in
    ``abs_flags``, and the redactor is told (TH_PATH_CUT, bit 1)."""
    comm = redact_comm(redactor, event.comm)
    path = redactor.text(event.path, "path", event.path_cut) if event.path else _NOTHING
    path2 = redactor.text(event.path2, "path2", event.path2_cut) if event.path2 else _NOTHING
    abs_path = (
        redactor.text(event.abs_path, "abs_path", bool(event.abs_flags & 1))
        if event.abs_path
        else _NOTHING
    )
    endpoint, fired = _endpoint(redactor, event.endpoint)
    return (
        comm.text, path.text, path2.text, abs_path.text, endpoint,
        _joined(comm.fired + path.fired + path2.fired + abs_path.fired + fired),
    )  # fmt: skip


def redact_seen(
    redactor: FieldRedactor, event: ProcessSeen
) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """A /proc record's ``comm``, ``exe`` and ``cmdline``, redacted, and the rules that fired."""
    cmdline = redactor.argv(event.cmdline, "cmdline", ())
    comm = redact_comm(redactor, event.comm)
    exe = redactor.text(event.exe, "exe", False) if event.exe else _NOTHING
    return comm.text, exe.text, cmdline.argv, _joined(cmdline.fired + comm.fired + exe.fired)


def redact_event(redactor: TextRedactor, event: Event) -> tuple[Event, tuple[str, ...]]:
    """``event`` with every free-text field redacted, and the rules that
    changed something (sorted; ``"error"`` for a field that failed)."""
    fields = _fields_of(redactor)
    replace = msgspec.structs.replace
    fired: tuple[str, ...]
    if isinstance(event, FileEvent):
        r = redact_file(fields, event)
        redacted = replace(
            event, comm=r.comm, path=r.path, path2=r.path2, abs_path=r.abs_path,
            abs_path2=r.abs_path2,
        )  # fmt: skip
        return redacted, r.fired
    if isinstance(event, ExecEvent):
        comm, filename, argv, cwd, exe, fired = redact_exec(fields, event)
        return replace(event, comm=comm, filename=filename, argv=argv, cwd=cwd, exe=exe), fired
    if isinstance(event, NetEvent):
        comm, endpoint, fired = redact_net(fields, event)
        return replace(event, comm=comm, endpoint=endpoint), fired
    if isinstance(event, UringEvent):
        comm, path, path2, abs_path, endpoint, fired = redact_uring(fields, event)
        return (
            replace(event, comm=comm, path=path, path2=path2, abs_path=abs_path, endpoint=endpoint),
            fired,
        )
    if isinstance(event, CallEvent):
        comm, text, fired = redact_call(fields, event)
        return replace(event, comm=comm, text=text), fired
    if isinstance(event, ForkEvent | ExitEvent):
        result = redact_comm(fields, event.comm)
        return replace(event, comm=result.text), result.fired
    if isinstance(event, ProcessSeen):
        comm, exe, cmdline, fired = redact_seen(fields, event)
        return replace(event, comm=comm, exe=exe, cmdline=cmdline), fired
    return event, ()  # syscall counts: names and numbers only


class MemoStats(msgspec.Struct, frozen=True):
    """A memo's size, caps and counters (``/v1/stats``, the cache metrics)."""

    entries: int
    capacity: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


_Key: TypeAlias = tuple[object, ...]  # (field, value or argv, cut), or (comm,)
#: A memo entry: the result, what it counted, its estimated cost, and the
#: fields it counted if that is all it counted, else -1.
_Entry: TypeAlias = tuple[RedactedText | RedactedArgv, RedactionTally, int, int]
_NO_CUT: Final[frozenset[int]] = frozenset()


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
        # One table, oldest first: key -> (result, what it counted, its
        # estimated cost, and the fields it counted if that is all it counted,
        # else -1: most hits then add to the live counters, no replay call).
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._live = redactor.live_counters()
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
        return self.text(value, field, bool(cut))  # the redactor reads cut as a truth value

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv:
        return self.argv(argv, field, cut)

    def text(self, value: str, field: str, cut: bool) -> RedactedText:
        """:meth:`redact_text_detail`, positional (the mapper's per-field call)."""
        key: _Key = (field, value, cut)
        try:
            found = self._entries.get(key)
        except TypeError:  # a value that cannot be a key: answered, never kept
            found = None
        if found is None:
            return self._text_missed(key, value, field, cut)
        result = self._hit(found)
        assert isinstance(result, RedactedText)  # a text key holds a text result
        return result

    def comm(self, value: str) -> RedactedText:
        """``text(value, "comm", comm_is_cut(value))``: whether a comm is cut
        follows from the comm, so it is worked out on a miss only."""
        key: _Key = (value,)  # the one key of one element: comm names are most of a memo's hits
        try:
            found = self._entries.get(key)
        except TypeError:
            found = None
        if found is None:
            return self._text_missed(key, value, "comm", comm_is_cut(value))
        result = self._hit(found)
        assert isinstance(result, RedactedText)
        return result

    def _hit(self, found: _Entry) -> RedactedText | RedactedArgv:
        """A memo hit: the counters the rules would have moved, then the
        result. An entry that only counted fields adds them, no replay call."""
        self.hits += 1
        if found[3] >= 0:
            self._live.fields += found[3]
        else:
            self.redactor.replay(found[1])
        return found[0]

    def _text_missed(self, key: _Key, value: str, field: str, cut: bool) -> RedactedText:
        self.misses += 1
        text, tally = self.redactor.redact_text_tallied(value, field, cut=cut)
        chars = len(value) if type(value) is str else 0
        self._keep(key, text, tally, 2 * (chars + len(text.text)))
        return text

    def argv(self, argv: Sequence[str], field: str, cut: Collection[int]) -> RedactedArgv:
        """:meth:`redact_argv`, positional."""
        entries = tuple(argv)
        try:
            cut_at = frozenset(cut) if cut else _NO_CUT  # as the redactor reads it: a set
        except TypeError:
            self.misses += 1
            return self.redactor.redact_argv(entries, field, cut=cut)
        key: _Key = (field, entries, cut_at)
        try:
            found = self._entries.get(key)
        except TypeError:
            found = None
        if found is None:
            self.misses += 1
            redacted, tally = self.redactor.redact_argv_tallied(entries, field, cut=cut_at)
            size = sum(map(_chars, entries)) + sum(map(len, redacted.argv))
            self._keep(key, redacted, tally, 2 * size + 16 * (len(entries) + len(cut_at)))
            return redacted
        result = self._hit(found)
        assert isinstance(result, RedactedArgv)
        return result

    def _keep(
        self, key: _Key, result: RedactedText | RedactedArgv, tally: RedactionTally, size: int
    ) -> None:
        moved = tally.size()
        cost = _ENTRY_BYTES + size + _COUNTER_BYTES * moved
        max_bytes = self.max_bytes
        if cost > max_bytes:
            return  # bigger than the whole memo: not kept, nothing evicted for it
        entries = self._entries
        try:
            entries[key] = (result, tally, cost, -1 if moved else tally.fields)
        except TypeError:
            return  # a value that cannot be a key: answered, not kept
        self.bytes += cost
        capacity = self.capacity
        while len(entries) > capacity or self.bytes > max_bytes:
            _, (_, _, gone, _) = entries.popitem(last=False)
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
