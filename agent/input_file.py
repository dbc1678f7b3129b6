"""Reading a small file named by the user, without blocking and within a bound.

The configuration, ``--redact-rules`` and ``evidence verify --key`` files
are read whole. A path is attacker-chosen bytes: ``/dev/zero`` would be
read forever, a FIFO with no writer would block ``open`` forever, and a
huge file would take the memory. :func:`read_input_file` refuses all of
them at once: it ``stat``\\s the path first, so a device or FIFO is never
even opened; opens with ``O_NONBLOCK`` (a FIFO swapped in after the
``stat`` cannot block the open); checks with ``fstat`` that what was opened
is a regular file, the same one, within the limit; and reads at most one
byte past the limit, so a file that grows meanwhile is refused too.

It raises :class:`InputFileError` with the problem alone (``no such
file``, ``not a regular file (a FIFO)``): the caller says which option or
file it was, since only it knows whether the path may be echoed.
"""

from __future__ import annotations

import os
import stat
from typing import Final

from agent.limits import MAX_INPUT_FILE_BYTES

__all__ = ["InputFileError", "read_input_file"]

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class InputFileError(Exception):
    """The file cannot be used; the message is the problem, without the path."""


def _size(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


def _check_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    raise InputFileError(f"not a regular file ({kind})")


def read_input_file(path: str | os.PathLike[str], limit: int = MAX_INPUT_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, if it holds at most ``limit`` bytes.

    Returns at once whatever ``path`` is: never blocks on a FIFO, a
    terminal or a device (none is opened), never reads more than
    ``limit + 1`` bytes. A file on a hung network mount can still block in
    ``stat`` or ``read``; nothing in user space avoids that.

    Raises:
        InputFileError: no such file, not permitted, not a regular file,
            larger than ``limit`` (or grown past it while read), or replaced
            between the ``stat`` and the ``open``.
    """
    try:
        before = os.stat(path)
        _check_regular(before.st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputFileError("no such file") from None
    except OSError as err:
        raise InputFileError(f"cannot read: {err.strerror}") from None
    too_big = f"larger than {_size(limit)}"
    try:
        opened = os.fstat(fd)
        _check_regular(opened.st_mode)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise InputFileError("replaced while it was being opened")
        if opened.st_size > limit:
            raise InputFileError(f"{too_big} ({opened.st_size} bytes)")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, limit + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InputFileError(f"{too_big} (it grew while being read)")
        return b"".join(chunks)
    except OSError as err:
        raise InputFileError(f"cannot read: {err.strerror}") from None
    finally:
        os.close(fd)
