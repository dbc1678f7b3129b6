"""AggregatingSink: folds events into a per-process Profile, in bounded memory.

Caps (all counted when hit, and the counts are in the profile):
  - ``max_processes``: processes held, live or exited.
  - ``max_files`` / ``max_endpoints`` / ``max_execs`` / ``max_calls`` per
    process: distinct file records, network records, exec attempts and
    security-relevant call records kept.
  - ``max_total_files`` / ``max_total_endpoints`` / ``max_total_execs`` /
    ``max_total_calls``: the same records over all processes held.
  - ``max_bytes``: the estimated memory of everything held (see
    :func:`text_bytes` and the ``*_BYTES`` constants): what bounds the sink
    whatever the paths and argv an attacker picks.
  - ``max_notes``: capture notes kept.

When a process-wide cap is full, the oldest exited process is evicted to
make room (the snapshot keeps what ran most recently, and everything still
running); only when no exited process is left is the new process or record
refused. Either way the eviction is counted, in the profile's ``evictions``
and in :meth:`AggregatingSink.status`.

Aggregation is deterministic: the same events in the same order give the
same Profile, byte for byte (given the same cgroup answers).

Cgroups: with a :class:`~agent.capture.cgroups.CgroupResolver`, each
process carries its cgroup's path and container. Folding never does I/O for
it: a process whose cgroup id changes takes the resolver's cached answer,
or notes the id for :meth:`AggregatingSink.resolve_cgroups` (the daemon
calls it a few times a second, off the drain; a snapshot calls it for what
is left). Without a resolver the fields stay None.
"""

from __future__ import annotations

import errno as errno_names
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from agent.capture import calls as call_specs
from agent.capture.cgroups import CgroupInfo, CgroupResolver
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
    SyscallCounts,
    UringEvent,
    event_count,
    kind_of,
)
from agent.capture.kinds import (
    AT_FDCWD,
    O_ACCMODE,
    O_APPEND,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_TRUNC,
    PATH_CUT,
    PATH_JOINED,
    PATH_NAME_CUT,
    PATH_OFF,
    SEND_OPS,
    TWO_PATH_OPS,
    file_operation,
    path_flag_names,
)
from agent.capture.uring_facts import as_file_event, as_net_event
from agent.sinks.base import SinkCounts
from agent.sinks.profile import (
    PROFILE_VERSION,
    CallRecord,
    ExecRecord,
    FileRecord,
    NetRecord,
    ProcessProfile,
    Profile,
    signal_name,
)

EINPROGRESS = errno_names.EINPROGRESS

#: What the held objects cost, besides their text, in bytes (CPython 3.11 on
#: 64 bits, measured with tracemalloc; tests/test_aggregating.py checks that
#: the estimate stays close to what is really allocated). A process: its
#: record, its empty dicts and list, its places in the sink's indexes.
PROCESS_BYTES = 900
#: A file record: the record, its key tuple, its slot in the process's dict.
FILE_BYTES = 260
#: A network record: the record, its key, its slot, the endpoint.
ENDPOINT_BYTES = 300
#: An exec record, plus 8 per argv entry (its list).
EXEC_BYTES = 150
#: A call record: the record, its key, its arg and text dicts.
CALL_BYTES = 600
#: One syscall's count (held compactly: a name pointer and a u64).
SYSCALL_BYTES = 16
#: A str's own overhead (the ASCII str header and its NUL).
STR_BYTES = 50

#: Eviction counters, in the order the profile lists them.
EVICTION_KINDS = ("processes", "files", "endpoints", "execs", "calls", "notes")


def text_bytes(*texts: str) -> int:
    """Estimated bytes of ``texts`` as Python strs: header plus 1 byte per
    character, 4 if any is not ASCII (an attacker's path is what it is). Pure."""
    return sum(STR_BYTES + len(t) * (1 if t.isascii() else 4) for t in texts)


def errno_name(ret: int) -> str:
    return errno_names.errorcode.get(-ret, f"E{-ret}")


#: The words of :func:`open_access`, in sorted order; a record keeps them as bits.
ACCESS_WORDS = ("append", "create", "directory", "exclusive-create", "read", "truncate", "write")
_ACCESS_BIT = {word: 1 << i for i, word in enumerate(ACCESS_WORDS)}


def open_access(flags: int) -> list[str]:
    """What open flags ask for, as words. Pure."""
    mode = flags & O_ACCMODE
    words = []
    if mode in (0, 2):
        words.append("read")
    if mode in (1, 2):
        words.append("write")
    if flags & O_CREAT:
        words.append("exclusive-create" if flags & O_EXCL else "create")
    if flags & O_TRUNC and mode:
        words.append("truncate")
    if flags & O_APPEND:
        words.append("append")
    if flags & O_DIRECTORY:
        words.append("directory")
    return words


