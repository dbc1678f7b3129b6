"""Where a command writes its results: one set of rules for every output option.

Every option that names an output (``profile -o``, ``run --stats-file``,
``--profile-file``, ``--ready-file``, ``--events``, ``evidence stream -o``,
``evidence export -o``) goes through :func:`check_output` before any capture
work starts, and through :func:`write_output`, :func:`replace_output` or
:func:`open_stream` when it is written. The rules:

- ``-`` is stdout.
- An existing character device or FIFO (``/dev/null``, a named pipe) is
  written through: opened ``O_WRONLY``, never truncated, never replaced.
- A symlink is refused (whoever runs on the host may have planted it, e.g.
  ``/tmp/out.json -> /etc/passwd``): the error names where it points.
- A directory, a missing parent directory, a socket or a block device is
  refused.
- A regular file, or a new path, is replaced: a fresh temporary file in the
  same directory (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600) is written,
  fsynced and renamed over the target. The old inode is never written
  into: it may be a hard link to something else.

The check is done again when writing: the directory is opened once and
everything after is relative to it, a device or FIFO is opened with
``O_NOFOLLOW`` and must be the very inode that was checked, a target that
has turned into anything but a regular file is refused. Every failure is
one line naming the option: :class:`~agent.errors.UsageError` at check
time, :class:`OutputError` (a :class:`~agent.errors.RunError`) at write
time. ``BrokenPipeError`` is left as it is: a reader that went away is not
an error of the output's (``tracehound ... | head``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias, overload

from agent.errors import RunError, UsageError, shown

__all__ = [
    "FILE_MODE",
    "OutputError",
    "OutputKind",
    "OutputStream",
    "OutputTarget",
    "check_output",
    "open_stream",
    "replace_output",
    "write_output",
]

FILE_MODE: Final = 0o600
"""Mode of every file an output option creates: results may hold argv and paths."""

OutputKind: TypeAlias = Literal["stdout", "through", "replace"]
"""``stdout``; ``through``: a device or FIFO written as it is; ``replace``:
a regular file (or a new path) replaced by a fresh file."""

_Identity: TypeAlias = tuple[int, int]
_TEMP_TRIES: Final = 8
# Bytes of the target's name kept in the temporary's: a name stops at 255
# bytes, and the temporary adds 18 (".", ".", 12 hex digits, ".tmp").
_NAME_KEEP: Final = 200


class OutputError(RunError):
    """An output could not be opened or written, or changed since it was checked."""


@dataclass(frozen=True)
class OutputTarget:
    """An output as checked at argument time; see the module's rules.

    ``directory`` is the ``(st_dev, st_ino)`` of the directory the path is
    in, ``identity`` that of the device or FIFO (``through`` only): what
    the write must find again.
    """

    option: str
    value: str
    kind: OutputKind
    path: Path | None = None
    directory: _Identity | None = None
    identity: _Identity | None = None

    @property
    def label(self) -> str:
        """``--output FILE``: how every message names this output."""
        return f"{self.option} {shown(self.value)}"

    @property
    def description(self) -> str:
        """What a success message says was written: the path, or ``stdout``."""
        return "stdout" if self.path is None else shown(self.path)


def _identity(st: os.stat_result) -> _Identity:
    return st.st_dev, st.st_ino


def _what(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


@overload
def check_output(option: str, value: str) -> OutputTarget: ...
@overload
def check_output(option: str, value: None) -> None: ...
@overload
def check_output(option: str, value: str | None) -> OutputTarget | None: ...


def check_output(option: str, value: str | None) -> OutputTarget | None:
    """Check ``option``'s ``value`` before any work is done (None: not given).

    Raises:
        UsageError: one line naming the option and what is wrong: a symlink
            (with the path it resolves to), a directory, a missing or
            unwritable parent directory, a socket or block device.
    """
    if value is None:
        return None
    if value == "-":
        return OutputTarget(option, value, "stdout")
    label = f"{option} {shown(value)}"
    if not value or value.endswith("/") or "\0" in value:
        raise UsageError(f"{label}: expected a file path, '-' for stdout")
    path = Path(value)
    parent = path.parent
    try:
        parent_st = os.stat(parent)
    except OSError as err:
        raise UsageError(
            f"{label}: directory {shown(parent)} {_missing(err)}; expected a file path"
            " in an existing directory"
        ) from err
    if not stat.S_ISDIR(parent_st.st_mode):
        raise UsageError(f"{label}: {shown(parent)} is not a directory")
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise UsageError(f"{label}: {err.strerror}") from err
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise UsageError(
            f"{label}: is a symlink to {shown(os.path.realpath(path))}; refusing to follow it"
        )
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{label}: is not writable")
        return OutputTarget(option, value, "through", path, _identity(parent_st), _identity(st))
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"{label}: is {_what(st.st_mode)}; expected a file path, a FIFO or a character device"
        )
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{label}: directory {shown(parent)} is not writable")
    return OutputTarget(option, value, "replace", path, _identity(parent_st))


def _missing(err: OSError) -> str:
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "does not exist"
    return f"cannot be used ({err.strerror})"


class OutputStream:
    """An open output: :meth:`write` writes all it is given or raises.

    Unbuffered: each call is written when it returns (the callers batch).
    Closing a replaced file fsyncs it; closing stdout leaves fd 1 open.
    """

    def __init__(self, target: OutputTarget, fd: int | None, *, sync_on_close: bool) -> None:
        self._target = target
        self._fd = fd  # None: stdout, through sys.stdout.buffer
        self._sync = sync_on_close
        self._closed = False

    @property
    def target(self) -> OutputTarget:
        return self._target

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write every byte.

        Raises:
            OutputError: the write failed (disk full, I/O error); one line.
            BrokenPipeError: the reader of a pipe or FIFO went away.
        """
        if self._closed:
            raise ValueError("write to a closed output")
        try:
            if self._fd is None:
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
                return
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(self._fd, view) :]
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(f"{self._target.label}: write failed ({err.strerror})") from err

    def sync(self) -> None:
        """fsync a replaced file (the data is on disk before it counts as written)."""
        if self._fd is not None and self._sync:
            try:
                os.fsync(self._fd)
            except OSError as err:
                raise OutputError(f"{self._target.label}: write failed ({err.strerror})") from err

    def close(self) -> None:
        """Sync (a replaced file) and close. Idempotent; the fd is closed even
        when the sync fails (then :class:`OutputError`)."""
        if self._closed:
            return
        self._closed = True
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)

    def abandon(self) -> None:
        """Close without syncing: what was written is about to be thrown away."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _swap_fd(self, fd: int) -> int:
        """Write to ``fd`` from now on; the old fd is returned, for the caller
        to close (a rotation, :mod:`agent.output_rotation`)."""
        old, self._fd = self._fd, fd
        assert old is not None
        return old

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_directory(target: OutputTarget) -> int:
    """The target's directory, opened, and the one that was checked."""
    assert target.path is not None
    try:
        dfd = os.open(target.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise OutputError(
            f"{target.label}: directory {shown(target.path.parent)}: {err.strerror}"
        ) from err
    if _identity(os.fstat(dfd)) != target.directory:
        os.close(dfd)
        raise OutputError(
            f"{target.label}: directory {shown(target.path.parent)} was replaced since it was"
            " checked; refusing to write"
        )
    return dfd


def _changed(target: OutputTarget, now: str) -> OutputError:
    return OutputError(f"{target.label}: {now} since it was checked; refusing to write")


READER_WAIT_S: Final = 30.0
"""How long writing to a FIFO waits for its reader before it fails."""


def _open_through(target: OutputTarget, wait_s: float = READER_WAIT_S) -> int:
    """Open the checked device or FIFO for writing: no truncation, no symlink,
    and the same inode as at check time (else refused, nothing written).

    A FIFO with no reader is waited for at most ``wait_s`` (non-blocking
    opens, retried), then refused: a blocking open would hang a thread that
    nothing can cancel, and with it the daemon's start or stop.
    """
    assert target.path is not None
    dfd = _open_directory(target)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fd = os.open(
                    target.path.name,
                    os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK,
                    dir_fd=dfd,
                )
                break
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise _changed(target, "became a symlink") from err
                if err.errno == errno.ENXIO and time.monotonic() < deadline:
                    time.sleep(0.1)  # a FIFO nobody reads yet
                    continue
                if err.errno == errno.ENXIO:
                    raise OutputError(
                        f"{target.label}: a FIFO with no reader after {wait_s:g} s"
                    ) from err
                raise OutputError(f"{target.label}: cannot open: {err.strerror}") from err
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if _identity(st) != target.identity or not (
        stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)
    ):
        os.close(fd)
        raise _changed(target, "was replaced")
    os.set_blocking(fd, True)  # writes may wait for the reader; opening no longer does
    return fd


