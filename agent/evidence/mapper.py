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

Encoding: each record is encoded once. Its payload is of a typed Struct
(:mod:`agent.evidence.payloads`); a kernel event's payload bytes are
composed straight from the redacted values in that Struct's canonical form
(:mod:`agent.evidence.payload_bytes`: building and encoding the Struct
costs more than the rest of the record but its hashes), any other payload's
are the Struct's, encoded. Those bytes give ``thhash``, and the envelope is
written around them: the mapper returns an
:class:`~agent.evidence.types.EvidenceRecord`, its type, id and bytes (the
Struct, when built, or decoded from the bytes when asked), and everything
downstream (chain, store, live tail) uses the bytes as they are.

Redaction: every argv entry, exec filename, file path (rename target too),
UNIX or other non-IP socket address, process cmdline and exe, and comm, goes
through the injected :class:`~agent.redact.Redactor` (behind a bounded
memo of its results, which replays the same counters) before it is put in a
record, by the per-kind functions of :mod:`agent.redact.events` (the ones
:func:`~agent.redact.events.redact_event`, which every other output uses, is
made of). A field the redactor cannot handle comes back as its error marker and
is counted there (:attr:`Mapper.redaction_stats`); the raw value is never
stored in a record. Each record's ``data.redacted`` lists the rules that
changed it (``"error"`` for a failure). IP addresses, ports and syscall names
are not redacted.

What can go wrong: a kernel timestamp so far from the anchor that its wall
time falls outside years 1 to 9999 raises ValueError; so does a kernel
integer outside +-(2**53 - 1) where the record has no string form for it; a
``capture_*`` payload holding a float, a huge integer, a non-ASCII key or
another value outside the canonical domain raises
:class:`~agent.evidence.canonical.CanonicalError` naming it (``$.config.x``).
In both cases no ``thseq`` is used up: the stream stays gapless.

Not thread-safe, like the redactor it drives: one mapper per stream, used by
one task.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any, ClassVar, Final, Protocol, TypeAlias
from urllib.parse import quote

import blake3
import msgspec

from agent import __version__
from agent.capture.calls import family_of
from agent.capture.cgroups import UNRESOLVED, CgroupInfo
from agent.capture.container_id import Container
from agent.capture.events import (
    CallEvent,
    Event,
    EventBase,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
    UringEvent,
)
from agent.capture.kinds import (
    FILE_OPERATIONS,
    SEND_OPS,
    TWO_PATH_OPS,
    file_operation,
    path_flag_names,
)
from agent.capture.uring_facts import OPEN_OPS, PATH_OPS
from agent.capture.uring_facts import TWO_PATH_OPS as URING_TWO_PATH_OPS
from agent.evidence.app_event import AppEvent
from agent.evidence.canonical import MAX_SAFE_INTEGER, CanonicalError, check_plain
from agent.evidence.payload_bytes import (
    NO_CGROUP,
    Cgroup,
    cgroup_bytes,
    exec_bytes,
    exit_bytes,
    file_bytes,
    fork_bytes,
    json_text,
    net_bytes,
)
from agent.evidence.payloads import (
    AnchorData,
    AppData,
    CallData,
    ConfigData,
    DegradedData,
    EndpointData,
    ExecData,
    ExitData,
    FileData,
    ForkData,
    LossData,
    MissingProbe,
    NetData,
    Payload,
    RecoveredData,
    SeenData,
    StartData,
    StopData,
    SyscallsData,
    UringData,
    encode_payload,
)
from agent.evidence.record_types import (
    TYPE_ANCHOR,
    TYPE_APP,
    TYPE_CONFIG,
    TYPE_DEGRADED,
    TYPE_EXEC,
    TYPE_EXIT,
    TYPE_FORK,
    TYPE_LOSS,
    TYPE_RECOVERED,
    TYPE_SEEN,
    TYPE_START,
    TYPE_STOP,
    TYPE_SYSCALLS,
    TYPE_URING,
    call_type,
    file_type,
    net_type,
)
from agent.evidence.types import (
    DATACONTENTTYPE,
    PRODUCER,
    SPECVERSION,
    Anchor,
    CloudEvent,
    EvidenceRecord,
    format_rfc3339_ns,
)
from agent.redact import RedactionStats, Redactor
from agent.redact.events import (
    MemoStats,
    RedactionMemo,
    redact_call,
    redact_comm,
    redact_exec,
    redact_file,
    redact_net,
    redact_seen,
    redact_uring,
)
from agent.safetext import escape_json

__all__ = ["Mapper", "MapperStateError", "ProbeStatusLike", "decode", "encode"]