#: The flag bits :func:`open_access` reads: the access bits of every open
#: depend only on these, so a table of them is bounded by construction.
_ACCESS_FLAGS = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECTORY
_ACCESS_BITS: dict[int, int] = {}


def access_bits(flags: int) -> int:
    """:func:`open_access` as bits (:data:`ACCESS_WORDS` order), memoised
    on the flags it reads (7 bits: at most 128 entries). Pure."""
    relevant = flags & _ACCESS_FLAGS
    bits = _ACCESS_BITS.get(relevant)
    if bits is None:
        bits = 0
        for word in open_access(relevant):
            bits |= _ACCESS_BIT[word]
        _ACCESS_BITS[relevant] = bits
    return bits


def display_path(path: str, dfd: int) -> str:
    """A path as the profile shows it: ``fd:N/rel`` when relative to a
    directory fd, ``fd:N`` for an operation on an open file (no path)."""
    if path.startswith("/") or dfd == AT_FDCWD:
        return path
    if not path:
        return f"fd:{dfd}"
    return f"fd:{dfd}/{path}"


#: Resolution flags worth showing on a profile's file records: all but
#: "joined" (how the exact path of a name that may not exist was found, not
#: a doubt) and "off" (resolution turned off for the whole run: the paths
#: are then as passed, which the record says by having no ``passed``).
_SHOWN_FLAGS = ~(PATH_JOINED | PATH_OFF)


def shown_path(
    abs_path: str, abs_flags: int, passed: str, passed_cut: bool, dfd: int
) -> tuple[str, bool, str, int]:
    """What a profile shows of one path of a file event: (path, cut, the
    name as passed when it differs, flags). The absolute path first; the
    name as passed (``fd:N/`` for a dirfd) when it was not resolved."""
    if abs_path:
        shown_passed = display_path(passed, dfd) if passed and passed != abs_path else ""
        cut = bool(abs_flags & (PATH_CUT | PATH_NAME_CUT))
        return abs_path, cut, shown_passed, abs_flags & _SHOWN_FLAGS
    return display_path(passed, dfd), passed_cut, "", abs_flags & _SHOWN_FLAGS


class AggregateStatus(msgspec.Struct, frozen=True):
    """What the aggregate holds now, against its caps, and what it evicted.

    ``held`` and ``caps``: processes (``live`` of them running), files,
    endpoints and execs (over all processes), ``bytes`` (estimated). Only
    ``evictions`` are counters (they only grow); the rest are gauges. In
    ``/v1/stats`` and the metrics.
    """

    held: dict[str, int]
    caps: dict[str, int]
    evictions: dict[str, int]
    #: Running processes found gone without an exit record (a counter).
    reaped: int = 0


@dataclass(slots=True)
class _FileAgg:
    path: str
    op: str
    access: int  # bits of ACCESS_WORDS
    count: int
    first_ns: int
    target: str
    mode: int | None
    error: str
    path_cut: bool
    target_cut: bool
    passed: str
    target_passed: str
    path_flags: int
    target_flags: int
    owner: int | None = None
    group: int | None = None


_CallKey = tuple[object, ...]


@dataclass(slots=True)
class _CallAgg:
    event: CallEvent  # the first one
    count: int
    error: str


@dataclass(slots=True)
class _NetAgg:
    """One profile line. For a connect line without error, ``pending``
    counts its connects that returned EINPROGRESS, ``established`` and
    ``failed_later`` the connect_results that said how such a connect ended
    (a failed one is also counted on its own error line): the line's
    count and result are worked out from them at freeze, so they come out
    the same whatever order the records arrive in (the fold delivers
    repeats late)."""

    op: str
    endpoint: Endpoint | None
    count: int
    first_ns: int
    result: str
    error: str
    proto: str = ""
    pending: int = 0
    established: int = 0
    failed_later: int = 0

    def frozen_count_and_result(self) -> tuple[int, str]:
        if self.op != "connect" or self.error:
            return self.count, self.result
        count = self.count - self.failed_later
        if not self.pending:
            return count, self.result
        unresolved = self.pending - self.established - self.failed_later
        return count, "in-progress" if unresolved > 0 else "established"


_NO_NAMES: tuple[str, ...] = ()


def paths_bytes(*paths: str) -> int:
    """Estimated bytes of the resolved paths an exec carries (cwd, exe):
    nothing for an empty one (the one shared empty str). Pure."""
    return sum(text_bytes(p) for p in paths if p)


_EMPTY_IMAGE = text_bytes("")  # no exe, no argv: what a new process's image costs


