"""State directories on a fresh host: made as systemd's ``StateDirectory=`` would.

``/var/lib/tracehound/evidence`` must work on a host where ``/var/lib/tracehound``
does not exist yet: missing parents are made mode 0755, the directory
itself 0700 (0750, group set, when a group is to read it). A path that
exists and is not a directory, or is a symlink, is refused: whoever runs on
the host may have planted it. A shared directory (sticky bit, like
``/tmp``) is refused too: its mode must not be changed, and others could
plant files in it. So is a directory some other user owns (they could
rename ``keys/`` away and plant ``segments -> /etc``), and an existing
state directory that holds anything but an evidence log's own entries
(:data:`LOG_ENTRIES`): ``--state-dir /`` or a home directory given by
mistake is refused, never chmodded. An empty value is refused too: it
would mean the current directory.

Modes are set only where they differ: a directory (or file) that is
already right is not written to, so one on a filesystem mounted read-only
is accepted as it is (``fchmod`` there fails even to set the same mode).

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
    "FLEET_CURSOR_NAME",
    "GROUP_DIR_MODE",
    "LOG_ENTRIES",
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

INDEX_NAME: Final = "index.sqlite"
"""The query index beside the log (:mod:`agent.query.index_db`)."""
INDEX_FILES: Final = frozenset(INDEX_NAME + suffix for suffix in ("", "-wal", "-shm", "-journal"))
"""The index and SQLite's files beside it."""
FLEET_CURSOR_NAME: Final = "fleet-cursor.json"
"""The fleet publisher's cursor beside the log (:mod:`agent.fleet.cursor`)."""
FLEET_CURSOR_FILES: Final = frozenset({FLEET_CURSOR_NAME, FLEET_CURSOR_NAME + ".tmp"})
"""The cursor and the temporary file it is written through."""
LOG_ENTRIES: Final = frozenset(
    {
        "segments",
        "keys",
        "lock",
        "recovered",
        "pending-loss",
        "lost+found",
        *INDEX_FILES,
        *FLEET_CURSOR_FILES,
    }
)
"""What an evidence log's directory may already hold to be used (and its
mode set): what the store, the pending-loss slot, the query index and the
fleet publisher's cursor make,
and the ``lost+found`` of a filesystem made for the log alone."""


class StateDirError(Exception):
    """A state directory cannot be made or used; the message is one line."""


def dir_mode(gid: int | None) -> int:
    """0700, or 0750 when group ``gid`` is to read what is inside."""
    return DIR_MODE if gid is None else GROUP_DIR_MODE


def set_owner_mode(fd: int, mode: int, gid: int | None) -> None:
    """Give an open file or directory exactly ``mode`` (whatever the umask),
    and group ``gid`` unless None; nothing is changed (no ``fchown`` or
    ``fchmod`` at all) where they are right already, since a read-only
    filesystem refuses even a change to the same mode. Raises OSError."""
    st = os.fstat(fd)
    chowned = False
    if gid is not None and st.st_gid != gid:
        os.fchown(fd, -1, gid)
        chowned = True
    # A chown may clear the set-id bits: the mode is set again after one.
    if chowned or stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)


def _kept_mode(current: int) -> int:
    """For ``keep_group``: 0700, plus the group bits of a directory that is
    at most 0750 (those of its own group, left as they are)."""
    bits = stat.S_IMODE(current)
    if bits & ~GROUP_DIR_MODE:
        return DIR_MODE
    return DIR_MODE | (bits & 0o050)


def _foreign_entry(fd: int) -> str | None:
    """The first entry (in directory order) that is no part of an evidence
    log, or None; stops there, so a huge directory costs little."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.name not in LOG_ENTRIES:
                return entry.name
    return None


def _secure(
    path: Path,
    mode: int,
    gid: int | None,
    *,
    keep_group: bool = False,
    log_dir: bool = False,
) -> None:
    """Set an existing directory's mode and group, through an fd opened
    without following a symlink (one swapped in meanwhile is refused).

    Refused first, unchanged: a shared (sticky) directory, one owned by
    another user, and (``log_dir``) one that holds anything but
    :data:`LOG_ENTRIES`. ``keep_group``: ``mode`` is ignored, and the
    directory keeps its group bits (see :func:`_kept_mode`).
    """
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
        euid = os.geteuid()
        if st.st_uid != euid:
            raise StateDirError(
                f"{shown(path)} is owned by uid {st.st_uid}, not by this user (uid {euid});"
                " expected a directory of tracehound's own, e.g. /var/lib/tracehound/evidence"
            )
        if log_dir:
            try:
                foreign = _foreign_entry(fd)
            except OSError as err:
                raise StateDirError(f"{shown(path)}: cannot list it: {err.strerror}") from err
            if foreign is not None:
                raise StateDirError(
                    f"{shown(path)} holds {shown(foreign)}, which is no part of an evidence"
                    " log; expected an empty directory or an evidence log's (segments/,"
                    " keys/, lock, recovered/, pending-loss)"
                )
        if keep_group:
            mode = _kept_mode(st.st_mode)
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
        StateDirError: a symlink, not a directory, shared, another user's,
            or cannot be made.
    """
    return _ensure(path, mode, gid)


def _ensure(
    path: Path, mode: int, gid: int | None, *, keep_group: bool = False, log_dir: bool = False
) -> bool:
    """:func:`ensure_dir`, with :func:`_secure`'s options for one that exists
    (or appeared meanwhile)."""
    try:
        os.mkdir(path, mode)
        created = True
    except FileExistsError:
        created = False
    except OSError as err:
        raise StateDirError(f"cannot create {shown(path)}: {err.strerror}") from err
    try:
        _secure(path, mode, gid, keep_group=keep_group and not created, log_dir=log_dir)
    except StateDirError:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return created


def make_state_dir(
    path: Path | str, *, gid: int | None = None, keep_group: bool = False, log_dir: bool = True
) -> list[Path]:
    """Make ``path`` a state directory (see the module); return what was made, outermost first.

    An existing directory gets its mode (0700, or 0750 and group ``gid``)
    set: a log left looser by an older version is tightened. With
    ``keep_group`` (``evidence keygen``, which knows no API group; ``gid``
    must be None) an existing directory of mode at most 0750 keeps its
    group and group bits, a looser one becomes 0700: a log the daemon
    shares with its API group is neither loosened nor taken from it.
    ``log_dir=False``: a state directory of another kind (the program
    cache), whose entries are not checked against :data:`LOG_ENTRIES`.

    Raises:
        StateDirError: ``path`` is empty, or it or a parent is a symlink
            where a directory is expected (``path`` itself) or not a
            directory, a shared directory, another user's, holds more than
            an evidence log, or cannot be made; what was made is removed
            again.
    """
    if keep_group and gid is not None:
        raise ValueError("keep_group is for a caller that names no group")
    if not os.fspath(path):
        raise StateDirError(
            "an empty path (that would be the current directory); expected a directory"
            " path, e.g. /var/lib/tracehound/evidence"
        )
    target = Path(path)
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
        _secure(target, dir_mode(gid), gid, keep_group=keep_group, log_dir=log_dir)
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
        if _ensure(target, dir_mode(gid), gid, keep_group=keep_group, log_dir=log_dir):
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
