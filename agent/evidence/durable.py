"""Writing files so they survive a crash, with exact modes, never through a symlink.

Shared by the store (recovered tails, segment directories) and the key
file (:mod:`.keys`): one copy of the fsync rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from agent.evidence.layout import StoreCorruptError
from agent.state_dir import set_owner_mode

__all__ = ["fsync_dir", "set_file_mode", "write_synced"]


def write_synced(
    path: Path, data: bytes, mode: int, gid: int | None = None, *, exclusive: bool = False
) -> None:
    """Write ``path`` whole and fsync it, mode exactly ``mode``; ``exclusive``:
    the file must not exist yet (``O_EXCL``). Never through a symlink.

    Raises:
        OSError: the file cannot be made, written or synced (the caller
            removes what it made).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, mode)
    try:
        set_owner_mode(fd, mode, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new entry in it is durable; a
    filesystem that refuses directory fsync is accepted as it is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def set_file_mode(path: Path, mode: int, gid: int | None) -> None:
    """Set a file's mode (and group) without following a symlink.

    Raises:
        StoreCorruptError: it is a symlink or not a regular file: not
            something the store wrote.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StoreCorruptError(f"{path}: is a symlink, not a file this store wrote") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreCorruptError(f"{path}: is not a regular file")
        set_owner_mode(fd, mode, gid)
    finally:
        os.close(fd)