@dataclass(slots=True)
class _Proc:
    pid: int
    ppid: int | None = None
    comm: str = ""
    exe: str = ""
    argv: tuple[str, ...] = ()
    argv_cut: tuple[int, ...] = ()
    argv_more: bool = False
    cwd: str = ""  # at its last exec, as the kernel resolved it
    exe_path: str = ""
    euid: int | None = None
    egid: int | None = None
    loginuid: int | None = None
    fileless: bool = False
    uid: int = 0
    gid: int = 0
    cgroup_id: int = 0
    cgroup: CgroupInfo | None = None  # None: not resolved yet (or no resolver)
    started_ns: int | None = None
    exited_ns: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    preexisting: bool = False
    execs: list[ExecRecord] = field(default_factory=list)
    files: dict[tuple[str, str, str, str, int, int], _FileAgg] = field(default_factory=dict)
    network: dict[tuple[str, Endpoint | None, str], _NetAgg] = field(default_factory=dict)
    calls: dict[_CallKey, _CallAgg] = field(default_factory=dict)
    bound: dict[int, Endpoint] = field(default_factory=dict)  # fd -> bind address
    # The last syscall reading, compactly: names (the decoder's own strs) and counts.
    syscall_names: tuple[str, ...] = _NO_NAMES
    syscall_counts: array[int] | None = None
    # io_uring completions per op name (bounded: op names are a closed set).
    uring: Counter[str] = field(default_factory=Counter)
    evicted: Counter[str] = field(default_factory=Counter)
    #: Estimated bytes held for this process (its share of the sink's total).
    cost: int = 0
    #: The part of ``cost`` that is its image (exe and argv), replaced on exec.
    image_cost: int = 0
    #: Retired by :meth:`AggregatingSink.reap`: found gone, its exit never seen.
    reaped: bool = False


