"""A pre-allocated file that remembers what the log could not hold.

When the disk under the evidence log is full (or it fails with EIO), the
records lost meanwhile must still be written into the evidence, as soon as
the log can be written again: later in the same run, or at the next start
if the store never recovered. The counts have to survive until then, on a
disk that has no room: so the slot is allocated while there is room (when
the store opens) and later only overwritten in place, which needs no new
blocks on ext4, xfs or tmpfs.

Layout of ``DIR/pending-loss`` (:data:`SLOT_BYTES` bytes, mode 0600): an
8-byte little-endian length, then that many bytes of canonical JSON (a
:class:`PendingLoss`), then zeros. Length 0: nothing is pending.

What can go wrong: with EIO the slot may be unwritable too; then the counts
live only in memory (the metrics, the stats, the exit status) and a
restart loses them. A slot that does not parse is reported and cleared,
never trusted.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Final

import msgspec

from agent.evidence.canonical import canonical

__all__ = ["SLOT_BYTES", "SLOT_NAME", "LossSlot", "PendingLoss"]

SLOT_NAME: Final = "pending-loss"
SLOT_BYTES: Final = 64 * 1024
_LENGTH: Final = struct.Struct("<Q")


class PendingLoss(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the log is missing: lost records by kind and stage since the last
    loss report that reached the log, and why.

    The window is wall-clock RFC 3339 (the next run may be on another boot,
    whose kernel clock means nothing here), with the boot it was on;
    ``stopped`` is set once the run ended with its store still failing.
    """

    reason: str
    boot_id: str
    window_start: str
    window_end: str
    counts: dict[str, dict[str, int]]
    stopped: bool = False


class LossSlot:
    """The slot file of one state directory. Synchronous I/O: call it from a
    worker thread (the pipeline does)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SLOT_NAME

    def prepare(self) -> None:
        """Make sure the slot exists with all its blocks allocated (while
        there is room). Keeps what it holds. Raises OSError."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < SLOT_BYTES:
                # Zeros written for real: fallocate alone leaves tmpfs lazy.
                os.pwrite(fd, bytes(SLOT_BYTES - size), size)
                os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, pending: PendingLoss) -> None:
        """Overwrite the slot with ``pending`` (in place, then fsync). Raises OSError."""
        body = canonical(pending)
        data = _LENGTH.pack(len(body)) + body
        if len(data) > SLOT_BYTES:
            raise OSError(f"{self.path}: pending loss of {len(data)} bytes does not fit")
        self._overwrite(data)

    def clear(self) -> None:
        """Nothing pending any more (the log holds it now). Raises OSError."""
        self._overwrite(_LENGTH.pack(0))

    def read(self) -> PendingLoss | None:
        """What is pending, or None. A slot that does not parse raises ValueError."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    return None
                (length,) = _LENGTH.unpack(head)
                if length == 0:
                    return None
                if length > SLOT_BYTES - _LENGTH.size:
                    raise ValueError(f"{self.path}: length {length} is past the slot")
                body = handle.read(length)
        except FileNotFoundError:
            return None
        try:
            return msgspec.json.decode(body, type=PendingLoss)
        except msgspec.DecodeError as err:
            raise ValueError(f"{self.path}: not a pending-loss record: {err}") from None

    def _overwrite(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
