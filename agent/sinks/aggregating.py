"""AggregatingSink: folds events into a per-process Profile, in bounded memory.

Caps (all counted when hit, and the counts are in the profile):
  - ``max_processes``: processes held, live or exited. Past it the oldest
    exited process is evicted; if none has exited, the new one is refused.
  - ``max_files`` / ``max_endpoints`` / ``max_execs`` per process: distinct
    file records, network records, exec attempts kept.
  - ``max_notes``: capture notes kept.
Aggregation is deterministic: the same events in the same order give the
same Profile, byte for byte.
"""

from __future__ import annotations

import errno as errno_names
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

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
    kind_of,
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

AT_FDCWD = -100
O_ACCMODE = 0o3
O_CREAT = 0o100
O_EXCL = 0o200
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_DIRECTORY = 0o200000
AT_REMOVEDIR = 0x200
EINPROGRESS = errno_names.EINPROGRESS


def errno_name(ret: int) -> str:
    return errno_names.errorcode.get(-ret, f"E{-ret}")


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


def display_path(path: str, dfd: int) -> str:
    if path.startswith("/") or dfd == AT_FDCWD:
        return path
    return f"fd:{dfd}/{path}"


@dataclass(slots=True)
class _FileAgg:
    path: str
    op: str
    access: set[str]
    count: int
    first_ns: int
    target: str
    mode: int | None
    error: str
    path_cut: bool
    target_cut: bool


@dataclass(slots=True)
class _NetAgg:
    op: str
    endpoint: Endpoint | None
    count: int
    first_ns: int
    result: str
    error: str


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
    syscalls: dict[str, int] = field(default_factory=dict)
    evicted: Counter[str] = field(default_factory=Counter)