class AggregatingSink:
    """The default sink: builds a :class:`Profile`. Never waits.

    The defaults suit ``tracehound profile`` (one command, a complete
    profile wanted): up to 32768 processes and 256 MiB. The daemon runs for
    weeks and uses :meth:`for_daemon`.
    """

    def __init__(
        self,
        *,
        name: str = "aggregating",
        max_processes: int = 32768,
        max_files: int = 4096,
        max_endpoints: int = 1024,
        max_execs: int = 64,
        max_calls: int = 256,
        max_notes: int = 256,
        max_total_files: int = 1 << 18,
        max_total_endpoints: int = 1 << 16,
        max_total_execs: int = 1 << 16,
        max_total_calls: int = 1 << 16,
        max_bytes: int = 256 << 20,
        boot_offset_ns: int | None = None,
        cgroups: CgroupResolver | None = None,
    ) -> None:
        self.name = name
        #: CLOCK_REALTIME - CLOCK_BOOTTIME at start, for the profile's readers
        #: (agent.wallclock); measured by the caller, never read here.
        self.boot_offset_ns = boot_offset_ns
        #: Resolves cgroup ids to paths and containers; None: not at all.
        self.cgroups = cgroups
        self.max_processes = max_processes
        self.max_files = max_files
        self.max_endpoints = max_endpoints
        self.max_execs = max_execs
        self.max_calls = max_calls
        self.max_notes = max_notes
        # Per-process caps times processes is no bound at all: the totals
        # are capped too, and so are the bytes all of it takes.
        self.max_total = {"files": max_total_files, "endpoints": max_total_endpoints,
                          "execs": max_total_execs, "calls": max_total_calls}  # fmt: skip
        self.max_bytes = max_bytes
        self.totals: Counter[str] = Counter()
        self.held_bytes = 0
        self._live: dict[int, _Proc] = {}
        self._exited: OrderedDict[int, _Proc] = OrderedDict()  # keyed by a serial
        self._serial = 0
        self._last_exited: dict[int, _Proc] = {}  # pid -> its latest exited process
        self._notes: list[str] = []
        self.evictions: Counter[str] = Counter()
        self.reaped = 0
        self.delivered: Counter[str] = Counter()
        #: Events that could not be folded in (a bug, never an input): counted.
        self.dropped: Counter[str] = Counter()
        self._finished = False

    @classmethod
    def for_daemon(
        cls, cgroups: CgroupResolver | None = None, *, boot_offset_ns: int | None = None
    ) -> AggregatingSink:
        """The sink of ``tracehound run``: a window on what ran lately (the
        evidence log keeps everything), in 4 MiB (an estimate: with pymalloc's
        overhead and a snapshot's copies in flight, about 20 MB of RSS at
        most, which bench/soak.py measures). At the soak's mix, about 6 KiB
        per short-lived process with its files and syscalls, that is the last
        600-800 processes, and every one still running. Per process, fewer records
        than ``profile`` keeps, so that a few long-lived processes touching
        ever new paths cannot take the whole budget: 512 files (about
        200 KiB), 256 endpoints, 32 execs."""
        return cls(max_processes=4096, max_files=512, max_endpoints=256, max_execs=32,
                   max_calls=64, max_total_files=1 << 15, max_total_endpoints=1 << 13,
                   max_total_execs=1 << 13, max_total_calls=1 << 13, max_bytes=4 << 20,
                   boot_offset_ns=boot_offset_ns, cgroups=cgroups)  # fmt: skip

    # -- EventSink -----------------------------------------------------------
    async def record(self, event: Event) -> None:
        self._record(event)

    async def record_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self._record(event)

    def _record(self, event: Event) -> None:
        try:
            self.apply(event)
        except Exception:  # a bug folding one event must cost that event, not capture
            kind = kind_of(event)
            n = event_count(event)
            self.delivered[kind] -= n
            self.dropped[kind] += n

    def apply(self, event: Event) -> None:
        """Fold one event in (synchronous: this sink never waits). A folded
        event (``count`` above 1) counts as that many, in the books and in
        its file or network record."""
        self.delivered[kind_of(event)] += event_count(event)
        if isinstance(event, FileEvent):
            self._file(event)
        elif isinstance(event, SyscallCounts):
            self._syscalls(event)
        elif isinstance(event, NetEvent):
            self._net(event)
        elif isinstance(event, ExecEvent):
            self._exec(event)
        elif isinstance(event, ForkEvent):
            self._fork(event)
        elif isinstance(event, UringEvent):
            self._uring(event)
        elif isinstance(event, ExitEvent):
            self._exit(event)
        elif isinstance(event, CallEvent):
            self._call(event)
        else:
            self._seen(event)

    def note(self, message: str) -> None:
        if len(self._notes) < self.max_notes:
            self._notes.append(message)
        else:
            self.evictions["notes"] += 1

    def accounting(self) -> dict[str, SinkCounts]:
        kinds = set(self.delivered) | set(self.dropped)
        return {self.name: {k: (self.delivered[k], self.dropped[k]) for k in kinds}}

    def finish(self) -> Profile:
        self._finished = True
        return self.snapshot()

    def status(self) -> AggregateStatus:
        """What is held now against the caps, and the evictions so far. Cheap:
        counters only, nothing is walked."""
        return AggregateStatus(
            held={
                "processes": len(self._live) + len(self._exited),
                "live": len(self._live),
                **{what: self.totals[what] for what in self.max_total},
                "bytes": self.held_bytes,
            },
            caps={"processes": self.max_processes, **self.max_total, "bytes": self.max_bytes},
            evictions={k: self.evictions.get(k, 0) for k in EVICTION_KINDS},
            reaped=self.reaped,
        )

    def running(self) -> list[tuple[int, int | None]]:
        """``(pid, started_ns)`` of every process held as running, for a
        caller that can look at /proc (see :meth:`reap`)."""
        return [(p.pid, p.started_ns) for p in self._live.values()]

    def reap(self, gone: Iterable[tuple[int, int | None]], now_ns: int) -> int:
        """Retire the running processes ``gone`` (``(pid, started_ns)`` as
        :meth:`running` gave them) that the caller found no longer exist;
        how many were.

        Their exit record was lost in the kernel, or they were seeded and
        never seen to exit. Held as running they would never be evicted: on a
        host that loses exits they would fill ``max_processes`` and every new
        process would be refused. ``now_ns`` (CLOCK_BOOTTIME, the events'
        clock) becomes their exit time: "gone by then". An exit record that
        arrives later still fills in the code. A pair that no longer matches
        (the process exited meanwhile, or its pid was reused) is left alone.
        """
        count = 0
        for pid, started_ns in gone:
            proc = self._live.get(pid)
            if proc is None or proc.started_ns != started_ns:
                continue
            del self._live[pid]
            proc.exited_ns = now_ns
            proc.reaped = True
            proc.bound.clear()
            self._retire(proc)
            count += 1
        self.reaped += count
        return count

    def resolve_cgroups(self, limit: int | None = None) -> int:
        """Resolve the cgroup ids noted since the last call (at most
        ``limit``; I/O, a few syscalls each); how many were."""
        if self.cgroups is None:
            return 0
        return self.cgroups.resolve_pending(limit)

    def _cgroup_of(self, cgroup_id: int) -> CgroupInfo | None:
        """The cached answer for ``cgroup_id``, or None with the id noted."""
        resolver = self.cgroups
        if resolver is None or not cgroup_id:
            return None
        info = resolver.cached(cgroup_id)
        if info is None:
            resolver.note(cgroup_id)
        return info

    def _set_cgroup(self, proc: _Proc, cgroup_id: int) -> None:
        if proc.cgroup_id != cgroup_id or (proc.cgroup is None and cgroup_id):
            proc.cgroup_id = cgroup_id
            proc.cgroup = self._cgroup_of(cgroup_id)

    # -- what the profile says ----------------------------------------------
    def snapshot(self) -> Profile:
        """The profile so far (finish() is the last one). Deterministic."""
        self.resolve_cgroups()
        procs = [*self._exited.values(), *self._live.values()]
        for p in procs:
            if p.cgroup is None and p.cgroup_id:
                p.cgroup = self._cgroup_of(p.cgroup_id)
        procs.sort(key=lambda p: (p.started_ns if p.started_ns is not None else -1, p.pid))
        return Profile(
            version=PROFILE_VERSION,
            command=[],
            root_pid=None,
            exit_status=None,
            processes=[self._freeze(p) for p in procs],
            evictions={k: self.evictions.get(k, 0) for k in EVICTION_KINDS},
            probes=[],
            accounting={},
            notes=list(self._notes),
            complete=False,
            boot_offset_ns=self.boot_offset_ns,
        )  # fmt: skip

    @staticmethod
    def _freeze(p: _Proc) -> ProcessProfile:
        files = sorted(p.files.values(), key=lambda f: (f.path, f.op, f.target, f.error))
        nets = sorted(
            p.network.values(),
            key=lambda n: (n.op, n.endpoint is not None, n.endpoint or Endpoint("", ""), n.error),
        )

        def file_rec(f: _FileAgg) -> FileRecord:
            access = [w for w in ACCESS_WORDS if f.access & _ACCESS_BIT[w]]
            return FileRecord(
                path=f.path, op=f.op, access=access, count=f.count,
                first_ns=f.first_ns, target=f.target, mode=f.mode, error=f.error,
                path_cut=f.path_cut, target_cut=f.target_cut,
                owner=f.owner, group=f.group,
                passed=f.passed, target_passed=f.target_passed,
                path_flags=list(path_flag_names(f.path_flags)),
                target_flags=list(path_flag_names(f.target_flags)),
            )  # fmt: skip

        def net_rec(n: _NetAgg) -> NetRecord:
            count, result = n.frozen_count_and_result()
            return NetRecord(n.op, n.endpoint, count, n.first_ns, result, n.error, n.proto)

        # A connect line all of whose connects failed later (their error
        # lines say so), or whose connect records have not come yet: none.
        nets = [n for n in nets if n.frozen_count_and_result()[0] > 0]

        def call_rec(c: _CallAgg) -> CallRecord:
            e = c.event
            return CallRecord(
                op=e.op, family=call_specs.family_of(e.op), args=dict(e.args),
                text=dict(e.text), count=c.count, first_ns=e.ts_ns, error=c.error,
                ids_before=e.ids_before, ids_after=e.ids_after,
                caps_before=e.caps_before, caps_after=e.caps_after,
                text_cut=list(e.text_cut),
            )  # fmt: skip

        # In the order they first happened: a privilege drop before an exec
        # reads as it ran.
        call_list = sorted(p.calls.values(), key=lambda c: (c.event.ts_ns, c.event.tid))

        counts = p.syscall_counts or ()
        cgroup = p.cgroup
        return ProcessProfile(
            pid=p.pid, ppid=p.ppid, comm=p.comm, exe=p.exe, argv=list(p.argv),
            uid=p.uid, gid=p.gid, cgroup_id=p.cgroup_id,
            started_ns=p.started_ns, exited_ns=p.exited_ns,
            exit_code=p.exit_code, exit_signal=p.exit_signal, preexisting=p.preexisting,
            execs=list(p.execs),
            files=[file_rec(f) for f in files if not f.error],
            failed_files=[file_rec(f) for f in files if f.error],
            network=[net_rec(n) for n in nets if not n.error],
            failed_network=[net_rec(n) for n in nets if n.error],
            syscalls=dict(sorted(zip(p.syscall_names, counts, strict=True))),
            uring=dict(sorted(p.uring.items())),
            evicted=dict(sorted(p.evicted.items())),
            argv_cut=list(p.argv_cut), argv_more=p.argv_more,
            cgroup=cgroup.path if cgroup is not None else None,
            container=cgroup.container if cgroup is not None else None,
            calls=[call_rec(c) for c in call_list],
            cwd=p.cwd, exe_path=p.exe_path, euid=p.euid, egid=p.egid, loginuid=p.loginuid,
            fileless=p.fileless,
            exit_signal_name=signal_name(p.exit_signal) if p.exit_signal else None,
        )  # fmt: skip

    # -- the budget ------------------------------------------------------------
    def _make_room(self, cost: int, record: str | None = None) -> bool:
        """Evict the oldest exited processes until ``cost`` more bytes and one
        more ``record`` (files, endpoints, execs; None: one more process) fit.
        False if they cannot: nothing exited is left."""
        while (
            self.held_bytes + cost > self.max_bytes
            or (record is None and len(self._live) + len(self._exited) >= self.max_processes)
            or (record is not None and self.totals[record] >= self.max_total[record])
        ):
            if not self._exited:
                return False
            self._evict_oldest_exited()
        return True

    def _trim(self) -> None:
        """Back under ``max_bytes`` after a charge that is never refused (an
        image, a syscall reading, a process retired over budget): evict the
        oldest exited processes."""
        while self.held_bytes > self.max_bytes and self._exited:
            self._evict_oldest_exited()

    def _charge(self, proc: _Proc, cost: int) -> None:
        proc.cost += cost
        self.held_bytes += cost

    def _set_image(
        self, proc: _Proc, exe: str, argv: tuple[str, ...], cwd: str = "", exe_path: str = ""
    ) -> None:
        """Give ``proc`` a new image; its cost replaces the old one's. Never
        refused (a process's identity is what every other record hangs on):
        the budget makes room the next time anything is added."""
        proc.exe, proc.argv, proc.cwd, proc.exe_path = exe, argv, cwd, exe_path
        cost = text_bytes(exe, *argv) + 8 * len(argv) + paths_bytes(cwd, exe_path)
        self._charge(proc, cost - proc.image_cost)
        proc.image_cost = cost
        self._trim()

    def _evict_oldest_exited(self) -> None:
        _, old = self._exited.popitem(last=False)
        if self._last_exited.get(old.pid) is old:
            del self._last_exited[old.pid]
        self.totals["files"] -= len(old.files)
        self.totals["endpoints"] -= len(old.network)
        self.totals["execs"] -= len(old.execs)
        self.totals["calls"] -= len(old.calls)
        self.held_bytes -= old.cost
        self.evictions["processes"] += 1

    def _room(self, proc: _Proc, what: str, held: int, cap: int, cost: int) -> bool:
        """May ``proc`` hold one more ``what`` costing ``cost`` bytes? If so
        it is charged; if not, the eviction is counted."""
        if held >= cap or not self._make_room(cost, what):
            proc.evicted[what] += 1
            self.evictions[what] += 1
            return False
        self.totals[what] += 1
        self._charge(proc, cost)
        return True

    # -- folding -------------------------------------------------------------
    def _new_proc(self, pid: int) -> _Proc | None:
        """A process record, room made for it; None (counted) if there is none."""
        if not self._make_room(PROCESS_BYTES):
            self.evictions["processes"] += 1
            return None
        proc = _Proc(pid, image_cost=_EMPTY_IMAGE)
        self._charge(proc, PROCESS_BYTES + _EMPTY_IMAGE)
        return proc

    def _proc(self, pid: int, *, create: bool = True) -> _Proc | None:
        proc = self._live.get(pid)
        if proc is not None or not create:
            return proc
        proc = self._new_proc(pid)
        if proc is not None:
            self._live[pid] = proc
        return proc

    def _touch(
        self,
        proc: _Proc,
        event: ExecEvent | FileEvent | NetEvent | ExitEvent | UringEvent | CallEvent,
    ) -> None:
        proc.comm = event.comm
        proc.uid = event.uid
        proc.gid = event.gid
        if proc.cgroup_id != event.cgroup_id:
            self._set_cgroup(proc, event.cgroup_id)

    def _seen(self, event: ProcessSeen) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        proc.ppid = event.ppid
        proc.comm = proc.comm or event.comm
        self._set_image(
            proc, proc.exe or event.exe, proc.argv or event.cmdline, proc.cwd,
            proc.exe_path or event.exe,
        )  # fmt: skip
        proc.uid = event.uid
        proc.preexisting = event.preexisting

    def _fork(self, event: ForkEvent) -> None:
        parent = self._proc(event.pid)
        old = self._live.pop(event.child_pid, None)
        if old is not None:  # pid reused: the old one is gone
            self._retire(old)
        child = self._proc(event.child_pid)
        if child is None:
            return
        child.ppid = event.pid
        child.started_ns = event.ts_ns
        child.comm = event.comm
        child.uid, child.gid = event.uid, event.gid
        self._set_cgroup(child, event.cgroup_id)
        if parent is not None:
            # A fork runs its parent's image until it execs.
            self._set_image(child, parent.exe, parent.argv, parent.cwd, parent.exe_path)
            child.euid, child.egid = parent.euid, parent.egid
            child.loginuid, child.fileless = parent.loginuid, parent.fileless
            child.argv_cut, child.argv_more = parent.argv_cut, parent.argv_more
            if parent.comm == "":
                parent.comm = event.comm

    def _exec(self, event: ExecEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        cost = (
            EXEC_BYTES
            + text_bytes(event.filename, *event.argv)
            + 8 * len(event.argv)
            + paths_bytes(event.cwd, event.exe)
        )
        if self._room(proc, "execs", len(proc.execs), self.max_execs, cost):
            proc.execs.append(
                ExecRecord(
                    ts_ns=event.ts_ns,
                    filename=event.filename,
                    argv=list(event.argv),
                    argv_truncated=event.argv_truncated,
                    error=errno_name(event.ret) if event.ret < 0 else "",
                    filename_cut=event.filename_cut,
                    args_cut=list(event.args_cut),
                    argv_more=event.argv_more,
                    ppid=event.ppid,
                    euid=event.euid,
                    egid=event.egid,
                    loginuid=event.loginuid,
                    cwd=event.cwd,
                    cwd_flags=list(path_flag_names(event.cwd_flags)),
                    exe_path=event.exe,
                    exe_path_flags=list(path_flag_names(event.exe_flags)),
                    fileless=event.fileless,
                    exe_memfd=event.exe_memfd,
                    unresolved=list(event.unresolved),
                )
            )
        if event.ret == 0:
            self._touch(proc, event)
            self._set_image(proc, event.filename, event.argv, event.cwd, event.exe)
            proc.argv_cut, proc.argv_more = event.args_cut, event.argv_more
            if proc.ppid is None:  # not seen forking: the kernel's word for it
                proc.ppid = event.ppid
            proc.euid, proc.egid, proc.loginuid = event.euid, event.egid, event.loginuid
            proc.fileless = event.fileless

    def _exit(self, event: ExitEvent) -> None:
        proc = self._live.pop(event.pid, None)
        late = self._last_exited.get(event.pid)
        if proc is None and late is not None and late.reaped:
            assert late.exited_ns is not None
            if event.ts_ns <= late.exited_ns:
                # It exited before it was found gone, its record delayed: the same one.
                late.reaped = False
                self._set_exit(late, event)
                return
        if proc is None:
            proc = self._new_proc(event.pid)
            if proc is None:
                return
        proc.comm = proc.comm or event.comm
        if proc.cgroup_id != event.cgroup_id:  # the cgroup it ended in: the latest
            self._set_cgroup(proc, event.cgroup_id)
        self._set_exit(proc, event)
        proc.bound.clear()
        self._retire(proc)

    @staticmethod
    def _set_exit(proc: _Proc, event: ExitEvent) -> None:
        proc.exited_ns = event.ts_ns
        proc.exit_code = event.exit_code if event.have_code and not event.have_signal else None
        proc.exit_signal = event.signal if event.have_signal else None

    def _syscalls(self, event: SyscallCounts) -> None:
        # The last reading comes after the exit record: look there too.
        # Counts alone never make a process (a phantom that would never
        # exit); a final reading for a live one means its exit was lost.
        proc = self._live.get(event.pid) or self._last_exited.get(event.pid)
        if proc is None:
            return
        # Never refused: a reading replaces the last one, and the kernel's
        # map bounds what live processes hold; room is made from the exited.
        before = len(proc.syscall_names)
        proc.syscall_names = tuple(event.counts)
        proc.syscall_counts = array("Q", event.counts.values())
        self._charge(proc, SYSCALL_BYTES * (len(proc.syscall_names) - before))
        if event.final and self._live.get(event.pid) is proc:
            del self._live[event.pid]
            self._retire(proc)
        else:
            self._trim()  # may evict proc itself if it exited: it is charged already

    def _retire(self, proc: _Proc) -> None:
        while len(self._live) + len(self._exited) >= self.max_processes and self._exited:
            self._evict_oldest_exited()
        self._serial += 1
        self._exited[self._serial] = proc
        self._last_exited[proc.pid] = proc
        self._trim()

    def _file(self, event: FileEvent) -> None:
        proc = self._live.get(event.pid) or self._proc(event.pid)
        if proc is None:
            return
        if not proc.comm:
            self._touch(proc, event)
        op = event.op
        access = 0
        mode: int | None = None
        if op == "open":
            access = access_bits(event.flags)
            if event.flags & O_CREAT:
                mode = event.mode
        elif op in ("chmod", "mkdir"):
            mode = event.mode
        else:
            op = file_operation(op, event.flags)
        if op == "symlink":
            # A symlink's path is the text the link holds: not resolved against anything.
            path, path_cut, passed, path_flags = event.path, event.path_cut, "", 0
        else:
            path, path_cut, passed, path_flags = shown_path(
                event.abs_path, event.abs_flags, event.path, event.path_cut, event.dfd
            )
        if op in TWO_PATH_OPS:
            target, target_cut, target_passed, target_flags = shown_path(
                event.abs_path2, event.abs2_flags, event.path2, event.path2_cut, event.dfd2
            )
        else:
            target, target_cut, target_passed, target_flags = "", False, "", 0
        error = errno_name(int(event.ret)) if event.ret < 0 else ""
        key = (path, op, target, error, event.owner, event.group)  # chowns apart by ids
        agg = proc.files.get(key)
        if agg is None:
            if len(proc.files) >= self.max_files:  # a flood of new paths: counted, cheaply
                proc.evicted["files"] += 1
                self.evictions["files"] += 1
                return
            cost = FILE_BYTES + text_bytes(path) + (text_bytes(target) if target else 0)
            cost += (text_bytes(passed) if passed else 0) + (
                text_bytes(target_passed) if target_passed else 0
            )
            if not self._room(proc, "files", len(proc.files), self.max_files, cost):
                return
            agg = _FileAgg(
                path, op, 0, 0, event.ts_ns, target, mode, error, path_cut, target_cut,
                passed, target_passed, path_flags, target_flags,
            )  # fmt: skip
            proc.files[key] = agg
        agg.count += event.count
        agg.access |= access
        if mode is not None:
            agg.mode = mode
        if op == "chown":
            agg.owner, agg.group = event.owner, event.group

    def _uring(self, event: UringEvent) -> None:
        """An io_uring completion: counted per op, and an open, unlink,
        rename, mkdir, connect, accept or addressed send folded into the
        files or network list as the syscall's would be
        (:mod:`agent.capture.uring_facts`). An unpaired completion names no
        process reliably (it may be a kworker's): only counted."""
        proc = self._proc(event.pid, create=not event.unpaired)
        if proc is None:
            return
        if not proc.comm and not event.unpaired:
            self._touch(proc, event)
        if event.op not in proc.uring:
            self._charge(proc, SYSCALL_BYTES + text_bytes(event.op))
        proc.uring[event.op] += 1
        if event.unpaired:
            return
        as_file = as_file_event(event)
        if as_file is not None:
            self._file(as_file)
            return
        as_net = as_net_event(event)
        if as_net is not None:
            self._net(as_net)

    def _net(self, event: NetEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        if not proc.comm:
            self._touch(proc, event)
        endpoint = event.endpoint
        if event.op == "bind" and event.ret == 0 and endpoint is not None:
            if len(proc.bound) < self.max_endpoints:
                proc.bound[event.fd] = endpoint
        elif event.op == "listen" and endpoint is None:
            # The kernel names the listening address for TCP (net.listen_addr);
            # otherwise (UNIX sockets) it is the one bound earlier on that fd.
            endpoint = proc.bound.get(event.fd)
        op, n = event.op, event.count
        result, error = "ok", ""
        if op == "connect_result":
            self._connect_result(proc, event)
            return
        if op in SEND_OPS:
            # One line per peer, whichever of the three calls sent to it;
            # counted in datagrams.
            op, n = "send", event.count * max(event.messages, 1)
            if event.ret < 0:
                error = errno_name(event.ret)
        elif event.ret == -EINPROGRESS and op == "connect":
            result = "in-progress"
        elif event.ret < 0:
            error = errno_name(event.ret)
        agg = self._net_agg(proc, op, endpoint, error, result, event)
        if agg is None:
            return
        agg.count += n
        if result == "in-progress":
            agg.pending += n
        if event.proto and not agg.proto:
            agg.proto = event.proto

    def _net_agg(
        self,
        proc: _Proc,
        op: str,
        endpoint: Endpoint | None,
        error: str,
        result: str,
        event: NetEvent,
    ) -> _NetAgg | None:
        """The line of (op, endpoint, error), made (and charged) if new;
        None if there is no room (counted)."""
        key = (op, endpoint, error)
        agg = proc.network.get(key)
        if agg is None:
            cost = ENDPOINT_BYTES + (text_bytes(endpoint.address) if endpoint else 0)
            if not self._room(proc, "endpoints", len(proc.network), self.max_endpoints, cost):
                return None
            agg = _NetAgg(op, endpoint, 0, event.ts_ns, result, error)
            proc.network[key] = agg
        return agg

    def _connect_result(self, proc: _Proc, event: NetEvent) -> None:
        """How a non-blocking connect ended: its connect line says
        established, or hands the connect over to a failed line (the error,
        result ``refused`` or ``failed``)."""
        n = event.count
        line = self._net_agg(proc, "connect", event.endpoint, "", "ok", event)
        if line is not None and not line.proto:
            line.proto = event.proto
        if event.outcome == "established":
            if line is not None:
                line.established += n
            return
        error = errno_name(event.ret) if event.ret < 0 else "unknown"
        failed = self._net_agg(proc, "connect", event.endpoint, error, event.outcome, event)
        if failed is not None:
            failed.count += n
            failed.proto = event.proto
        if line is not None:
            line.failed_later += n

    def _call(self, event: CallEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        if not proc.comm:
            self._touch(proc, event)
        error = errno_name(event.ret) if event.ret < 0 else ""

        def frozen(d: dict[str, int] | None) -> tuple[tuple[str, int], ...] | None:
            return None if d is None else tuple(d.items())

        key: _CallKey = (
            event.op, tuple(event.args.items()), tuple(event.text.items()), error,
            frozen(event.ids_before), frozen(event.ids_after),
            frozen(event.caps_before), frozen(event.caps_after),
        )  # fmt: skip
        agg = proc.calls.get(key)
        if agg is None:
            cost = CALL_BYTES + text_bytes(*event.text.values())
            if not self._room(proc, "calls", len(proc.calls), self.max_calls, cost):
                return
            agg = _CallAgg(event, 0, error)
            proc.calls[key] = agg
        agg.count += 1
        # A process whose credentials changed is now that user.
        if event.ret == 0 and event.ids_after is not None:
            proc.uid = event.ids_after["uid"]
            proc.gid = event.ids_after["gid"]
