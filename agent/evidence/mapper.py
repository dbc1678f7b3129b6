"""The mapper: native capture events in, CloudEvents evidence records out.

Sans-I/O and deterministic. The mapper reads no clock, file or socket: the
wall-clock anchor is handed in (:class:`~agent.evidence.types.Anchor`), and
every output depends only on the constructor's arguments and the events given
so far, in order. Map the same capture twice and every record, its ``id``
included, comes out byte for byte the same; a retried delivery therefore
carries the same ``id`` and a consumer can de-duplicate on ``source`` + ``id``.

The stream:

- record 0 (``thseq`` 0) is the anchor record, ``capture.anchor.v1``, holding
  the anchor itself: a reader can recompute every ``time`` from it, and
  re-mapping needs nothing that is not in the stream. :meth:`Mapper.map` and
  the ``capture_*`` methods refuse to run before :meth:`Mapper.anchor_record`
  has been taken, so no stream can start with anything else;
- every later record gets the next ``thseq`` in call order.

Record identity: ``thhash`` is blake3 of the canonical (RFC 8785) bytes of
``data``; ``id`` is the first 32 hex digits of blake3 over the canonical array
``[source, boot id, anchor wall ns (as a string), thseq, type, thhash]``. The
anchor tells apart two runs on one boot (both number their records from 0);
the type keeps two records that differ only in type apart.

Times: a kernel event's ``time`` is ``wall_ns + (ts_ns - boottime_ns)`` of
the anchor, in integers. Records without a kernel timestamp (syscall counts,
/proc snapshots, ``capture.*``) take the latest kernel time mapped so far (the
anchor's before any): "no later than this was seen", deterministic, and never
earlier than what came before. A caller that knows better passes ``ts_ns``.

Bytes that are not UTF-8 (in argv, paths, comm, socket paths) are written
in escape form and the fields holding them are listed in ``data.escaped``
(and ``data.endpoint.escaped``): see :mod:`agent.safetext`. Text the capture
cut short is flagged (``args_cut``, ``filename_cut``, ``path_cut``,
``path2_cut``).

Nanosecond counts and cgroup ids are written as decimal strings (``ts_ns``,
``cgroup_id``): they pass 2**53 (wall time does, uptime does after 104 days),
and canonical JSON accepts only integers every parser reads exactly.

Redaction: every argv entry, exec filename, file path (rename target too),
UNIX or other non-IP socket address, process cmdline and exe, and comm, goes
through the injected :class:`~agent.redact.Redactor` before it is put in a
record, by :func:`agent.redact.events.redact_event` (the same function every
other output uses). A field the redactor cannot handle comes back as its error marker and
is counted there (:attr:`Mapper.redaction_stats`); the raw value is never
stored in a record. Each record's ``data.redacted`` lists the rules that
changed it (``"error"`` for a failure). IP addresses, ports and syscall names
are not redacted.

What can go wrong: a kernel timestamp so far from the anchor that its wall
time falls outside years 1 to 9999 raises ValueError; a ``capture_*`` payload
holding a float, a huge integer or another non-JSON value raises
:class:`~agent.evidence.canonical.CanonicalError` naming it (``$.config.x``).
In both cases no ``thseq`` is used up: the stream stays gapless.

Not thread-safe, like the redactor it drives: one mapper per stream, used by
one task.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any, Final, Protocol
from urllib.parse import quote

import blake3
import msgspec

from agent import __version__
from agent.capture.events import (
    Event,
    EventBase,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
)
from agent.evidence.canonical import MAX_SAFE_INTEGER, CanonicalError, canonical
from agent.evidence.types import (
    DATACONTENTTYPE,
    PRODUCER,
    SPECVERSION,
    TYPE_PREFIX,
    Anchor,
    CloudEvent,
    format_rfc3339_ns,
)
from agent.redact import RedactionStats, Redactor
from agent.redact.events import redact_event
from agent.safetext import escape_fields, escape_json

__all__ = [
    "CAPTURE_TYPES",
    "FILE_OPS",
    "NET_OPS",
    "TYPE_ANCHOR",
    "TYPE_CONFIG",
    "TYPE_DEGRADED",
    "TYPE_EXEC",
    "TYPE_EXIT",
    "TYPE_FORK",
    "TYPE_LOSS",
    "TYPE_RECOVERED",
    "TYPE_SEEN",
    "TYPE_START",
    "TYPE_STOP",
    "TYPE_SYSCALLS",
    "Mapper",
    "MapperStateError",
    "ProbeStatusLike",
    "decode",
    "encode",
    "file_type",
    "net_type",
]

TYPE_EXEC: Final = TYPE_PREFIX + "process.exec.v1"
TYPE_FORK: Final = TYPE_PREFIX + "process.fork.v1"
TYPE_EXIT: Final = TYPE_PREFIX + "process.exit.v1"
TYPE_SEEN: Final = TYPE_PREFIX + "process.seen.v1"
TYPE_SYSCALLS: Final = TYPE_PREFIX + "process.syscalls.v1"
TYPE_ANCHOR: Final = TYPE_PREFIX + "capture.anchor.v1"
TYPE_LOSS: Final = TYPE_PREFIX + "capture.loss.v1"
TYPE_DEGRADED: Final = TYPE_PREFIX + "capture.degraded.v1"
TYPE_START: Final = TYPE_PREFIX + "capture.start.v1"
TYPE_STOP: Final = TYPE_PREFIX + "capture.stop.v1"
TYPE_CONFIG: Final = TYPE_PREFIX + "capture.config.v1"
TYPE_RECOVERED: Final = TYPE_PREFIX + "capture.recovered.v1"

CAPTURE_TYPES: Final = frozenset(
    {TYPE_ANCHOR, TYPE_LOSS, TYPE_DEGRADED, TYPE_START, TYPE_STOP, TYPE_CONFIG, TYPE_RECOVERED}
)
"""The records about the capture itself rather than about what it saw."""

FILE_OPS: Final = ("open", "unlink", "rmdir", "rename", "chmod", "mkdir")
"""File operations with a type of their own; anything else is ``file.other.v1``."""

NET_OPS: Final = ("connect", "accept", "bind", "listen")
"""Socket operations with a type of their own; anything else is ``network.other.v1``."""

_AT_REMOVEDIR: Final = 0x200  # unlinkat(2) flag: the target is a directory
_ID_HEX_DIGITS: Final = 32
_TRACEPARENT: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_MAX_TRACESTATE: Final = 512  # W3C Trace Context: at most 32 members, 512 chars is ample


class MapperStateError(RuntimeError):
    """The mapper was used out of order: a record asked for before the anchor record."""


class ProbeStatusLike(Protocol):
    """What :meth:`Mapper.capture_degraded` reads of a probe status.

    :class:`agent.capture.loader.ProbeStatus` fits; the mapper does not import
    the loader (which pulls in the BPF side) just for this shape.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def attached(self) -> bool: ...

    @property
    def reason(self) -> str: ...


