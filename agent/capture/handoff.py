"""Hand file descriptors and one message from the compile child to the daemon.

Over an ``AF_UNIX`` ``SOCK_SEQPACKET`` socketpair (message boundaries kept,
so no framing of our own): any number of ``F`` messages, each carrying up to
:data:`FDS_PER_MESSAGE` descriptors as ``SCM_RIGHTS``, then one ``M``
message with the payload (the manifest) and the total number of
descriptors sent, which the receiver checks.

What can go wrong, on the receiving side, all raised as :class:`HandoffError`
with every descriptor received so far closed (none leaks): the sender
exits before the ``M`` message (end of file), ancillary data was cut
(``MSG_CTRUNC``: the receiver's limit on open files), a message of an
unknown type, or a count that does not match. Received descriptors are
close-on-exec.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Final

__all__ = ["FDS_PER_MESSAGE", "MAX_PAYLOAD", "HandoffError", "receive", "send"]

#: The kernel's SCM_MAX_FD is 253 descriptors per message.
FDS_PER_MESSAGE: Final = 200
#: The largest payload accepted (the manifest is a few KiB).
MAX_PAYLOAD: Final = 1 << 20
_COUNT: Final = struct.Struct("<I")


class HandoffError(RuntimeError):
    """The descriptors or the manifest did not arrive whole."""


def send(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """Send ``fds`` then ``payload``. The descriptors stay open here: the
    kernel holds a reference for each one in flight."""
    if len(payload) > MAX_PAYLOAD:
        raise HandoffError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    for start in range(0, len(fds), FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"F"], fds[start : start + FDS_PER_MESSAGE])
    sock.sendmsg([b"M", _COUNT.pack(len(fds)), payload])


def _recv(sock: socket.socket, fds: list[int]) -> tuple[bytes, int]:
    """One message; its descriptors appended to ``fds`` as they arrive.

    ``recvmsg`` itself, not ``socket.recv_fds``: that one drops its
    ``flags`` argument (Python 3.11), and MSG_CMSG_CLOEXEC matters here,
    so a descriptor never leaks into a process started meanwhile.
    """
    item = array.array("i")
    data, ancillary, flags, _ = sock.recvmsg(
        MAX_PAYLOAD + 8, socket.CMSG_SPACE(FDS_PER_MESSAGE * item.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            item.frombytes(blob[: len(blob) - len(blob) % item.itemsize])
    fds.extend(item)
    return data, flags


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """The payload and every descriptor, in the order sent."""
    fds: list[int] = []
    try:
        while True:
            data, flags = _recv(sock, fds)
            if flags & socket.MSG_CTRUNC:
                raise HandoffError("descriptors were cut off in transit (too many open files?)")
            if not data:
                raise HandoffError("the sender exited before handing everything over")
            if data[:1] == b"F" and len(data) == 1:
                continue
            if data[:1] != b"M" or len(data) < 1 + _COUNT.size:
                raise HandoffError(f"unexpected message of {len(data)} bytes")
            (expected,) = _COUNT.unpack_from(data, 1)
            if expected != len(fds):
                raise HandoffError(f"{len(fds)} descriptors arrived, {expected} were sent")
            return data[1 + _COUNT.size :], fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
