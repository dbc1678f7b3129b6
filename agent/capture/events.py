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

    A success is read from the new image (sched_process_exec): the filename
    the kernel used and the argument area it copied; a failure from the old
    image at the syscall's exit. The header (comm, uid, gid) is the new
    image's after a success.

    Truncation is marked, never hidden: ``argv_truncated`` if anything was
    cut; ``args_cut`` lists the argv entries cut short, ``filename_cut``
    says the filename was, ``argv_more`` that there were more entries than
    were captured.

    ``ppid``, ``euid``, ``egid``, ``loginuid`` (4294967295: unset) come from
    the task through the BTF offsets: None when enrichment is off. ``cwd``
    and ``exe`` are absolute paths the kernel resolved, with their TH_PATH_*
    flags (:func:`agent.capture.kinds.path_flag_names`); "" when not
    resolved. ``fileless``: the executable has no link on any filesystem
    (a memfd, an O_TMPFILE file, or deleted); ``exe_memfd``: it is a memfd.
    ``unresolved`` names what could not be read: ``filename``, ``argv``
    (what is there is what was), ``ids``, ``cwd``, ``exe``.
    """

    ret: int
    filename: str
    argv: tuple[str, ...]
    argv_truncated: bool
    at: bool  # execveat
    filename_cut: bool = False
    args_cut: tuple[int, ...] = ()
    argv_more: bool = False
    ppid: int | None = None
    euid: int | None = None
    egid: int | None = None
    loginuid: int | None = None
    cwd: str = ""
    cwd_flags: int = 0
    exe: str = ""
    exe_flags: int = 0
    fileless: bool = False
    exe_memfd: bool = False
    unresolved: tuple[str, ...] = ()


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
    """A file operation. ``op``: open, unlink, rename, chmod, mkdir, link,
    symlink, truncate, chown.

    ``path`` is as the process gave it, relative to ``dfd`` (-100: the
    working directory) when not absolute; empty for an operation on an open
    file (fchmod, ftruncate, fchown), whose fd is ``dfd``. ``path2`` is a
    rename's or link's new name, a symlink's new link (``path`` is then the
    link's text). ``owner``/``group``: the ids a chown asked for (-1 leaves
    one unchanged), -1 for every other op.
    ``path_cut``/``path2_cut``: the capture may have cut the path short.

    ``abs_path``/``abs_path2``: the absolute path the kernel used (the file
    an open installed; else the base directory joined with the name, see
    :mod:`agent.capture.abspath`), empty when it could not be resolved (and
    for a symlink's ``path``, which is the link's text, not a path the
    kernel used: its ``abs_path2`` is the new link's). ``abs_flags``/``abs2_flags``: how it was found, ``PATH_*`` bits of
    :mod:`agent.capture.kinds` (0: whole, read from the kernel); an event
    made without the kernel (tests, replays) says ``off``. ``abs2_flags``
    means something only beside a ``path2``.

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
    """connect, accept, bind, listen, a UDP send, or a connect's outcome, on
    socket ``fd``.

    ``endpoint`` is the peer (connect, accept, connect_result), the local
    address (bind, listen) or a datagram's destination (sendto, sendmsg,
    sendmmsg); None when unknown (accept without an address buffer, a
    connected socket whose peer could not be read).

    UDP sends (``op`` in :data:`agent.capture.kinds.SEND_OPS`): ``ret`` is
    the syscall's result (bytes, or for sendmmsg messages, sent; -errno);
    ``messages`` the datagrams of this call that went to ``endpoint`` (a
    sendmmsg gives one event per run of messages to one destination, among
    its first 8; ``more_messages``: it sent more, not looked at);
    ``peer_from_socket``: no address was passed, ``endpoint`` is the
    connected socket's peer; ``unchecked``: enrichment was off, the socket
    was not checked to be UDP (it may be a UNIX or TCP socket).

    ``connect_result``: how a connect that returned EINPROGRESS ended,
    ``outcome`` ``established``, ``refused`` or ``failed``; ``ret`` 0, or
    -errno (the socket's error; 0 when not known: ``unchecked``). Its header
    is the connecting thread's, its ``ts_ns`` the outcome's time.

    ``proto``: the socket's protocol, ``tcp``, ``udp``, ``udplite`` (``""``:
    not known; enrichment off, or not an IP socket).

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
    proto: str = ""
    messages: int = 0
    peer_from_socket: bool = False
    unchecked: bool = False
    more_messages: bool = False
    outcome: str = ""


class UringEvent(EventBase, frozen=True, tag="uring", gc=False):
    """One completion of an io_uring request, with what its submission
    said (io_uring operations fire no syscall tracepoints).

    The header is the submitter's, at submission (``ts_ns``), unless
    ``unpaired``: no submission was seen (it failed before being submitted,
    it predates capture, or the kernel's pending table was full) and the
    header is the completing task's. ``op`` is the opcode's name
    (:func:`agent.capture.kinds.uring_op_name`), ``res`` the completion's
    result (an fd, a byte count, 0, or -errno), ``fd`` the request's fd
    (an index into the ring's registered files when ``fixed_file``).

    Path ops: ``path`` as passed (the kernel's copy), relative to ``dfd``
    when not absolute; ``path2`` a rename's or link's new name. An openat's
    ``abs_path`` is the file it installed, resolved in the kernel;
    ``abs_flags`` the TH_PATH_* bits of how that walk ended (0: whole; 8:
    enrichment off; 16: no base, e.g. completed outside the submitter's
    file table). ``endpoint``: a connect's or send's destination.
    ``no_layout``: enrichment was off, only the tracepoints' facts are here.
    """

    op: str
    opcode: int
    res: int
    user_data: int
    complete_ns: int
    fd: int
    dfd: int
    path: str
    dfd2: int
    path2: str
    op_flags: int
    mode: int
    cflags: int
    endpoint: Endpoint | None
    abs_path: str
    abs_flags: int
    path_cut: bool = False
    path2_cut: bool = False
    unpaired: bool = False
    sqpoll: bool = False
    fixed_file: bool = False
    direct: bool = False
    no_layout: bool = False


class CallEvent(EventBase, frozen=True, tag="call", gc=False):
    """A security-relevant call that is not a file operation, once its
    result is known (:mod:`agent.capture.calls` names each call's fields).

    ``op`` is the call (``setresuid``, ``ptrace``, ``mount``, ``kill``,
    ``memfd_create``...), ``ret`` its result (0, an fd, or -errno).
    ``args``: its arguments by name (a uid of -1: "unchanged"); ``text``
    its strings by name (a mount's source, target and fstype, a module's
    params or name, a memfd's name), as the process gave them;
    ``text_cut`` names those the capture may have cut short,
    ``unreadable`` the arguments and strings whose memory could not be read.
    ``ids_before``: the caller's uid, euid, suid, gid, egid and sgid when it
    called; ``ids_after``: the same after the call (credential-changing
    calls only: what the kernel set, not what was asked); ``caps_*`` the
    capability sets as bit masks likewise. Each is None when it could not
    be resolved (no BTF layout, or the self-check failed).
    """

    op: str
    syscall: str
    ret: int
    args: dict[str, int]
    text: dict[str, str]
    text_cut: tuple[str, ...]
    unreadable: tuple[str, ...]
    ids_before: dict[str, int] | None
    ids_after: dict[str, int] | None
    caps_before: dict[str, int] | None
    caps_after: dict[str, int] | None


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


KernelEvent = ExecEvent | ForkEvent | ExitEvent | FileEvent | NetEvent | UringEvent | CallEvent
Event = KernelEvent | SyscallCounts | ProcessSeen

KINDS = kinds.KINDS  # the ledger's kinds (agent.capture.kinds defines them)


_KIND_OF: dict[type, str] = {
    ExecEvent: "exec",
    ForkEvent: "fork",
    ExitEvent: "exit",
    FileEvent: "file",
    NetEvent: "net",
    UringEvent: "uring",
    CallEvent: "call",
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