def file_type(op: str) -> str:
    """The record type of a file operation (``open`` -> ``dev.tracehound.file.open.v1``)."""
    return f"{TYPE_PREFIX}file.{op if op in FILE_OPS else 'other'}.v1"


def net_type(op: str) -> str:
    """The record type of a socket operation (``connect`` -> ``...network.connect.v1``)."""
    return f"{TYPE_PREFIX}network.{op if op in NET_OPS else 'other'}.v1"


def encode(ce: CloudEvent) -> bytes:
    """The canonical (RFC 8785) JSON bytes of a record, without a trailing newline.

    Equal records give equal bytes; these are the bytes to hash, store and send.
    """
    return canonical(ce)


def decode(raw: bytes | str) -> CloudEvent:
    """Read one record back. Raises :class:`msgspec.ValidationError` (a ``DecodeError``)
    for JSON that is not a record, unknown attributes included; it checks the
    shape only, not ``thhash`` or ``id``."""
    return msgspec.json.decode(raw, type=CloudEvent)


class Mapper:
    """Turns native events into CloudEvents records, numbering them from 0.

    Args:
        host: the host name, for ``thhost`` and the default ``source``.
        anchor: the clock anchor of this boot or run; record 0 holds it.
        redactor: applied to every free-text field; default
            :meth:`Redactor.builtin`. Its counters are the mapper's
            :attr:`redaction_stats`, so share one only knowingly.
        version: ``thversion``; default the installed tracehound version.
            Part of every record's bytes: a different version maps to
            different records (a record says which code made it).
        source: the CloudEvents ``source``; default ``tracehound://<host>``
            (the host percent-encoded where a URI needs it).
        traceparent, tracestate: W3C Trace Context values to put on every
            record; ``traceparent`` must be well formed.

    Raises:
        ValueError: an empty host or boot id, anchor times that are not
            non-negative ints, or a malformed ``traceparent``.
    """

    def __init__(
        self,
        *,
        host: str,
        anchor: Anchor,
        redactor: Redactor | None = None,
        version: str = __version__,
        source: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, got {host!r}")
        if not isinstance(anchor.boot_id, str) or not anchor.boot_id:
            raise ValueError(f"anchor boot_id must be a non-empty str, got {anchor.boot_id!r}")
        for name in ("wall_ns", "boottime_ns"):
            value = getattr(anchor, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"anchor {name} must be a non-negative int, got {value!r}")
        format_rfc3339_ns(anchor.wall_ns)  # refuses an anchor with no RFC 3339 form
        if traceparent is not None and _TRACEPARENT.fullmatch(traceparent) is None:
            raise ValueError(f"traceparent is not W3C Trace Context shaped: {traceparent!r}")
        if tracestate is not None and (
            not isinstance(tracestate, str) or len(tracestate) > _MAX_TRACESTATE
        ):
            raise ValueError("tracestate must be a str of at most 512 characters")
        if source is not None and (not isinstance(source, str) or not source):
            raise ValueError(f"source must be a non-empty str, got {source!r}")
        self.host: Final = host
        self.anchor: Final = anchor
        self.version: Final = version
        self.source: Final = (
            source if source is not None else f"tracehound://{quote(host, safe='')}"
        )
        self._redactor = redactor if redactor is not None else Redactor.builtin()
        self._traceparent = traceparent
        self._tracestate = tracestate
        self._next_seq = 0
        self._latest_ns = anchor.boottime_ns
        self._anchor_taken = False
        self._anchor = self._emit(
            TYPE_ANCHOR,
            None,
            {
                "boot_id": anchor.boot_id,
                "wall_ns": str(anchor.wall_ns),
                "boottime_ns": str(anchor.boottime_ns),
            },
            anchor.boottime_ns,
        )

    # --- public API ------------------------------------------------------------

    @property
    def redaction_stats(self) -> RedactionStats:
        """The redactor's counters (a snapshot): fields seen, redacted, failed."""
        return self._redactor.stats

    @property
    def next_seq(self) -> int:
        """The ``thseq`` the next record will get."""
        return self._next_seq

    def anchor_record(self) -> CloudEvent:
        """Record 0, the anchor. Take it first; after that the other methods work.

        Always the same record: calling it again returns it again and uses no
        sequence number.
        """
        self._anchor_taken = True
        return self._anchor

    encode = staticmethod(encode)

    def map(self, event: Event) -> CloudEvent:
        """Map one native event to the next record.

        Raises :class:`MapperStateError` before :meth:`anchor_record`,
        :class:`TypeError` for something that is not a native event, and
        ValueError for a timestamp with no RFC 3339 form.
        """
        if isinstance(event, SyscallCounts):
            return self._syscalls(event)
        if not isinstance(
            event, ExecEvent | ForkEvent | ExitEvent | FileEvent | NetEvent | ProcessSeen
        ):
            raise TypeError(f"not a capture event: {type(event).__name__}")
        redacted, fired = redact_event(self._redactor, event)
        if isinstance(redacted, FileEvent):
            return self._file(redacted, fired)
        if isinstance(redacted, ExecEvent):
            return self._exec(redacted, fired)
        if isinstance(redacted, NetEvent):
            return self._net(redacted, fired)
        if isinstance(redacted, ForkEvent):
            return self._fork(redacted, fired)
        if isinstance(redacted, ExitEvent):
            return self._exit(redacted, fired)
        assert isinstance(redacted, ProcessSeen)
        return self._seen(redacted, fired)

    def records(self, events: Iterable[Event]) -> Iterator[CloudEvent]:
        """The anchor record, then each event mapped: a whole stream, lazily.

        Once per mapper: a second call would yield the anchor (seq 0) again in
        the middle of the numbering. For a stream fed piece by piece, take
        :meth:`anchor_record` once and then call :meth:`map`.
        """
        yield self.anchor_record()
        for event in events:
            yield self.map(event)

    def capture_loss(
        self,
        counts: Mapping[str, Mapping[str, int]],
        window_start_ns: int,
        window_end_ns: int,
        *,
        cause: Mapping[str, Any] | None = None,
    ) -> CloudEvent:
        """A ``capture.loss.v1`` record: events lost, by kind and stage, in a window.

        ``counts`` is ``{kind: {stage: n}}`` (``{"exec": {"lost_kernel": 3}}``);
        the window is in kernel (boot-time) nanoseconds, its end the record's
        time. Zero counts are kept: "none lost at this stage" is evidence too.
        ``cause``, when given, says why (the store failed, and since when).
        Raises ValueError for a negative or non-int count or a window that ends
        before it starts.
        """
        if window_end_ns < window_start_ns:
            raise ValueError(
                f"loss window ends ({window_end_ns}) before it starts ({window_start_ns})"
            )
        table: dict[str, dict[str, int]] = {}
        total = 0
        for kind, stages in counts.items():
            row: dict[str, int] = {}
            for stage, count in stages.items():
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ValueError(f"loss count {kind}.{stage} must be an int >= 0: {count!r}")
                row[str(stage)] = count
                total += count
            table[str(kind)] = row
        data: dict[str, object] = {
            "counts": table,
            "total": total,
            "window_start_ns": str(window_start_ns),
            "window_end_ns": str(window_end_ns),
            "window_start": format_rfc3339_ns(self._wall_ns(window_start_ns)),
            "window_end": format_rfc3339_ns(self._wall_ns(window_end_ns)),
        }
        if cause is not None:
            data["cause"] = dict(cause)
        return self._emit(TYPE_LOSS, None, data, window_end_ns)

    def capture_degraded(
        self, probe_statuses: Iterable[ProbeStatusLike], *, ts_ns: int | None = None
    ) -> CloudEvent:
        """A ``capture.degraded.v1`` record: which probes are missing, and why.

        Lists every probe that did not attach (sorted by name, with its kind
        and reason) and how many of how many did. Made even when none is
        missing, if asked: "all attached" is then on the record.
        """
        statuses = sorted(probe_statuses, key=lambda s: (s.name, s.kind))
        missing = [
            {"name": s.name, "kind": s.kind, "reason": s.reason} for s in statuses if not s.attached
        ]
        data: dict[str, object] = {
            "missing": missing,
            "attached": sum(1 for s in statuses if s.attached),
            "total": len(statuses),
        }
        return self._emit(TYPE_DEGRADED, None, data, ts_ns)

    def capture_start(self, config: Mapping[str, Any], *, ts_ns: int | None = None) -> CloudEvent:
        """A ``capture.start.v1`` record with the configuration capture started with.

        ``config`` must be canonical-JSON-safe (no floats) and is written as
        given: it is not redacted, so keep secrets out of it.
        """
        return self._emit(TYPE_START, None, {"config": dict(config)}, ts_ns)

    def set_redactor(self, redactor: Redactor) -> None:
        """Redact every record mapped from now on with ``redactor`` (a reload)."""
        self._redactor = redactor

    def capture_config(self, config: Mapping[str, Any], *, ts_ns: int | None = None) -> CloudEvent:
        """A ``capture.config.v1`` record: the configuration changed to ``config``."""
        return self._emit(TYPE_CONFIG, None, {"config": dict(config)}, ts_ns)

    def capture_recovered(
        self, found: Mapping[str, Any], *, ts_ns: int | None = None
    ) -> CloudEvent:
        """A ``capture.recovered.v1`` record: the previous run ended without a
        ``capture.stop`` (a crash, SIGKILL, power loss); ``found`` says what
        the log showed, including any torn tail the store set aside."""
        return self._emit(TYPE_RECOVERED, None, {"found": dict(found)}, ts_ns)

    def capture_stop(self, summary: Mapping[str, Any], *, ts_ns: int | None = None) -> CloudEvent:
        """A ``capture.stop.v1`` record: ``summary`` plus the redaction counters so far.

        The redaction counters make failures visible in the evidence itself,
        not only in metrics: a reader sees how many fields became markers.
        """
        data: dict[str, object] = {
            "summary": dict(summary),
            "redaction": msgspec.to_builtins(self._redactor.stats, order="deterministic"),
        }
        return self._emit(TYPE_STOP, None, data, ts_ns)

    # --- per-kind mapping --------------------------------------------------------
    # Each takes the event already redacted (agent.redact.events decides which
    # fields), and the names of the rules that changed it.

    def _exec(self, event: ExecEvent, fired: tuple[str, ...]) -> CloudEvent:
        data = self._header(event)
        data.update(
            {
                "ret": event.ret,
                "filename": event.filename,
                "argv": list(event.argv),
                "argv_truncated": event.argv_truncated,
                "args_cut": list(event.args_cut),
                "argv_more": event.argv_more,
                "filename_cut": event.filename_cut,
                "execveat": event.at,
            }
        )
        return self._kernel_record(TYPE_EXEC, f"pid/{event.pid}", data, fired, event.ts_ns)

    def _fork(self, event: ForkEvent, fired: tuple[str, ...]) -> CloudEvent:
        data = self._header(event)
        data.update({"child_pid": event.child_pid, "clone_flags": _u64(event.clone_flags)})
        # The subject is what the event is about: the new process.
        return self._kernel_record(TYPE_FORK, f"pid/{event.child_pid}", data, fired, event.ts_ns)

    def _exit(self, event: ExitEvent, fired: tuple[str, ...]) -> CloudEvent:
        data = self._header(event)
        data.update(
            {
                "exit_code": event.exit_code if event.have_code else None,
                "signal": event.signal if event.have_signal else None,
            }
        )
        return self._kernel_record(TYPE_EXIT, f"pid/{event.pid}", data, fired, event.ts_ns)

    def _file(self, event: FileEvent, fired: tuple[str, ...]) -> CloudEvent:
        op = _file_op(event)
        data = self._header(event)
        data.update(
            {
                "op": op,
                "syscall": event.syscall,
                "ret": event.ret,
                "dfd": event.dfd,
                "path": event.path,
                "path_cut": event.path_cut,
                "dfd2": event.dfd2 if op == "rename" else None,
                "path2": event.path2 if op == "rename" else None,
                "path2_cut": event.path2_cut if op == "rename" else None,
                "flags": event.flags,
                "mode": event.mode,
            }
        )
        # The envelope's subject is the path, in escape form if it needs one
        # (data.escaped then names "path").
        subject = escape_json(event.path)[0] or f"pid/{event.pid}"
        return self._kernel_record(file_type(op), subject, data, fired, event.ts_ns)

    def _net(self, event: NetEvent, fired: tuple[str, ...]) -> CloudEvent:
        data = self._header(event)
        endpoint = event.endpoint
        data.update(
            {
                "op": event.op,
                "ret": event.ret,
                "fd": event.fd,
                "endpoint": None
                if endpoint is None
                else {
                    "family": endpoint.family,
                    "address": endpoint.address,
                    "port": endpoint.port,
                },
                "backlog": event.backlog if event.op == "listen" else None,
            }
        )
        return self._kernel_record(net_type(event.op), f"pid/{event.pid}", data, fired, event.ts_ns)

    def _syscalls(self, event: SyscallCounts) -> CloudEvent:
        data: dict[str, object] = {
            "pid": event.pid,
            "counts": {str(name): _u64(count) for name, count in event.counts.items()},
            "final": event.final,
        }
        return self._emit(TYPE_SYSCALLS, f"pid/{event.pid}", data, None)

    def _seen(self, event: ProcessSeen, fired: tuple[str, ...]) -> CloudEvent:
        data: dict[str, object] = {
            "pid": event.pid,
            "ppid": event.ppid,
            "comm": event.comm,
            "exe": event.exe,
            "cmdline": list(event.cmdline),
            "uid": event.uid,
            "user": event.user,
            "start_time_ms": _epoch_ms(event.start_time),
            "preexisting": event.preexisting,
            "redacted": list(fired),
        }
        return self._emit(TYPE_SEEN, f"pid/{event.pid}", data, None)

    # --- helpers -------------------------------------------------------------------

    def _header(self, event: EventBase) -> dict[str, object]:
        """The fields every kernel record carries; ``redacted`` is filled in last."""
        return {
            "pid": event.pid,
            "tid": event.tid,
            "uid": event.uid,
            "gid": event.gid,
            "cgroup_id": str(event.cgroup_id),
            "comm": event.comm,
            "ts_ns": str(event.ts_ns),
        }

    def _kernel_record(
        self, type_: str, subject: str, data: dict[str, object], fired: tuple[str, ...], ts_ns: int
    ) -> CloudEvent:
        data["redacted"] = list(fired)
        return self._emit(type_, subject, data, ts_ns)

    def wall_ns(self, ts_ns: int) -> int:
        """The wall-clock time (epoch ns) of a kernel timestamp, by the anchor."""
        return self.anchor.wall_ns + (ts_ns - self.anchor.boottime_ns)

    _wall_ns = wall_ns

    def _emit(
        self, type_: str, subject: str | None, data: dict[str, object], ts_ns: int | None
    ) -> CloudEvent:
        """Make the next record. Everything that can fail runs before the seq is used."""
        if type_ != TYPE_ANCHOR and not self._anchor_taken:
            raise MapperStateError(
                "take anchor_record() first: record 0 of every stream is the anchor"
            )
        if ts_ns is not None and (isinstance(ts_ns, bool) or not isinstance(ts_ns, int)):
            raise ValueError(f"ts_ns must be an int, got {ts_ns!r}")
        when = self._latest_ns if ts_ns is None else ts_ns
        time = format_rfc3339_ns(self._wall_ns(when))
        try:
            body = canonical(data)
        except CanonicalError:
            # Host text that is not UTF-8 has no canonical form: write it in
            # escape form, named in data.escaped (agent.safetext). Anything
            # else that is refused is refused again, naming the value.
            data = escape_fields(data)
            body = canonical(data)
        plain: dict[str, Any] = msgspec.json.decode(body)
        seq = self._next_seq
        thhash = blake3.blake3(body).hexdigest()
        # The anchor makes ids unique per run (two runs on one boot number
        # their records from 0 alike) and stays the same when the same
        # capture is mapped again, so a retried record keeps its id.
        identity = canonical(
            [self.source, self.anchor.boot_id, str(self.anchor.wall_ns), seq, type_, thhash]
        )
        record = CloudEvent(
            specversion=SPECVERSION,
            id=blake3.blake3(identity).hexdigest()[:_ID_HEX_DIGITS],
            source=self.source,
            type=type_,
            time=time,
            subject=subject,
            datacontenttype=DATACONTENTTYPE,
            data=plain,
            thseq=seq,
            thhash=thhash,
            thproducer=PRODUCER,
            thversion=self.version,
            thhost=self.host,
            thbootid=self.anchor.boot_id,
            traceparent=self._traceparent,
            tracestate=self._tracestate,
        )
        self._next_seq = seq + 1
        if ts_ns is not None and ts_ns > self._latest_ns:
            self._latest_ns = ts_ns
        return record


def _file_op(event: FileEvent) -> str:
    """The operation as typed: ``unlink`` of a directory is ``rmdir``."""
    if event.op == "unlink" and (
        event.syscall == "rmdir" or (event.syscall == "unlinkat" and event.flags & _AT_REMOVEDIR)
    ):
        return "rmdir"
    return event.op


def _u64(value: int) -> int | str:
    """An integer as is if every JSON parser reads it exactly, else as a decimal string."""
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)


def _epoch_ms(seconds: float) -> int | None:
    """A float of epoch seconds (psutil's ``create_time``) as integer milliseconds.

    Exact rational arithmetic on the float's binary value, rounded half to
    even, so the same float always gives the same integer. psutil's value is
    built from clock ticks (10 ms), so milliseconds lose nothing real. NaN or
    an infinity, or a time past +-285,000 years (all corrupt readings) gives
    None rather than a guess.
    """
    try:
        millis = round(Fraction(seconds) * 1000)
    except (ValueError, OverflowError, TypeError):
        return None
    return millis if -MAX_SAFE_INTEGER <= millis <= MAX_SAFE_INTEGER else None