class AggregatingSink:
    """The default sink: builds a :class:`Profile`. Never waits."""

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
    ) -> None:
        self.name = name
        self.max_processes = max_processes
        self.max_files = max_files
        self.max_endpoints = max_endpoints
        self.max_execs = max_execs
        self.max_notes = max_notes
        # Per-process caps times processes is no bound at all (~70 GB at the
        # defaults): the totals are capped too.
        self.max_total = {"files": max_total_files, "endpoints": max_total_endpoints,
                          "execs": max_total_execs}  # fmt: skip
        self.totals: Counter[str] = Counter()
        self._live: dict[int, _Proc] = {}
        self._exited: OrderedDict[int, _Proc] = OrderedDict()  # keyed by a serial
        self._serial = 0
        self._last_exited: dict[int, _Proc] = {}  # pid -> its latest exited process
        self._notes: list[str] = []
        self.evictions: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self._finished = False

    # -- EventSink -----------------------------------------------------------
    async def record(self, event: Event) -> None:
        self.apply(event)

    def apply(self, event: Event) -> None:
        """Fold one event in (synchronous: this sink never waits)."""
        self.delivered[kind_of(event)] += 1
        if isinstance(event, FileEvent):
            self._file(event)
        elif isinstance(event, SyscallCounts):
            # The last reading comes after the exit record: look there too.
            # Counts alone never make a process (a phantom that would never
            # exit); a final reading for a live one means its exit was lost.
            proc = self._live.get(event.pid) or self._last_exited.get(event.pid)
            if proc is not None:
                proc.syscalls = dict(event.counts)
                if event.final and self._live.get(event.pid) is proc:
                    del self._live[event.pid]
                    self._retire(proc)
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
        return {self.name: {kind: (count, 0) for kind, count in self.delivered.items()}}

    def finish(self) -> Profile:
        self._finished = True
        return self.snapshot()

    # -- what the profile says ----------------------------------------------
    def snapshot(self) -> Profile:
        """The profile so far (finish() is the last one). Deterministic."""
        procs = [*self._exited.values(), *self._live.values()]
        procs.sort(key=lambda p: (p.started_ns if p.started_ns is not None else -1, p.pid))
        evictions = {
            k: self.evictions.get(k, 0)
            for k in ("processes", "files", "endpoints", "execs", "notes")
        }
        return Profile(
            version=PROFILE_VERSION,
            command=[],
            root_pid=None,
            exit_status=None,
            processes=[self._freeze(p) for p in procs],
            evictions=evictions,
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
            return FileRecord(
                path=f.path, op=f.op, access=sorted(f.access), count=f.count,
                first_ns=f.first_ns, target=f.target, mode=f.mode, error=f.error,
                path_cut=f.path_cut, target_cut=f.target_cut,
            )  # fmt: skip

        def net_rec(n: _NetAgg) -> NetRecord:
            return NetRecord(n.op, n.endpoint, n.count, n.first_ns, n.result, n.error)

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
            syscalls=dict(sorted(p.syscalls.items())),
            evicted=dict(sorted(p.evicted.items())),
            argv_cut=list(p.argv_cut), argv_more=p.argv_more,
        )  # fmt: skip

    # -- folding -------------------------------------------------------------
    def _proc(self, pid: int, *, create: bool = True) -> _Proc | None:
        proc = self._live.get(pid)
        if proc is not None or not create:
            return proc
        if len(self._live) + len(self._exited) >= self.max_processes:
            if not self._exited:
                self.evictions["processes"] += 1
                return None
            self._evict_oldest_exited()
        proc = _Proc(pid)
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
        proc.exe = proc.exe or event.exe
        proc.argv = proc.argv or event.cmdline
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
            child.exe, child.argv = parent.exe, parent.argv
            child.argv_cut, child.argv_more = parent.argv_cut, parent.argv_more
            if parent.comm == "":
                parent.comm = event.comm

    def _exec(self, event: ExecEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        if self._room(proc, "execs", len(proc.execs), self.max_execs):
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
            proc.exe = event.filename
            proc.argv = event.argv
            proc.argv_cut, proc.argv_more = event.args_cut, event.argv_more

    def _exit(self, event: ExitEvent) -> None:
        proc = self._live.pop(event.pid, None)
        if proc is None:
            proc = _Proc(event.pid)
            if len(self._live) + len(self._exited) >= self.max_processes and not self._exited:
                self.evictions["processes"] += 1
                return
        proc.comm = proc.comm or event.comm
        proc.exited_ns = event.ts_ns
        proc.exit_code = event.exit_code if event.have_code and not event.have_signal else None
        proc.exit_signal = event.signal if event.have_signal else None
        proc.bound.clear()
        self._retire(proc)

    def _evict_oldest_exited(self) -> None:
        _, old = self._exited.popitem(last=False)
        if self._last_exited.get(old.pid) is old:
            del self._last_exited[old.pid]
        self.totals["files"] -= len(old.files)
        self.totals["endpoints"] -= len(old.network)
        self.totals["execs"] -= len(old.execs)
        self.evictions["processes"] += 1

    def _room(self, proc: _Proc, what: str, held: int, cap: int) -> bool:
        """May ``proc`` hold one more ``what``? If not, count the eviction."""
        if held >= cap or self.totals[what] >= self.max_total[what]:
            proc.evicted[what] += 1
            self.evictions[what] += 1
            return False
        self.totals[what] += 1
        return True

    def _retire(self, proc: _Proc) -> None:
        while len(self._live) + len(self._exited) >= self.max_processes and self._exited:
            self._evict_oldest_exited()
        self._serial += 1
        self._exited[self._serial] = proc
        self._last_exited[proc.pid] = proc

    def _file(self, event: FileEvent) -> None:
        proc = self._proc(event.pid)
        if proc is None:
            return
        if not proc.comm:
            self._touch(proc, event)
        op = event.op
        access: list[str] = []
        mode: int | None = None
        if op == "open":
            access = open_access(event.flags)
            if event.flags & O_CREAT:
                mode = event.mode
        elif op == "unlink" and event.flags & AT_REMOVEDIR:
            op = "rmdir"
        elif op in ("chmod", "mkdir"):
            mode = event.mode
        path = display_path(event.path, event.dfd)
        target = display_path(event.path2, event.dfd2) if op == "rename" else ""
        error = errno_name(int(event.ret)) if event.ret < 0 else ""
        key = (path, op, target, error)
        agg = proc.files.get(key)
        if agg is None:
            if not self._room(proc, "files", len(proc.files), self.max_files):
                return
            agg = _FileAgg(
                path, op, set(), 0, event.ts_ns, target, mode, error,
                event.path_cut, event.path2_cut if op == "rename" else False,
            )  # fmt: skip
            proc.files[key] = agg
        agg.count += 1
        agg.access.update(access)
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
            if not self._room(proc, "endpoints", len(proc.network), self.max_endpoints):
                return
            agg = _NetAgg(event.op, endpoint, 0, event.ts_ns, result, error)
            proc.network[key] = agg
        agg.count += 1
