"""What an io_uring record says in the words of the file and socket records.

An openat, unlinkat, renameat or mkdirat submitted through a ring is the
same fact as the syscall would have been (this process opened that file),
and a connect or a send with a destination the same as connect(2) or
sendmsg(2). The profile folds them into its files and network lists with
these (each process's ``uring`` counts say that a ring was used), so a
reader looking for "what did it open" needs to look in one place only.

Pure: no kernel, no I/O. Ops with no file or socket counterpart (reads,
writes, linkat, symlinkat, ...) give None and are only counted.
"""

from __future__ import annotations

from typing import Final

from agent.capture.events import FileEvent, NetEvent, UringEvent
from agent.capture.kinds import AT_FDCWD

#: io_uring op -> the file operation it performs.
FILE_OPS: Final[dict[str, str]] = {
    "openat": "open",
    "openat2": "open",
    "unlinkat": "unlink",
    "renameat": "rename",
    "mkdirat": "mkdir",
}
#: io_uring op -> the socket operation it performs. A send names a
#: destination only when the caller gave one (an unconnected socket).
NET_OPS: Final[dict[str, str]] = {
    "connect": "connect",
    "accept": "accept",
    "sendmsg": "sendmsg",
    "sendmsg_zc": "sendmsg",
    "send": "sendto",
    "send_zc": "sendto",
}
_SEND: Final = frozenset({"sendmsg", "sendto"})
#: Ops whose request names a path (``path``, relative to ``dfd``) ...
PATH_OPS: Final = frozenset(
    {"openat", "openat2", "unlinkat", "mkdirat", "renameat", "linkat", "symlinkat"}
)
#: ... and a second one (``path2``, relative to ``dfd2``).
TWO_PATH_OPS: Final = frozenset({"renameat", "linkat", "symlinkat"})
#: Ops that install an fd the kernel resolves to an absolute path.
OPEN_OPS: Final = frozenset({"openat", "openat2"})


def as_file_event(event: UringEvent) -> FileEvent | None:
    """The file record an io_uring path op stands for, or None.

    The path is the absolute one the kernel resolved when there is one (an
    openat that installed an fd), else the name as passed with its dfd.
    ``syscall`` is ``io_uring:<op>``: no syscall was made.
    """
    op = FILE_OPS.get(event.op)
    if op is None:
        return None
    if event.abs_path:
        path, dfd, cut = event.abs_path, AT_FDCWD, bool(event.abs_flags & 1)
    else:
        path, dfd, cut = event.path, event.dfd, event.path_cut
    return FileEvent(
        event.pid, event.tid, event.ts_ns, event.uid, event.gid, event.cgroup_id, event.comm,
        op=op, syscall=f"io_uring:{event.op}", ret=event.res, dfd=dfd, path=path,
        dfd2=event.dfd2, path2=event.path2 if op == "rename" else "",
        flags=event.op_flags & 0xFFFFFFFF, mode=event.mode,
        path_cut=cut, path2_cut=event.path2_cut if op == "rename" else False,
    )  # fmt: skip


def as_net_event(event: UringEvent) -> NetEvent | None:
    """The socket record an io_uring connect, accept or addressed send
    stands for, or None (a send on a connected socket names no peer here)."""
    op = NET_OPS.get(event.op)
    if op is None or (op in _SEND and event.endpoint is None):
        return None
    return NetEvent(
        event.pid, event.tid, event.ts_ns, event.uid, event.gid, event.cgroup_id, event.comm,
        op=op, ret=event.res, fd=event.fd, endpoint=event.endpoint, backlog=0,
    )  # fmt: skip
