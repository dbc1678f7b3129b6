"""Complete lines of a segment the writer may be appending to, a block at a time.

Shared by the publisher's :mod:`.outbox` (records after the cursor) and
:mod:`.heads` (the newest record and seal). Only bytes up to the last
``\\n`` are returned: the writer's last line may be half written, and what
is not on disk whole is not committed. A segment pruned between listing
and reading is None, not an error; a file shorter than where the reader
stood was replaced or cut (the caller decides what that means).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, NamedTuple

__all__ = ["BLOCK_BYTES", "Block", "read_block"]

BLOCK_BYTES: Final = 1 << 20
"""Bytes read per call, unless one line is longer (then that line, whole)."""


class Block(NamedTuple):
    """``data``: complete lines from the offset asked (ending in ``\\n``, or
    empty); ``size``: the file's size when it was read."""

    data: bytes
    size: int


def read_block(path: Path, offset: int, max_bytes: int = BLOCK_BYTES) -> Block | None:
    """Complete lines of ``path`` from ``offset``: at most ``max_bytes``
    unless the first line is longer. None if the file is gone.

    Raises:
        OSError: the file exists but cannot be read (the caller retries).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size <= offset:
            return Block(b"", size)
        want = max_bytes
        while True:
            data = os.pread(fd, min(want, size - offset), offset)
            end = data.rfind(b"\n")
            if end >= 0:
                return Block(data[: end + 1], size)
            if offset + len(data) >= size:
                return Block(b"", size)  # only a torn tail so far
            want *= 2  # one line longer than a block: read it whole
    finally:
        os.close(fd)
