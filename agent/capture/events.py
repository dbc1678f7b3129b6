"""The decoded capture events: one msgspec Struct per kind, defined once.

These are what the drain hands to sinks. They mirror the wire records of
``bpf/tracehound.h`` (decoded by :mod:`agent.capture.wire`) plus the records
user space makes itself: syscall counts read from the kernel's map, and
processes seeded from /proc at start-up.

They hold only text, numbers, and tuples or dicts of those, never a
reference back to anything, so they cannot be part of a reference cycle:
``gc=False`` keeps the hundreds of thousands a flood makes each second out
of the garbage collector's generations.
"""

from __future__ import annotations

import msgspec

from agent.capture import kinds


class Endpoint(msgspec.Struct, frozen=True, order=True, gc=False):
    """A socket address, decoded from a raw sockaddr.

    ``family`` is ``"ipv4"``, ``"ipv6"``, ``"unix"`` or ``"other"``;
    ``address`` is the IP text or the UNIX path (``"@name"`` for an abstract
    socket, ``""`` for an unnamed one); ``port`` is 0 for UNIX.
    """

    family: str
    address: str
    port: int = 0

    def render(self) -> str:
        if self.family == "ipv4":
            return f"{self.address}:{self.port}"
        if self.family == "ipv6":
            return f"[{self.address}]:{self.port}"
        if self.family == "unix":
            return f"unix:{self.address}"
        return f"{self.family}:{self.address}"


class EventBase(msgspec.Struct, frozen=True, tag_field="kind", gc=False):
    """Fields every kernel record carries (``struct th_header``)."""

    pid: int
    tid: int
    ts_ns: int
    uid: int
    gid: int
    cgroup_id: int
    comm: str


class ExecEvent(EventBase, frozen=True, tag="exec", gc=False):
    """An execve/execveat, once its result is known. ``ret`` is 0 or -errno.

    Truncation is marked, never hidden: ``argv_truncated`` if anything was
    cut; ``args_cut`` lists the argv entries cut short, ``filename_cut``
    says the filename was, ``argv_more`` that there were more entries than
    were captured.
    """

    ret: int
    filename: str
    argv: tuple[str, ...]
    argv_truncated: bool
    at: bool  # execveat
    filename_cut: bool = False
    args_cut: tuple[int, ...] = ()
    argv_more: bool = False


class ForkEvent(EventBase, frozen=True, tag="fork", gc=False):
    """A new process (not a thread); the header is the parent's."""

    child_pid: int
    clone_flags: int


class ExitEvent(EventBase, frozen=True, tag="exit", gc=False):
    """The last thread of a process exited.

    ``exit_code`` is valid when ``have_code`` (the process called exit_group
    or exit), ``signal`` when ``have_signal`` (a fatal signal with the default
    action was delivered). Neither: the kernel ended it some other way.
    """

    exit_code: int
    signal: int
    have_code: bool
    have_signal: bool


class FileEvent(EventBase, frozen=True, tag="file", gc=False):
    """A file operation. ``op``: open, unlink, rename, chmod, mkdir.

    ``path`` is as the process gave it, relative to ``dfd`` (-100: the
    working directory) when not absolute; empty for an fd-only op
    (fchmod: ``dfd`` is the fd). ``path2`` is a rename's target.
    ``path_cut``/``path2_cut``: the capture may have cut the path short.

    ``abs_path``/``abs_path2``: the absolute path the kernel used (the file
    an open installed; else the base directory joined with the name, see
    :mod:`agent.capture.abspath`), empty when it could not be resolved.
    ``abs_flags``/``abs2_flags``: how it was found, ``PATH_*`` bits of
    :mod:`agent.capture.kinds` (0: whole, read from the kernel); an event
    made without the kernel (tests, replays) says ``off``. ``abs2_flags``
    means something only beside a ``path2``.

    ``owner``/``group``: a chown's new ids, -1 unchanged (and for every
    other op).

    ``count``/``last_ts_ns``: see :class:`NetEvent`.
    """

    op: str
    syscall: str
    ret: int
    dfd: int
    path: str
    dfd2: int
    path2: str
    flags: int
    mode: int
    path_cut: bool = False
    path2_cut: bool = False
    abs_path: str = ""
    abs_path2: str = ""
    abs_flags: int = kinds.PATH_OFF
    abs2_flags: int = 0
    owner: int = -1
    group: int = -1
    count: int = 1
    last_ts_ns: int = 0


class NetEvent(EventBase, frozen=True, tag="net", gc=False):
    """connect, accept, bind or listen on socket ``fd``.

    ``endpoint`` is the peer (connect, accept) or the local address (bind);
    None when unknown (listen, or accept without an address buffer).

    ``count``: how many identical kernel events this one stands for (the
    drain folds repeats, see :mod:`agent.capture.fold`): 1 for an event as
    the kernel made it, with ``last_ts_ns`` 0; above 1 for a folded one,
    whose ``ts_ns`` is the first repeat's time and ``last_ts_ns`` the last
    one's. The defaults keep an unfolded event what it was before folding
    existed, field for field.
    """

    op: str
    ret: int
    fd: int
    endpoint: Endpoint | None
    backlog: int
    count: int = 1
    last_ts_ns: int = 0


class SyscallCounts(msgspec.Struct, frozen=True, tag="syscalls", tag_field="kind", gc=False):
    """Cumulative syscall counts of one process, read from the kernel's map.

    Counts only grow while the process lives; ``final`` is set on the last
    reading, after the process exited.
    """

    pid: int
    counts: dict[str, int]
    final: bool


class ProcessSeen(msgspec.Struct, frozen=True, tag="process", tag_field="kind", gc=False):
    """A process known from /proc rather than from an event: it was running
    before capture started (``preexisting``), or it was looked up to fill in
    what its events do not say."""

    pid: int
    ppid: int
    comm: str
    exe: str
    cmdline: tuple[str, ...]
    uid: int
    user: str
    start_time: float
    preexisting: bool


KernelEvent = ExecEvent | ForkEvent | ExitEvent | FileEvent | NetEvent
Event = KernelEvent | SyscallCounts | ProcessSeen

KINDS = kinds.KINDS  # the ledger's kinds (agent.capture.kinds defines them)


_KIND_OF: dict[type, str] = {
    ExecEvent: "exec",
    ForkEvent: "fork",
    ExitEvent: "exit",
    FileEvent: "file",
    NetEvent: "net",
    SyscallCounts: "syscall",
    ProcessSeen: "process",
}


def kind_of(event: Event) -> str:
    """The ledger kind of an event (``process`` for /proc records)."""
    return _KIND_OF[type(event)]


def event_count(event: Event) -> int:
    """How many kernel events ``event`` stands for: its ``count`` when it is
    a file or network event (folded ones stand for many), else 1. What every
    sink adds to its books, delivered or dropped, so the ledger's law
    (generated = delivered + lost) holds in kernel events, not in records."""
    if type(event) is FileEvent or type(event) is NetEvent:
        return event.count
    return 1
