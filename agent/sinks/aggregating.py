"""AggregatingSink: folds events into a per-process Profile, in bounded memory.

Caps (all counted when hit, and the counts are in the profile):
  - ``max_processes``: processes held, live or exited.
  - ``max_files`` / ``max_endpoints`` / ``max_execs`` per process: distinct
    file records, network records, exec attempts kept.
  - ``max_total_files`` / ``max_total_endpoints`` / ``max_total_execs``: the
    same records over all processes held.
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
same Profile, byte for byte.
"""

from __future__ import annotations

import errno as errno_names
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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
    SyscallCounts,
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
    file_operation,
    path_flag_names,
)
from agent.sinks.base import SinkCounts
from agent.sinks.profile import (
    PROFILE_VERSION,
    ExecRecord,
    FileRecord,
    NetRecord,
    ProcessProfile,
    Profile,
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
#: One syscall's count (held compactly: a name pointer and a u64).
SYSCALL_BYTES = 16
#: A str's own overhead (the ASCII str header and its NUL).
STR_BYTES = 50

#: Eviction counters, in the order the profile lists them.
EVICTION_KINDS = ("processes", "files", "endpoints", "execs", "notes")


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
    if path.startswith("/") or dfd == AT_FDCWD:
        return path
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


@dataclass(slots=True)
class _NetAgg:
    op: str
    endpoint: Endpoint | None
    count: int
    first_ns: int
    result: str
    error: str


_NO_NAMES: tuple[str, ...] = ()
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
    uid: int = 0
    gid: int = 0
    cgroup_id: int = 0
    started_ns: int | None = None
    exited_ns: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    preexisting: bool = False
    execs: list[ExecRecord] = field(default_factory=list)
    files: dict[tuple[str, str, str, str], _FileAgg] = field(default_factory=dict)
    network: dict[tuple[str, Endpoint | None, str], _NetAgg] = field(default_factory=dict)
    bound: dict[int, Endpoint] = field(default_factory=dict)  # fd -> bind address
    # The last syscall reading, compactly: names (the decoder's own strs) and counts.
    syscall_names: tuple[str, ...] = _NO_NAMES
    syscall_counts: array[int] | None = None
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
        max_notes: int = 256,
        max_total_files: int = 1 << 18,
        max_total_endpoints: int = 1 << 16,
        max_total_execs: int = 1 << 16,
        max_bytes: int = 256 << 20,
    ) -> None:
        self.name = name
        self.max_processes = max_processes
        self.max_files = max_files
        self.max_endpoints = max_endpoints
        self.max_execs = max_execs
        self.max_notes = max_notes
        # Per-process caps times processes is no bound at all: the totals
        # are capped too, and so are the bytes all of it takes.
        self.max_total = {"files": max_total_files, "endpoints": max_total_endpoints,
                          "execs": max_total_execs}  # fmt: skip
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
    def for_daemon(cls) -> AggregatingSink:
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
                   max_total_files=1 << 15, max_total_endpoints=1 << 13,
                   max_total_execs=1 << 13, max_bytes=4 << 20)  # fmt: skip

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
        elif isinstance(event, ExitEvent):
            self._exit(event)
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

    # -- what the profile says ----------------------------------------------
    def snapshot(self) -> Profile:
        """The profile so far (finish() is the last one). Deterministic."""
        procs = [*self._exited.values(), *self._live.values()]
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
                passed=f.passed, target_passed=f.target_passed,
                path_flags=list(path_flag_names(f.path_flags)),
                target_flags=list(path_flag_names(f.target_flags)),
            )  # fmt: skip

        def net_rec(n: _NetAgg) -> NetRecord:
            return NetRecord(n.op, n.endpoint, n.count, n.first_ns, n.result, n.error)

        counts = p.syscall_counts or ()
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
            evicted=dict(sorted(p.evicted.items())),
            argv_cut=list(p.argv_cut), argv_more=p.argv_more,
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

    def _set_image(self, proc: _Proc, exe: str, argv: tuple[str, ...]) -> None:
        """Give ``proc`` a new image; its cost replaces the old one's. Never
        refused (a process's identity is what every other record hangs on):
        the budget makes room the next time anything is added."""
        proc.exe, proc.argv = exe, argv
        cost = text_bytes(exe, *argv) + 8 * len(argv)
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

    def _touch(self, proc: _Proc, event: ExecEvent | FileEvent | NetEvent | ExitEvent) -> None:
        proc.comm = event.comm
        proc.uid = event.uid
        proc.gid = event.gid
        proc.cgroup_id = event.cgroup_id

    def _seen(self, event: ProcessSeen) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        proc.ppid = event.ppid
        proc.comm = proc.comm or event.comm
        self._set_image(proc, proc.exe or event.exe, proc.argv or event.cmdline)
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
        child.uid, child.gid, child.cgroup_id = event.uid, event.gid, event.cgroup_id
        if parent is not None:
            # A fork runs its parent's image until it execs.
            self._set_image(child, parent.exe, parent.argv)
            child.argv_cut, child.argv_more = parent.argv_cut, parent.argv_more
            if parent.comm == "":
                parent.comm = event.comm

    def _exec(self, event: ExecEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        cost = EXEC_BYTES + text_bytes(event.filename, *event.argv) + 8 * len(event.argv)
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
                )
            )
        if event.ret == 0:
            self._touch(proc, event)
            self._set_image(proc, event.filename, event.argv)
            proc.argv_cut, proc.argv_more = event.args_cut, event.argv_more

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
        path, path_cut, passed, path_flags = shown_path(
            event.abs_path, event.abs_flags, event.path, event.path_cut, event.dfd
        )
        if op == "rename":
            target, target_cut, target_passed, target_flags = shown_path(
                event.abs_path2, event.abs2_flags, event.path2, event.path2_cut, event.dfd2
            )
        else:
            target, target_cut, target_passed, target_flags = "", False, "", 0
        error = errno_name(int(event.ret)) if event.ret < 0 else ""
        key = (path, op, target, error)
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
        result, error = "ok", ""
        if event.ret == -EINPROGRESS and event.op == "connect":
            result = "in-progress"
        elif event.ret < 0:
            error = errno_name(event.ret)
        key = (event.op, endpoint, error)
        agg = proc.network.get(key)
        if agg is None:
            cost = ENDPOINT_BYTES + (text_bytes(endpoint.address) if endpoint else 0)
            if not self._room(proc, "endpoints", len(proc.network), self.max_endpoints, cost):
                return
            agg = _NetAgg(event.op, endpoint, 0, event.ts_ns, result, error)
            proc.network[key] = agg
        agg.count += event.count
