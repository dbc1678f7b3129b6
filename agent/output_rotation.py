"""``run --events FILE`` rotated by size, as Tetragon rotates its export file.

When the next line would take the file past ``max_bytes`` (a line is
never split across files), it becomes ``FILE.1``, ``FILE.1`` becomes
``FILE.2`` and so on up to ``FILE.<max_backups>``; the oldest falls off
(``max_backups = 0``: the full file is simply replaced). A fresh file then
takes ``FILE``'s place, made as :func:`~agent.output_target.open_stream`
makes one: a new 0600 file (``O_EXCL|O_NOFOLLOW``) renamed into place. Every
rename is relative to the directory opened at start (and checked to be the
one checked before capture), and a rename never follows a symlink, so a
link planted at ``FILE.3`` is replaced, never written through.

A FIFO, a device or stdout is never rotated: only a file we made is.
A rotation that fails is an :class:`~agent.output_target.OutputError`
(one line), which the events writer counts as a lost stream.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from agent.errors import shown
from agent.output_target import (
    OutputError,
    OutputStream,
    OutputTarget,
    open_directory,
    open_stream,
    replace_in,
)

__all__ = ["RotatingStream", "Rotation", "open_rotating_stream"]


@dataclass(frozen=True)
class Rotation:
    """``max_bytes`` per file (0: never rotate) and how many old files to keep."""

    max_bytes: int
    max_backups: int


class RotatingStream(OutputStream):
    """A replaced-file stream that rotates itself past :attr:`Rotation.max_bytes`."""

    def __init__(self, target: OutputTarget, fd: int, dfd: int, rotation: Rotation) -> None:
        super().__init__(target, fd, sync_on_close=True)
        self._dfd = dfd
        self._rotation = rotation
        self._size = 0
        #: Files rotated out so far (for tests and stats).
        self.rotations = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` (whole lines), rotating between lines so no file
        passes ``max_bytes``, unless a single line is longer than that (then
        it is alone in its file)."""
        view = bytes(data)
        while view:
            room = self._rotation.max_bytes - self._size
            if len(view) <= room:
                super().write(view)
                self._size += len(view)
                return
            cut = view.rfind(b"\n", 0, max(room, 0)) + 1  # the lines that fit
            if cut == 0 and self._size == 0:
                cut = view.find(b"\n") + 1 or len(view)
            if cut:
                super().write(view[:cut])
                self._size += cut
                view = view[cut:]
            if view:
                self._rotate()

    def _rotate(self) -> None:
        target = self.target
        assert target.path is not None
        name = target.path.name
        label = target.label
        self.sync()
        try:
            keep = self._rotation.max_backups
            for index in range(keep - 1, 0, -1):  # FILE.2 -> FILE.3, FILE.1 -> FILE.2
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{name}.{index}", f"{name}.{index + 1}",
                              src_dir_fd=self._dfd, dst_dir_fd=self._dfd)  # fmt: skip
            if keep:
                os.rename(name, f"{name}.1", src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        except OSError as err:
            raise OutputError(f"{label}: cannot rotate to {shown(name)}.N: {err.strerror}") from err
        old = self._swap_fd(replace_in(target, self._dfd))
        os.close(old)
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        try:
            super().close()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._dfd)
            self._dfd = -1

    def abandon(self) -> None:
        super().abandon()
        with contextlib.suppress(OSError):
            os.close(self._dfd)


def open_rotating_stream(target: OutputTarget, rotation: Rotation) -> OutputStream:
    """:func:`~agent.output_target.open_stream`, rotating a regular file by
    ``rotation`` (a FIFO, a device, stdout, or ``max_bytes`` 0: not rotated)."""
    if target.kind != "replace" or rotation.max_bytes <= 0:
        return open_stream(target)
    dfd = open_directory(target)
    try:
        fd = replace_in(target, dfd)
    except BaseException:
        os.close(dfd)
        raise
    return RotatingStream(target, fd, dfd, rotation)
