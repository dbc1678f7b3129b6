"""Which process is on the other end of an API connection: the I/O edge.

``SO_PEERCRED`` gives the peer's pid, uid and gid as the kernel took them
at ``connect`` (they cannot be forged). An application event also says
which program sent it: its executable, its ``comm`` and its cgroup, read
from ``/proc/PID`` when the event arrives. A pid can be reused once its
process is gone, so what ``/proc/PID`` shows is only believed while the
peer itself is known to be alive: a pidfd of the peer (``SO_PEERPIDFD``,
Linux 6.5 and later) is checked to still name a live process after the
reads (a process that is alive then was alive during them, so its pid was
not reused). On an older kernel the pidfd is ``pidfd_open`` of the pid,
which only narrows the window: a peer gone and its pid reused before that
is not told apart. A peer that
exited, or that this pid namespace cannot see (pid 0), is marked
``gone`` with nothing read, never guessed from whichever process holds
the pid now.

All of it is attacker-chosen text (a program names itself), redacted and
escaped downstream like any other; nothing here interprets it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from pathlib import Path
from typing import Final

import msgspec
import trio

_Socket = socket.socket | trio.socket.SocketType

__all__ = ["PeerProcess", "identify"]

#: ``SO_PEERPIDFD`` (asm-generic/socket.h); Python's socket module may not name it.
SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)
_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")  # a name after it may be attacker-made: only stat
_COMM_MAX: Final = 64  # /proc/PID/comm is at most 16 bytes; a little room
_CGROUP_MAX: Final = 1 << 16


class PeerProcess(msgspec.Struct, frozen=True, kw_only=True):
    """The peer's program when it was looked up; ``gone``: it had exited
    (or is out of sight), and ``exe``, ``comm`` and ``cgroup_id`` are empty."""

    exe: bytes = b""
    comm: bytes = b""
    cgroup_id: int = 0
    gone: bool = False


GONE: Final = PeerProcess(gone=True)


def identify(sock: _Socket, pid: int) -> PeerProcess:
    """The program of the peer of ``sock``, whose ``SO_PEERCRED`` pid is ``pid``.

    Never raises for what the peer can do (exit, exec, change its name):
    an unreadable or vanished peer is :data:`GONE`.
    """
    if pid <= 0:
        return GONE
    pidfd = _pidfd(sock, pid)
    if pidfd is None:
        return GONE
    try:
        try:
            exe = os.readlink(f"/proc/{pid}/exe".encode())
            comm = _read(f"/proc/{pid}/comm", _COMM_MAX).removesuffix(b"\n")
            cgroup_id = _cgroup_id(_read(f"/proc/{pid}/cgroup", _CGROUP_MAX))
        except OSError:  # ENOENT, ESRCH: gone meanwhile (or a zombie)
            return GONE
        try:
            signal.pidfd_send_signal(pidfd, 0)
        except OSError:  # ESRCH: it exited; the pid may name another process by now
            return GONE
        return PeerProcess(exe=exe, comm=comm, cgroup_id=cgroup_id)
    finally:
        os.close(pidfd)


def _pidfd(sock: _Socket, pid: int) -> int | None:
    """A pidfd of the peer, or None if it is gone."""
    try:
        fd = int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError as err:
        if err.errno == errno.ESRCH:
            return None  # the kernel says the peer is gone
        fd = -1  # ENOPROTOOPT: a kernel before 6.5
    if fd >= 0:
        return fd
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _read(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a /proc file."""
    with open(path, "rb") as file:
        return file.read(limit)


def _cgroup_id(text: bytes) -> int:
    """The cgroup v2 id (the inode of its directory) from ``/proc/PID/cgroup``; 0 if none."""
    for line in text.splitlines():
        if line.startswith(b"0::/"):
            target = _CGROUP_ROOT / os.fsdecode(line[4:])
            with contextlib.suppress(OSError):
                return target.stat().st_ino
    return 0