def _name_prefix(name: str, limit: int) -> str:
    """The longest start of ``name`` whose filesystem bytes (UTF-8, an
    undecodable byte kept as itself) are at most ``limit``, cut between
    characters: never half a UTF-8 sequence, so a valid name stays one.
    Counted in bytes, since that is what the kernel's 255 limits: 120
    ``é`` are 240 bytes."""
    size = 0
    for index, char in enumerate(name):
        size += len(os.fsencode(char))
        if size > limit:
            return name[:index]
    return name


def _temporary(target: OutputTarget, dfd: int) -> tuple[int, str]:
    """A fresh 0600 file beside the target; a random name, so nobody can
    have planted it (and ``O_EXCL|O_NOFOLLOW`` refuses one that is there)."""
    assert target.path is not None
    stem = _name_prefix(target.path.name, _NAME_KEEP)
    for _ in range(_TEMP_TRIES):
        name = f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=dfd,
            )
        except FileExistsError:
            continue
        except OSError as err:
            raise OutputError(
                f"{target.label}: cannot create a file in {shown(target.path.parent)}:"
                f" {err.strerror}"
            ) from err
        os.fchmod(fd, FILE_MODE)  # exact, whatever the umask
        return fd, name
    raise OutputError(f"{target.label}: cannot create a temporary file (names taken)")


