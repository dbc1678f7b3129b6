"""State directories on a fresh host: made as systemd's ``StateDirectory=`` would.

``/var/lib/tracehound/evidence`` must work on a host where ``/var/lib/tracehound``
does not exist yet: missing parents are made mode 0755, the directory
itself 0700 (0750, group set, when a group is to read it). A path that
exists and is not a directory, or is a symlink, is refused: whoever runs on
the host may have planted it. A shared directory (sticky bit, like
``/tmp``) is refused too: its mode must not be changed, and others could
plant files in it.

:func:`make_state_dir` returns the directories it made, so a caller that
fails later can take them away again (:func:`remove_created`): nothing left
behind. Errors are :class:`StateDirError`, one line naming the path; the
caller says which option or configuration key named it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Final

from agent.errors import shown

__all__ = [
    "DIR_MODE",
    "GROUP_DIR_MODE",
    "PARENT_MODE",
    "StateDirError",
    "dir_mode",
    "ensure_dir",
    "make_state_dir",
    "remove_created",
    "set_owner_mode",
]

DIR_MODE: Final = 0o700
GROUP_DIR_MODE: Final = 0o750
PARENT_MODE: Final = 0o755


class StateDirError(Exception):
    """A state directory cannot be made or used; the message is one line."""


def dir_mode(gid: int | None) -> int:
    """0700, or 0750 when group ``gid`` is to read what is inside."""
    return DIR_MODE if gid is None else GROUP_DIR_MODE


def set_owner_mode(fd: int, mode: int, gid: int | None) -> None:
    """Give an open file or directory exactly ``mode`` (whatever the umask),
    and group ``gid`` unless None. Raises OSError."""
    if gid is not None:
        os.fchown(fd, -1, gid)
    os.fchmod(fd, mode)


def _secure(path: Path, mode: int, gid: int | None) -> None:
    """Set an existing directory's mode and group, through an fd opened
    without following a symlink (one swapped in meanwhile is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _symlink(path) from err
        if err.errno == errno.ENOTDIR:
            raise StateDirError(f"{shown(path)} exists and is not a directory") from err
        raise StateDirError(f"{shown(path)}: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        if st.st_mode & stat.S_ISVTX:
            raise StateDirError(
                f"{shown(path)} is a shared directory (sticky bit, like /tmp); expected a"
                " directory of tracehound's own, e.g. /var/lib/tracehound/evidence"
            )
        set_owner_mode(fd, mode, gid)
    except OSError as err:
        raise StateDirError(f"{shown(path)}: cannot set its mode: {err.strerror}") from err
    finally:
        os.close(fd)


def _symlink(path: Path) -> StateDirError:
    return StateDirError(
        f"{shown(path)} is a symlink to {shown(os.path.realpath(path))}; refusing to follow it"
    )


def ensure_dir(path: Path, mode: int, gid: int | None = None) -> bool:
    """``path`` as a directory of exactly ``mode`` (and group ``gid``), made
    if missing; its parent must exist. Returns True if it was made here.

    Raises:
        StateDirError: a symlink, not a directory, or cannot be made.
    """
    try:
        os.mkdir(path, mode)
        created = True
    except FileExistsError:
        created = False
    except OSError as err:
        raise StateDirError(f"cannot create {shown(path)}: {err.strerror}") from err
    try:
        _secure(path, mode, gid)
    except StateDirError:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return created


def make_state_dir(path: Path | str, *, gid: int | None = None) -> list[Path]:
    """Make ``path`` a state directory (see the module); return what was made, outermost first.

    An existing directory gets its mode (0700, or 0750 and group ``gid``)
    set: a log left looser by an older version is tightened.

    Raises:
        StateDirError: ``path`` or a parent is a symlink where a directory
            is expected (``path`` itself) or not a directory, a shared
            directory, or cannot be made; what was made is removed again.
    """
    target = Path(path)
    if not str(target):
        raise StateDirError("expected a directory path")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as err:
        if err.errno != errno.ENOTDIR:
            raise StateDirError(f"{shown(target)}: {err.strerror}") from err
        st = None  # a parent is not a directory: found below, by name
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise _symlink(target)
        if not stat.S_ISDIR(st.st_mode):
            raise StateDirError(f"{shown(target)} exists and is not a directory")
        _secure(target, dir_mode(gid), gid)
        return []
    missing = [target]
    for parent in target.parents:
        try:
            parent_st = os.stat(parent)
        except FileNotFoundError:
            missing.append(parent)
            continue
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                missing.append(parent)
                continue
            raise StateDirError(f"cannot create {shown(target)}: {err.strerror}") from err
        if not stat.S_ISDIR(parent_st.st_mode):
            raise StateDirError(
                f"cannot create {shown(target)}: {shown(parent)} is not a directory"
            )
        break
    created: list[Path] = []
    try:
        for parent in reversed(missing[1:]):
            if _make_parent(parent):
                created.append(parent)
        if ensure_dir(target, dir_mode(gid), gid):
            created.append(target)
    except StateDirError:
        remove_created(created)
        raise
    return created


def _make_parent(path: Path) -> bool:
    """A missing parent, made 0755 (exactly); one that appeared meanwhile is
    left as it is if it is a directory. True if made here."""
    try:
        os.mkdir(path, PARENT_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise StateDirError(
                f"cannot create {shown(path)}: exists and is not a directory"
            ) from None
        return False
    except OSError as err:
        raise StateDirError(f"cannot create {shown(path)}: {err.strerror}") from err
    try:
        _secure(path, PARENT_MODE, None)
    except StateDirError:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise
    return True


def remove_created(created: list[Path]) -> None:
    """Remove directories :func:`make_state_dir` made (innermost first), as
    far as they are still empty: a failed command leaves nothing behind."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
