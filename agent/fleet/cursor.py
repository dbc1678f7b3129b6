"""The publisher's cursor: the last record JetStream acknowledged, on disk.

``<state dir>/fleet-cursor.json`` holds ``{"hash":..., "seq":...}`` of the
newest record of a contiguous acknowledged prefix of the log. A restart
resumes just after it; records acknowledged after the last save are sent
again and dropped as duplicates (JetStream's ``Nats-Msg-Id`` window, or the
collector's keys), so nothing is lost and nothing is stored twice.

Written like every durable file of the state directory: a fresh temporary
file (``O_EXCL``, never through a symlink, mode 0600), fsync, rename over
the cursor, fsync of the directory. A crash leaves the old cursor or the
new one, never half of one.

The hash is kept beside the seq so a replaced log (same seqs, other
records) is told from the one the cursor was taken on.

What can go wrong: the cursor is a symlink or not a regular file, or holds
something this module did not write. Each is a :class:`CursorError` (one
line): the publisher refuses to run (fail closed) rather than guess where
it stopped or write through a link an attacker planted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Final

import msgspec

from agent.evidence.chain import Hex64, Seq
from agent.evidence.durable import fsync_dir, write_synced
from agent.state_dir import FLEET_CURSOR_NAME

__all__ = ["CURSOR_MODE", "CURSOR_NAME", "Cursor", "CursorError", "cursor_path", "load", "save"]

CURSOR_NAME: Final = FLEET_CURSOR_NAME
CURSOR_MODE: Final = 0o600
_MAX_BYTES: Final = 4096
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


class CursorError(Exception):
    """The cursor file cannot be trusted or written (the message is one line)."""


class Cursor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The newest record of the acknowledged prefix: its ``seq`` and chain ``hash``."""

    seq: Seq
    hash: Hex64


def cursor_path(state_dir: Path) -> Path:
    return state_dir / CURSOR_NAME


def load(state_dir: Path) -> Cursor | None:
    """The saved cursor, or None if there is none yet.

    Raises:
        CursorError: a symlink, not a regular file, unreadable, or not a cursor.
    """
    path = cursor_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CursorError(f"{path}: is a symlink; refusing it (remove it)") from None
        raise CursorError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CursorError(f"{path}: is not a regular file; refusing it (remove it)")
        data = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        if len(data) > _MAX_BYTES:
            raise msgspec.DecodeError("too long")
        return msgspec.json.decode(data, type=Cursor)
    except msgspec.DecodeError:
        raise CursorError(
            f'{path}: is not a publisher cursor (expected {{"hash":HEX64,"seq":N}});'
            " remove it to publish the log from its start"
        ) from None


def save(state_dir: Path, cursor: Cursor) -> None:
    """Replace the cursor atomically and durably (mode 0600).

    Raises:
        CursorError: the cursor's place holds a symlink or something else
            than a regular file, or the file cannot be written (disk full).
    """
    path = cursor_path(state_dir)
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise CursorError(f"{path}: is a symlink; refusing to write the cursor through it")
        if not stat.S_ISREG(mode):
            raise CursorError(f"{path}: is not a regular file; refusing to replace it")
    tmp = path.with_name(CURSOR_NAME + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a crash's leftover (unlink never follows a link)
    try:
        write_synced(tmp, _ENCODER.encode(cursor) + b"\n", CURSOR_MODE, exclusive=True)
        os.rename(tmp, path)
        fsync_dir(state_dir)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CursorError(f"{path}: cannot be written ({err.strerror or err})") from None