_ID_BYTES: Final = 16  # an id is the first 32 hex digits of its blake3
_hex: Final = binascii.b2a_hex
_FILE_TYPES: Final = {op: file_type(op) for op in FILE_OPERATIONS}
_INT_ONLY: Final = frozenset({int})
_tuple_new: Final = tuple.__new__  # an EvidenceRecord made without its Python __new__
_TRACEPARENT: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_MAX_TRACESTATE: Final = 512  # W3C Trace Context: at most 32 members, 512 chars is ample
_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_NS_PER_SECOND: Final = 1_000_000_000


#: Cgroup ids whose record members the mapper keeps (then it starts over).
CGROUP_TABLE: Final = 4096

_CgroupEntry: TypeAlias = tuple[str | None, Container | None, Cgroup | None, tuple[str, ...]]
_NO_RULES: Final[tuple[str, ...]] = ()
_NO_ENTRY: Final[_CgroupEntry] = (None, None, NO_CGROUP, _NO_RULES)


def _with(fired: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    """The rules fired on a record's fields and on its cgroup path, each once, sorted."""
    return tuple(sorted(set(fired + more))) if more else fired


class MapperStateError(RuntimeError):
    """A record was asked for before the anchor record was taken."""


class ProbeStatusLike(Protocol):
    """What :meth:`Mapper.capture_degraded` reads of a probe status (duck-typed,
    so the loader's ``ProbeStatus`` and test doubles both fit)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def attached(self) -> bool: ...

    @property
    def reason(self) -> str: ...


def encode(ce: CloudEvent[Any]) -> bytes:
    """The canonical (RFC 8785) JSON bytes of a record, without a trailing newline.

    For a record read back or built by hand; the mapper's own records come
    with their bytes (:class:`EvidenceRecord`) and are never encoded again.
    Raises :class:`~agent.evidence.canonical.CanonicalError` outside the
    canonical domain.
    """
    check_plain(msgspec.to_builtins(ce.data))
    return _ENCODER.encode(ce)


def decode(raw: bytes | str) -> CloudEvent[dict[str, Any]]:
    """Read one record back. Raises :class:`msgspec.ValidationError` (a ``DecodeError``)
    for JSON that is not a record, unknown attributes included; it checks the
    shape only, not ``thhash`` or ``id``."""
    return msgspec.json.decode(raw, type=CloudEvent[dict[str, Any]])


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
        cgroups: a cgroup id's path and container
            (:meth:`agent.capture.cgroups.CgroupResolver.resolve`), asked once
            per id while the id is in the mapper's table of
            :data:`CGROUP_TABLE` entries; None: every ``cgroup`` and
            ``container`` is null. It is the one input that is not in the
            stream: a record states what the id named when it was mapped.

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
        cgroups: Callable[[int], CgroupInfo] | None = None,
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
        for name, text in (("host", host), ("source", source), ("version", version)):
            if text is not None and escape_json(text)[1]:
                raise ValueError(f"{name} must be valid Unicode text, got {text!r}")
        self.host: Final = host
        self.anchor: Final = anchor
        self.version: Final = version
        self.source: Final = (
            source if source is not None else f"tracehound://{quote(host, safe='')}"
        )
        self._redactor = redactor if redactor is not None else Redactor.builtin()
        # Library paths, comm, the same argv again: most fields repeat, and a
        # hit costs a lookup. The memo replays the rules' counters exactly.
        self._memo = RedactionMemo(self._redactor)
        self._traceparent = traceparent
        self._tracestate = tracestate
        self._cgroups = cgroups
        # cgroup id -> (path redacted, container, their JSON or None, rules fired)
        self._cgroup_table: dict[int, _CgroupEntry] = {}
        self._next_seq = 0
        self._latest_ns = anchor.boottime_ns
        self._anchor_taken = False
        # The part of every record's identity array that never changes:
        # [source, boot id, anchor wall ns, ...
        self._identity_prefix = (
            b"["
            + _ENCODER.encode(self.source)
            + b","
            + _ENCODER.encode(anchor.boot_id)
            + b","
            + _ENCODER.encode(str(anchor.wall_ns))
            + b","
        )
        # The envelope: one bytes format, its members in key order around the
        # ones that change (see _compose), the constant ones encoded once
        # (their "%" doubled: a source is percent-encoded, a host may hold one).
        encoded = _ENCODER.encode

        def fixed(*parts: bytes) -> bytes:
            return b"".join(parts).replace(b"%", b"%%")

        self._format = b"".join(
            (
                b'{"data":%s',
                fixed(b',"datacontenttype":', encoded(DATACONTENTTYPE), b',"id":"'),
                b"%s",
                fixed(
                    b'","source":', encoded(self.source), b',"specversion":', encoded(SPECVERSION)
                ),
                b"%s",  # the subject member, if any
                fixed(b',"thbootid":', encoded(anchor.boot_id), b',"thhash":"'),
                b"%s",
                fixed(b'","thhost":', encoded(host), b',"thproducer":', encoded(PRODUCER)),
                b',"thseq":%d',
                fixed(b',"thversion":', encoded(version), b',"time":"'),
                b'%s%09dZ"',
                fixed(
                    b"" if traceparent is None else b',"traceparent":' + encoded(traceparent),
                    b"" if tracestate is None else b',"tracestate":' + encoded(tracestate),
                ),
                b',"type":%s}',
            )
        )
        self._type_json: dict[str, bytes] = {}
        # One hasher, reset per hash: a new blake3 object costs more than the
        # hashing of a record's few hundred bytes.
        hasher = blake3.blake3()
        self._hasher = (hasher.reset, hasher.update, hasher.digest)
        # wall_ns + (ts_ns - boottime_ns), as one addition per record.
        self._wall_offset = anchor.wall_ns - anchor.boottime_ns
        # The wall-clock second last formatted, and its text up to the dot:
        # records come in bursts within one second, and the calendar
        # arithmetic is the dearest part of a time.
        self._second = -1
        self._second_text = b""
        # Each kind of native event to the method that maps it.
        self._makers: dict[type[Any], Callable[[Any], EvidenceRecord]] = {
            FileEvent: self._map_file,
            ExecEvent: self._map_exec,
            ForkEvent: self._map_fork,
            ExitEvent: self._map_exit,
            NetEvent: self._map_net,
            UringEvent: self._map_uring,
            CallEvent: self._map_call,
            SyscallCounts: self._syscalls,
            ProcessSeen: self._map_seen,
        }
        self._anchor = self._emit(
            TYPE_ANCHOR,
            None,
            AnchorData(
                boot_id=anchor.boot_id,
                wall_ns=str(anchor.wall_ns),
                boottime_ns=str(anchor.boottime_ns),
            ),
            anchor.boottime_ns,
        )

    # --- public API ------------------------------------------------------------

    @property
    def redaction_stats(self) -> RedactionStats:
        """The redactor's counters (a snapshot): fields seen, redacted, failed."""
        return self._redactor.stats

    def memo_stats(self) -> MemoStats:
        """The redaction memo's size, caps and counters (a bounded cache)."""
        return self._memo.stats()

    @property
    def next_seq(self) -> int:
        """The ``thseq`` the next record will get."""
        return self._next_seq

    def anchor_record(self) -> EvidenceRecord:
        """Record 0, the anchor. Take it first; after that the other methods work.

        Always the same record: calling it again returns it again and uses no
        sequence number.
        """
        self._anchor_taken = True
        return self._anchor

    def map(self, event: Event) -> EvidenceRecord:
        """Map one native event to the next record.

        Raises :class:`MapperStateError` before :meth:`anchor_record`,
        :class:`TypeError` for something that is not a native event (one of
        the kinds of :mod:`agent.capture.events` exactly, not a subclass), and
        ValueError for a timestamp with no RFC 3339 form or a kernel integer
        outside the canonical range.
        """
        maker = self._makers.get(type(event))
        if maker is None:
            raise TypeError(f"not a capture event: {type(event).__name__}")
        return maker(event)

    def records(self, events: Iterable[Event]) -> Iterator[EvidenceRecord]:
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
    ) -> EvidenceRecord:
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
        check_plain(table, "$.counts")
        data = LossData(
            counts=table,
            total=_int53(total, "total"),
            window_start_ns=str(window_start_ns),
            window_end_ns=str(window_end_ns),
            window_start=format_rfc3339_ns(self.wall_ns(window_start_ns)),
            window_end=format_rfc3339_ns(self.wall_ns(window_end_ns)),
            cause=None if cause is None else _plain_dict(cause, "$.cause"),
        )
        return self._emit(TYPE_LOSS, None, data, window_end_ns)

    def capture_degraded(
        self, probe_statuses: Iterable[ProbeStatusLike], *, ts_ns: int | None = None
    ) -> EvidenceRecord:
        """A ``capture.degraded.v1`` record: which probes are missing, and why.

        Lists every probe that did not attach (sorted by name, with its kind
        and reason) and how many of how many did. Made even when none is
        missing, if asked: "all attached" is then on the record.
        """
        statuses = sorted(probe_statuses, key=lambda s: (s.name, s.kind))
        missing = [
            MissingProbe(name=s.name, kind=s.kind, reason=s.reason)
            for s in statuses
            if not s.attached
        ]
        data = DegradedData(
            missing=missing,
            attached=sum(1 for s in statuses if s.attached),
            total=len(statuses),
        )
        return self._emit(TYPE_DEGRADED, None, data, ts_ns)

    def capture_start(
        self, config: Mapping[str, Any], *, ts_ns: int | None = None
    ) -> EvidenceRecord:
        """A ``capture.start.v1`` record with the configuration capture started with.

        ``config`` must be in the canonical domain (no floats) and is written as
        given: it is not redacted, so keep secrets out of it.
        """
        data = StartData(config=_plain_dict(config, "$.config"))
        return self._emit(TYPE_START, None, data, ts_ns)

    def set_redactor(self, redactor: Redactor) -> None:
        """Redact every record mapped from now on with ``redactor`` (a reload)."""
        self._redactor = redactor
        self._memo = RedactionMemo(redactor)

    def capture_config(
        self, config: Mapping[str, Any], *, ts_ns: int | None = None
    ) -> EvidenceRecord:
        """A ``capture.config.v1`` record: the configuration changed to ``config``."""
        data = ConfigData(config=_plain_dict(config, "$.config"))
        return self._emit(TYPE_CONFIG, None, data, ts_ns)

    def capture_recovered(
        self, found: Mapping[str, Any], *, ts_ns: int | None = None
    ) -> EvidenceRecord:
        """A ``capture.recovered.v1`` record: the previous run ended without a
        ``capture.stop`` (a crash, SIGKILL, power loss); ``found`` says what
        the log showed, including any torn tail the store set aside."""
        data = RecoveredData(found=_plain_dict(found, "$.found"))
        return self._emit(TYPE_RECOVERED, None, data, ts_ns)

    def capture_stop(
        self, summary: Mapping[str, Any], *, ts_ns: int | None = None
    ) -> EvidenceRecord:
        """A ``capture.stop.v1`` record: ``summary`` plus the redaction counters so far.

        The redaction counters make failures visible in the evidence itself,
        not only in metrics: a reader sees how many fields became markers.
        """
        redaction = msgspec.to_builtins(self._redactor.stats, order="deterministic")
        data = StopData(
            summary=_plain_dict(summary, "$.summary"),
            redaction=_plain_dict(redaction, "$.redaction"),
        )
        return self._emit(TYPE_STOP, None, data, ts_ns)

    def app_event(self, event: AppEvent) -> EvidenceRecord:
        """An ``app.event.v1`` record: what a local producer appended, and who it is.

        Its text (``comm``, ``exe``, ``kind``, ``message``, and every key and
        string of ``data``) goes through the redactor like a kernel record's
        (counted under those names, ``data`` for all of ``data``); a key
        that redaction makes equal to one before it gets ``~N`` (its place)
        appended, so no member is lost. The cgroup is resolved as a kernel
        record's. ``event`` was held to the API's limits; anything still
        outside the canonical domain (a float, a huge integer) raises
        :class:`~agent.evidence.canonical.CanonicalError` and uses no seq.
        """
        memo, redactor = self._memo, self._redactor
        fired: set[str] = set()

        def text(value: str, field: str) -> str:
            if not value:
                return value
            result = redactor.redact_text_detail(value, field)
            fired.update(result.fired)
            return result.text

        def plain(value: Any) -> Any:
            if isinstance(value, str):
                return text(value, "data")
            if isinstance(value, list):
                return [plain(item) for item in value]
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for place, (key, item) in enumerate(value.items()):
                    name = text(str(key), "data")
                    if name in out:
                        name = f"{name}~{place}"
                    out[name] = plain(item)
                return out
            return value

        # Raw bytes as surrogate escapes, as the capture hands a kernel
        # record's text over: encode_payload writes them in escape form.
        raw_exe = os.fsdecode(event.exe)
        comm = redact_comm(memo, os.fsdecode(event.comm))
        exe = memo.text(raw_exe, "exe", False) if raw_exe else None
        fired.update(comm.fired)
        if exe is not None:
            fired.update(exe.fired)
        path, container, _, cgroup_fired = self._cgroup(event.cgroup_id)
        fired.update(cgroup_fired)
        kind = text(event.kind, "kind")
        message = text(event.message, "message")
        data = _plain_dict(plain(event.data), "$.data")
        payload = AppData(
            pid=_int53(event.pid, "pid"),
            uid=_int53(event.uid, "uid"),
            gid=_int53(event.gid, "gid"),
            comm=comm.text,
            exe="" if exe is None else exe.text,
            peer_gone=event.peer_gone,
            cgroup_id=str(event.cgroup_id),
            cgroup=path,
            container=container,
            ts_ns=str(event.ts_ns),
            kind=kind,
            message=message,
            data=data,
            redacted=sorted(fired),
        )
        return self._emit(TYPE_APP, f"pid/{event.pid}", payload, event.ts_ns)

    # --- per-kind mapping --------------------------------------------------------
    # Each kernel kind: its free text redacted (agent.redact.events says which
    # fields), the payload's bytes composed (agent.evidence.payload_bytes),
    # the envelope around them. A shape the composer leaves alone (raw bytes
    # to escape, an integer out of range) takes the Struct path below with
    # the values already redacted: redacting again would count twice.

    _compose_payloads: ClassVar[bool] = True  # False: always build the Struct (tests)

    def _cgroup(self, cgroup_id: int) -> _CgroupEntry:
        """The cgroup members of records with ``cgroup_id``: resolved and
        redacted once per id (its redaction is counted once), kept in a
        table that starts over when full."""
        entry = self._cgroup_table.get(cgroup_id)
        if entry is not None:
            return entry
        info = UNRESOLVED if self._cgroups is None or not cgroup_id else self._cgroups(cgroup_id)
        path, fired = info.path, _NO_RULES
        if path:
            result = self._memo.text(path, "cgroup", False)
            path, fired = result.text, result.fired
        entry = (path, info.container, cgroup_bytes(path, info.container), fired)
        if len(self._cgroup_table) >= CGROUP_TABLE:
            self._cgroup_table.clear()
        self._cgroup_table[cgroup_id] = entry
        return entry

    def _map_file(self, event: FileEvent) -> EvidenceRecord:
        r = redact_file(self._memo, event)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(r.fired, cgroup[3])
        op = file_operation(event.op, event.flags)
        data = (
            file_bytes(event, op, r._replace(fired=fired), cgroup[2])
            if self._compose_payloads and cgroup[2] is not None
            else None
        )
        if data is None:
            redacted = msgspec.structs.replace(
                event, comm=r.comm, path=r.path, path2=r.path2, abs_path=r.abs_path,
                abs_path2=r.abs_path2,
            )  # fmt: skip
            return self._file(redacted, fired, cgroup)
        # The subject is the absolute path, else the path as passed (valid
        # text: it was composed), else the pid.
        shown = r.abs_path or r.path
        subject = b',"subject":' + json_text(shown) if shown else b',"subject":"pid/%d"' % event.pid
        return self._compose(_FILE_TYPES.get(op) or file_type(op), subject, data, event.ts_ns)

    def _map_exec(self, event: ExecEvent) -> EvidenceRecord:
        comm, filename, argv, cwd, exe, fired = redact_exec(self._memo, event)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(fired, cgroup[3])
        data = (
            exec_bytes(event, comm, filename, argv, cwd, exe, fired, cgroup[2])
            if self._compose_payloads and cgroup[2] is not None
            else None
        )
        if data is None:
            redacted = msgspec.structs.replace(
                event, comm=comm, filename=filename, argv=argv, cwd=cwd, exe=exe
            )
            return self._exec(redacted, fired, cgroup)
        return self._compose(TYPE_EXEC, b',"subject":"pid/%d"' % event.pid, data, event.ts_ns)

    def _map_fork(self, event: ForkEvent) -> EvidenceRecord:
        comm = redact_comm(self._memo, event.comm)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(comm.fired, cgroup[3])
        data = (
            fork_bytes(event, comm.text, fired, cgroup[2])
            if self._compose_payloads and cgroup[2] is not None
            else None
        )
        if data is None:
            return self._fork(msgspec.structs.replace(event, comm=comm.text), fired, cgroup)
        subject = b',"subject":"pid/%d"' % event.child_pid  # the new process
        return self._compose(TYPE_FORK, subject, data, event.ts_ns)

    def _map_exit(self, event: ExitEvent) -> EvidenceRecord:
        comm = redact_comm(self._memo, event.comm)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(comm.fired, cgroup[3])
        data = (
            exit_bytes(event, comm.text, fired, cgroup[2])
            if self._compose_payloads and cgroup[2] is not None
            else None
        )
        if data is None:
            return self._exit(msgspec.structs.replace(event, comm=comm.text), fired, cgroup)
        return self._compose(TYPE_EXIT, b',"subject":"pid/%d"' % event.pid, data, event.ts_ns)

    def _map_net(self, event: NetEvent) -> EvidenceRecord:
        comm, endpoint, fired = redact_net(self._memo, event)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(fired, cgroup[3])
        data = (
            net_bytes(event, comm, endpoint, fired, cgroup[2])
            if self._compose_payloads and cgroup[2] is not None
            else None
        )
        if data is None:
            redacted = msgspec.structs.replace(event, comm=comm, endpoint=endpoint)
            return self._net(redacted, fired, cgroup)
        subject = b',"subject":"pid/%d"' % event.pid
        return self._compose(net_type(event.op), subject, data, event.ts_ns)

    def _map_uring(self, event: UringEvent) -> EvidenceRecord:
        comm, path, path2, abs_path, endpoint, fired = redact_uring(self._memo, event)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(fired, cgroup[3])
        redacted = msgspec.structs.replace(
            event, comm=comm, path=path, path2=path2, abs_path=abs_path, endpoint=endpoint
        )
        return self._uring(redacted, fired, cgroup)

    def _map_call(self, event: CallEvent) -> EvidenceRecord:
        # Rare (privilege changes, mounts, signals to others): always the Struct path.
        comm, text, fired = redact_call(self._memo, event)
        cgroup = self._cgroup(event.cgroup_id)
        fired = _with(fired, cgroup[3])
        return self._call(msgspec.structs.replace(event, comm=comm, text=text), fired, cgroup)

    def _map_seen(self, event: ProcessSeen) -> EvidenceRecord:
        comm, exe, cmdline, fired = redact_seen(self._memo, event)
        return self._seen(
            msgspec.structs.replace(event, comm=comm, exe=exe, cmdline=cmdline), fired
        )

    # The Struct path: each takes the event already redacted, and the names
    # of the rules that changed it.

    def _exec(
        self, event: ExecEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        data = ExecData(
            **_header(event, fired, cgroup),
            ret=_int53(event.ret, "ret"),
            filename=event.filename,
            argv=list(event.argv),
            argv_truncated=event.argv_truncated,
            args_cut=list(event.args_cut),
            argv_more=event.argv_more,
            filename_cut=event.filename_cut,
            execveat=event.at,
            ppid=event.ppid,
            euid=event.euid,
            egid=event.egid,
            loginuid=event.loginuid,
            cwd=event.cwd,
            cwd_flags=list(path_flag_names(event.cwd_flags)),
            exe=event.exe,
            exe_flags=list(path_flag_names(event.exe_flags)),
            fileless=event.fileless,
            exe_memfd=event.exe_memfd,
            unresolved=list(event.unresolved),
        )
        return self._emit(TYPE_EXEC, f"pid/{event.pid}", data, event.ts_ns)

    def _fork(
        self, event: ForkEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        data = ForkData(
            **_header(event, fired, cgroup),
            child_pid=event.child_pid,
            clone_flags=_u64(event.clone_flags),
        )
        # The subject is what the event is about: the new process.
        return self._emit(TYPE_FORK, f"pid/{event.child_pid}", data, event.ts_ns)

    def _exit(
        self, event: ExitEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        data = ExitData(
            **_header(event, fired, cgroup),
            exit_code=event.exit_code if event.have_code else None,
            signal=event.signal if event.have_signal else None,
        )
        return self._emit(TYPE_EXIT, f"pid/{event.pid}", data, event.ts_ns)

    def _call(
        self, event: CallEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        text = event.text
        data = CallData(
            **_header(event, fired, cgroup),
            op=event.op,
            syscall=event.syscall,
            ret=_int53(event.ret, "ret"),
            args={name: _u64(value) for name, value in event.args.items()},
            text_cut=list(event.text_cut),
            unreadable=list(event.unreadable),
            ids_before=event.ids_before,
            ids_after=event.ids_after,
            caps_before=_u64_dict(event.caps_before),
            caps_after=_u64_dict(event.caps_after),
            source=text.get("source"),
            target=text.get("target"),
            fstype=text.get("fstype"),
            params=text.get("params"),
            name=text.get("name"),
        )
        return self._emit(call_type(family_of(event.op)), f"pid/{event.pid}", data, event.ts_ns)

    def _file(
        self, event: FileEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        op = file_operation(event.op, event.flags)
        rename = op in TWO_PATH_OPS
        count = event.count
        data = FileData(
            **_header(event, fired, cgroup),
            op=op,
            syscall=event.syscall,
            ret=_int53(event.ret, "ret"),
            dfd=event.dfd,
            path=event.path,
            path_cut=event.path_cut,
            dfd2=event.dfd2 if rename else None,
            path2=event.path2 if rename else None,
            path2_cut=event.path2_cut if rename else None,
            flags=event.flags,
            mode=event.mode,
            abs_path=event.abs_path,
            abs_flags=list(path_flag_names(event.abs_flags)),
            abs_path2=event.abs_path2 if rename else None,
            abs2_flags=list(path_flag_names(event.abs2_flags)) if rename else None,
            owner=_int53(event.owner, "owner") if event.owner != -1 else None,
            group=_int53(event.group, "group") if event.group != -1 else None,
            count=count,
            last_ts_ns=str(event.last_ts_ns) if count > 1 else None,
        )
        # The envelope's subject is the absolute path (else the path as
        # passed), in escape form if it needs one (data.escaped then names it).
        subject = escape_json(event.abs_path or event.path)[0] or f"pid/{event.pid}"
        return self._emit(file_type(op), subject, data, event.ts_ns)

    def _net(
        self, event: NetEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        endpoint = event.endpoint
        count = event.count
        data = NetData(
            **_header(event, fired, cgroup),
            op=event.op,
            ret=_int53(event.ret, "ret"),
            fd=event.fd,
            endpoint=None
            if endpoint is None
            else EndpointData(family=endpoint.family, address=endpoint.address, port=endpoint.port),
            backlog=event.backlog if event.op == "listen" else None,
            count=count,
            last_ts_ns=str(event.last_ts_ns) if count > 1 else None,
            proto=event.proto or None,
            messages=event.messages if event.op in SEND_OPS else None,
            more_messages=event.more_messages,
            peer_from_socket=event.peer_from_socket,
            outcome=event.outcome or None,
            unchecked=event.unchecked,
        )
        return self._emit(net_type(event.op), f"pid/{event.pid}", data, event.ts_ns)

    def _uring(
        self, event: UringEvent, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
    ) -> EvidenceRecord:
        op = event.op
        named = op in PATH_OPS
        two = op in URING_TWO_PATH_OPS
        opened = op in OPEN_OPS
        endpoint = event.endpoint
        data = UringData(
            **_header(event, fired, cgroup),
            op=op,
            opcode=event.opcode,
            res=_int53(event.res, "res"),
            user_data=str(event.user_data),
            complete_ns=str(event.complete_ns),
            fd=event.fd,
            dfd=event.dfd if named else None,
            path=event.path if named else None,
            path_cut=event.path_cut if named else None,
            dfd2=event.dfd2 if two else None,
            path2=event.path2 if two else None,
            path2_cut=event.path2_cut if two else None,
            abs_path=event.abs_path or None,
            abs_flags=list(path_flag_names(event.abs_flags)) if opened else None,
            op_flags=_u64(event.op_flags),
            mode=event.mode,
            cflags=event.cflags,
            endpoint=None
            if endpoint is None
            else EndpointData(family=endpoint.family, address=endpoint.address, port=endpoint.port),
            unpaired=event.unpaired,
            sqpoll=event.sqpoll,
            fixed_file=event.fixed_file,
            direct=event.direct,
            no_layout=event.no_layout,
        )
        # The subject: the file when there is one (absolute first), else the process.
        subject = escape_json(event.abs_path or event.path)[0] or f"pid/{event.pid}"
        return self._emit(TYPE_URING, subject, data, event.ts_ns)

    def _syscalls(self, event: SyscallCounts) -> EvidenceRecord:
        raw = event.counts
        values = raw.values()
        try:  # the usual table: str names, ASCII, int counts within +-(2**53 - 1)
            plain = (
                set(map(type, values)) <= _INT_ONLY
                and min(values, default=0) >= -MAX_SAFE_INTEGER
                and max(values, default=0) <= MAX_SAFE_INTEGER
                and "".join(raw).isascii()
            )
        except TypeError:  # a name that is not a str
            plain = False
        if plain and self._compose_payloads:
            # What check_plain would pass, written as the Struct would be.
            data = b'{"counts":%s,"final":%s,"pid":%d}' % (
                json_text(raw),
                b"true" if event.final else b"false",
                event.pid,
            )
            return self._compose(TYPE_SYSCALLS, b',"subject":"pid/%d"' % event.pid, data, None)
        counts = {str(name): _u64(count) for name, count in raw.items()}
        check_plain(counts, "$.data.counts")  # names from the syscall table: ASCII
        payload = SyscallsData(pid=event.pid, counts=counts, final=event.final)
        return self._emit(TYPE_SYSCALLS, f"pid/{event.pid}", payload, None)

    def _seen(self, event: ProcessSeen, fired: tuple[str, ...]) -> EvidenceRecord:
        data = SeenData(
            pid=event.pid,
            ppid=event.ppid,
            comm=event.comm,
            exe=event.exe,
            cmdline=list(event.cmdline),
            uid=event.uid,
            user=event.user,
            start_time_ms=_epoch_ms(event.start_time),
            preexisting=event.preexisting,
            redacted=list(fired),
        )
        return self._emit(TYPE_SEEN, f"pid/{event.pid}", data, None)

    # --- helpers -------------------------------------------------------------------

    def wall_ns(self, ts_ns: int) -> int:
        """The wall-clock time (epoch ns) of a kernel timestamp, by the anchor."""
        return self.anchor.wall_ns + (ts_ns - self.anchor.boottime_ns)

    def _emit(
        self, type_: str, subject: str | None, data: Payload, ts_ns: int | None
    ) -> EvidenceRecord:
        """Make the next record from a payload Struct, encoding it once."""
        if not self._anchor_taken and type_ != TYPE_ANCHOR:
            raise MapperStateError(
                "take anchor_record() first: record 0 of every stream is the anchor"
            )
        data, data_bytes = encode_payload(data)
        member = b"" if subject is None else b',"subject":' + _ENCODER.encode(subject)
        return self._compose(type_, member, data_bytes, ts_ns, data)

    def _compose(
        self,
        type_: str,
        subject: bytes,
        data: bytes,
        ts_ns: int | None,
        payload: Payload | None = None,
    ) -> EvidenceRecord:
        """Make the next record around its payload's canonical bytes ``data``:
        ``subject`` is the subject member (``b',"subject":"pid/7"'``, or
        empty), ``payload`` the Struct if one was built (else the record
        decodes it from its bytes when asked). The CloudEvent's members in key
        order (``data``, ``datacontenttype``, ``id``, ``source``,
        ``specversion``, ``subject``, ``thbootid``, ``thhash``, ``thhost``,
        ``thproducer``, ``thseq``, ``thversion``, ``time``, ``traceparent``,
        ``tracestate``, ``type``), ``None`` ones left out as
        :class:`CloudEvent` leaves them out: the same bytes msgspec writes for
        the :class:`CloudEvent` (the tests hold the two equal, and both to
        RFC 8785), without building it. Everything that can fail runs before
        the seq is used."""
        if not self._anchor_taken and type_ != TYPE_ANCHOR:
            raise MapperStateError(
                "take anchor_record() first: record 0 of every stream is the anchor"
            )
        if ts_ns is None:
            when = self._latest_ns
        elif type(ts_ns) is int:
            when = ts_ns
        else:
            raise ValueError(f"ts_ns must be an int, got {ts_ns!r}")
        second, nanos = divmod(self._wall_offset + when, _NS_PER_SECOND)
        if second != self._second:
            # The calendar part, once per second (raises outside years 1 to 9999).
            text = format_rfc3339_ns(second * _NS_PER_SECOND).encode()
            self._second_text = text[: text.index(b".") + 1]
            self._second = second
        type_json = self._type_json.get(type_)
        if type_json is None:
            type_json = self._type_json[type_] = _ENCODER.encode(type_)
        seq = self._next_seq
        reset, update, digest = self._hasher
        reset()
        update(data)
        thhash = _hex(digest())
        # The anchor makes ids unique per run (two runs on one boot number
        # their records from 0 alike) and stays the same when the same
        # capture is mapped again, so a retried record keeps its id. blake3's
        # output is extendable: its first 16 bytes are the 32-byte digest's.
        reset()
        update(b'%s%d,%s,"%s"]' % (self._identity_prefix, seq, type_json, thhash))
        record_id = digest(_ID_BYTES).hex()
        body = self._format % (
            data,
            record_id.encode(),
            subject,
            thhash,
            seq,
            self._second_text,
            nanos,
            type_json,
        )
        self._next_seq = seq + 1
        if ts_ns is not None and ts_ns > self._latest_ns:
            self._latest_ns = ts_ns
        return _tuple_new(EvidenceRecord, (type_, record_id, payload, body))


def _header(
    event: EventBase, fired: tuple[str, ...], cgroup: _CgroupEntry = _NO_ENTRY
) -> dict[str, Any]:
    """The fields every kernel record's payload starts with (``_Kernel``)."""
    return {
        "pid": event.pid,
        "tid": event.tid,
        "uid": event.uid,
        "gid": event.gid,
        "cgroup_id": str(event.cgroup_id),
        "cgroup": cgroup[0],
        "container": cgroup[1],
        "comm": event.comm,
        "ts_ns": str(event.ts_ns),
        "redacted": list(fired),
    }


def _u64(value: int) -> int | str:
    """An integer as is if every JSON parser reads it exactly, else as a decimal string."""
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)


def _u64_dict(values: Mapping[str, int] | None) -> dict[str, int | str] | None:
    return None if values is None else {name: _u64(value) for name, value in values.items()}


def _int53(value: int, name: str) -> int:
    """A kernel integer the record holds as a JSON number: refused outside
    +-(2**53 - 1) rather than written in a form some parser would round."""
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise CanonicalError(f"$.data.{name}", f"integer {value} is outside +-(2**53 - 1)")


def _plain_dict(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A free-form mapping for a payload, held to the canonical domain."""
    plain = dict(value)
    check_plain(plain, path)
    return plain


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