def _check_replaceable(target: OutputTarget, dfd: int) -> None:
    """What is at the target now must still be a regular file, or nothing."""
    assert target.path is not None
    try:
        st = os.stat(target.path.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise _changed(target, f"became {_what(st.st_mode)}")


def _commit(target: OutputTarget, dfd: int, name: str) -> None:
    """Rename the temporary over the target and make the rename durable."""
    assert target.path is not None
    _check_replaceable(target, dfd)
    try:
        os.rename(name, target.path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as err:
        raise OutputError(f"{target.label}: cannot replace it: {err.strerror}") from err
    with contextlib.suppress(OSError):  # some filesystems refuse a directory fsync
        os.fsync(dfd)


@contextlib.contextmanager
def replace_output(target: OutputTarget) -> Iterator[OutputStream]:
    """Write ``target`` whole or not at all (for a regular file).

    A regular target is replaced only when the block ends without an
    exception; on one, the temporary file is removed and the target is as
    it was. A device or FIFO is written through as the block writes; stdout
    likewise.

    Raises:
        OutputError: the target cannot be opened or written, or changed
            since :func:`check_output`.
    """
    if target.kind == "stdout":
        with OutputStream(target, None, sync_on_close=False) as out:
            yield out
        return
    if target.kind == "through":
        with OutputStream(target, _open_through(target), sync_on_close=False) as out:
            yield out
        return
    dfd = _open_directory(target)
    try:
        _check_replaceable(target, dfd)
        fd, name = _temporary(target, dfd)
        out = OutputStream(target, fd, sync_on_close=True)
        try:
            yield out
            out.close()  # fsynced before the rename: never a renamed, empty file
            _commit(target, dfd, name)
        except BaseException:
            out.abandon()
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


#: For :mod:`agent.output_rotation`, which makes files by the same rules.
open_directory = _open_directory


def write_output(target: OutputTarget, data: bytes) -> None:
    """Write a whole result to ``target`` (see :func:`replace_output`).

    Raises:
        OutputError: one line naming the option.
    """
    with replace_output(target) as out:
        out.write(data)


def open_stream(target: OutputTarget) -> OutputStream:
    """Open ``target`` for a stream of writes (``run --events``).

    A regular target is replaced now by a fresh, empty 0600 file, renamed
    into place at once, then written as the stream goes (readers see it
    grow). A device or FIFO is written through; opening a FIFO waits for a
    reader. The caller closes the stream.

    Raises:
        OutputError: one line naming the option.
    """
    if target.kind == "stdout":
        return OutputStream(target, None, sync_on_close=False)
    if target.kind == "through":
        return OutputStream(target, _open_through(target), sync_on_close=False)
    dfd = _open_directory(target)
    try:
        fd = replace_in(target, dfd)
    finally:
        os.close(dfd)
    return OutputStream(target, fd, sync_on_close=True)


def replace_in(target: OutputTarget, dfd: int) -> int:
    """A fresh 0600 file put in place of ``target``'s in the checked
    directory ``dfd`` (checked replaceable first; never through a
    symlink): its fd, open for writing. OutputError, one line."""
    _check_replaceable(target, dfd)
    fd, name = _temporary(target, dfd)
    try:
        _commit(target, dfd, name)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dfd)
        raise
    return fd
