"""The program cache on disk, and the host facts its key is made of.

One file per key (``<key hex>.bpfcache``, :mod:`agent.capture.program_cache`
says what is in it) in a directory of tracehound's own:
``/var/lib/tracehound/cache`` unless :data:`CACHE_DIR_ENV` says otherwise
(set to the empty string: no cache at all). The directory is made as a
state directory (:func:`agent.state_dir.make_state_dir`: missing parents
0755, itself 0700, a symlink, a shared or another user's directory
refused). Files are written 0600 to a temporary name and renamed into
place, so a reader sees a whole file or none; there is no fsync, because
a file torn by a crash fails its checksum and is then only a miss. At most
:data:`KEEP_ENTRIES` files are kept, the least recently used go.

Reading refuses, as :class:`CacheFileError` (one line naming the file):
a symlink, anything but a regular file, a file owned by another user or
writable by group or others, one larger than
:data:`~agent.capture.program_cache.MAX_FILE_BYTES`, and whatever
:func:`~agent.capture.program_cache.decode_entry` refuses. A missing file
is just None (a miss).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import platform
import secrets
import stat
import time
from pathlib import Path
from typing import Final

import blake3

import agent
from agent.capture.program_cache import (
    MAX_FILE_BYTES,
    CacheEntry,
    CacheFormatError,
    KeyInputs,
    decode_entry,
    encode_entry,
)
from agent.errors import shown
from agent.state_dir import DIR_MODE, StateDirError, make_state_dir

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "KEEP_ENTRIES",
    "CacheDir",
    "CacheFileError",
    "cache_dir_setting",
    "key_inputs",
]

CACHE_DIR_ENV: Final = "TRACEHOUND_CACHE_DIR"
DEFAULT_CACHE_DIR: Final = "/var/lib/tracehound/cache"
#: Entries kept: run and profile differ (scoped or not), and so does each
#: set of capture options. An entry is ~0.4 MiB, so 32 bound the directory
#: near 13 MiB, and cover the variants a host (or the test suite, with its
#: disabled probes and layout checks) starts; a miss costs a ~10 s compile.
KEEP_ENTRIES: Final = 32
SUFFIX: Final = ".bpfcache"
FILE_MODE: Final = 0o600
#: A temporary file this old is a crashed writer's: removed when pruning.
_STALE_TEMP_S: Final = 600.0

#: The agent's sources that shape a cache entry: a change to any of them
#: (a new attach rule, a new format) makes every older entry a miss.
_CODE_FILES: Final = (
    "capture/compile_child.py",
    "capture/dispatch.py",  # which handler fills which dispatch slot
    "capture/loader.py",
    "capture/probes.py",
    "capture/program_cache.py",
    "capture/bpf_info.py",
)
#: Where libbcc may be (Debian's multiarch path first).
_LIBBCC: Final = (
    "/usr/lib/x86_64-linux-gnu/libbcc.so.0",
    "/usr/lib/aarch64-linux-gnu/libbcc.so.0",
    "/usr/lib64/libbcc.so.0",
    "/usr/lib/libbcc.so.0",
    "/usr/local/lib/libbcc.so.0",
)
_BTF: Final = Path("/sys/kernel/btf/vmlinux")


class CacheFileError(RuntimeError):
    """A cache file or directory that cannot be used; one line naming it."""


def cache_dir_setting() -> Path | None:
    """The cache directory, None when :data:`CACHE_DIR_ENV` is set empty (off)."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value is None:
        return Path(DEFAULT_CACHE_DIR)
    return Path(value) if value else None


def _file_digest(paths: list[Path]) -> str:
    hasher = blake3.blake3()
    for path in paths:
        hasher.update(os.fsencode(path.name) + b"\0")
        try:
            hasher.update(path.read_bytes())
        except OSError:
            hasher.update(b"\xff(missing)")
    return hasher.hexdigest()


def _bcc_identity() -> str:
    """bcc's version and its library's identity, found without importing
    bcc (that maps LLVM: the very cost the cache saves)."""
    parts = []
    spec = importlib.util.find_spec("bcc")
    if spec is not None and spec.origin:
        try:
            parts.append((Path(spec.origin).parent / "version.py").read_text().strip())
        except OSError:
            parts.append("no version.py")
    else:
        parts.append("no bcc")
    for candidate in _LIBBCC:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        parts.append(f"{os.path.realpath(candidate)} {st.st_size} {st.st_mtime_ns}")
        break
    return "; ".join(parts)


def _btf_digest() -> str:
    try:
        return blake3.blake3(_BTF.read_bytes()).hexdigest()
    except OSError:
        return "none"


def key_inputs(text: str, flags: list[str], attach: list[tuple[str, str, bool]]) -> KeyInputs:
    """The key's inputs for this host: ``text``, ``flags`` and ``attach``
    (the planned attachments) from the loader, the rest read here (~10 ms,
    most of it hashing the kernel's 5 MiB of BTF)."""
    root = Path(agent.__file__).resolve().parent
    uname = os.uname()
    return KeyInputs(
        tracehound=agent.__version__,
        code=_file_digest([root / name for name in _CODE_FILES]),
        text=text,
        flags=flags,
        attach=attach,
        bcc=_bcc_identity(),
        kernel=f"{uname.release} {uname.version} {platform.machine()}",
        btf=_btf_digest(),
    )


class CacheDir:
    """The cache directory, held open (every file operation is relative to
    it, so a directory swapped for a symlink later changes nothing).

    Raises CacheFileError when it cannot be made or is not tracehound's own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            make_state_dir(path, log_dir=False)
        except StateDirError as err:
            raise CacheFileError(f"program cache directory: {err}") from None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise CacheFileError(f"program cache directory {shown(path)}: {err.strerror}") from None
        st = os.fstat(self._fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.close(self._fd)
            raise CacheFileError(
                f"program cache directory {shown(path)}: expected mode 0700 and owner"
                f" uid {os.geteuid()}, found {stat.S_IMODE(st.st_mode):04o} and uid {st.st_uid}"
            )

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> CacheDir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def file_name(key: bytes) -> str:
        return key.hex() + SUFFIX

    def read(self, key: bytes) -> CacheEntry | None:
        """The entry stored for ``key``, None if there is none; raises
        CacheFileError for a file that must not be used (see the module)."""
        name = self.file_name(key)
        shown_name = shown(self.path / name)
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                dir_fd=self._fd,
            )
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise CacheFileError(f"{shown_name} is a symlink; refused") from None
            raise CacheFileError(f"{shown_name}: {err.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CacheFileError(f"{shown_name} is not a regular file; refused")
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise CacheFileError(
                    f"{shown_name}: owned by uid {st.st_uid} with mode"
                    f" {stat.S_IMODE(st.st_mode):04o}; expected this user's and 0600; refused"
                )
            if st.st_size > MAX_FILE_BYTES:
                raise CacheFileError(f"{shown_name}: {st.st_size} bytes, larger than any entry")
            data = _read_all(fd, st.st_size)
        except OSError as err:
            raise CacheFileError(f"{shown_name}: {err.strerror}") from None
        finally:
            os.close(fd)
        try:
            entry = decode_entry(data, key)
        except CacheFormatError as err:
            raise CacheFileError(f"{shown_name}: {err}") from None
        with contextlib.suppress(OSError):  # recently used: pruned last
            os.utime(name, dir_fd=self._fd, follow_symlinks=False)
        return entry

    def remove(self, key: bytes) -> None:
        """Remove ``key``'s file (a refused one, so it is not refused again)."""
        with contextlib.suppress(OSError):
            os.unlink(self.file_name(key), dir_fd=self._fd)

    def write(self, key: bytes, entry: CacheEntry) -> None:
        """Store ``entry`` under ``key`` (atomically), then prune. Raises
        CacheFileError (CacheFormatError for an entry that would be refused)."""
        data = encode_entry(key, entry)
        name = self.file_name(key)
        temp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=self._fd,
            )
            try:
                os.fchmod(fd, FILE_MODE)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._fd)
            raise CacheFileError(f"{shown(self.path / name)}: {err.strerror}") from None
        self.prune()

    def prune(self, keep: int = KEEP_ENTRIES) -> None:
        """Keep the ``keep`` most recently used entries; remove the rest and
        stale temporary files. Best effort: a file gone meanwhile is fine."""
        entries: list[tuple[float, str]] = []
        now = time.time()
        with os.scandir(self._fd) as listing:
            for item in listing:
                try:
                    mtime = item.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if item.name.endswith(SUFFIX) and not item.name.startswith("."):
                    entries.append((mtime, item.name))
                elif item.name.endswith(".tmp") and now - mtime > _STALE_TEMP_S:
                    with contextlib.suppress(OSError):
                        os.unlink(item.name, dir_fd=self._fd)
        entries.sort(reverse=True)
        for _, name in entries[keep:]:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._fd)


def _read_all(fd: int, size: int) -> bytes:
    """The file's bytes, at most one more than ``size`` (a file growing
    meanwhile is cut there, and then fails its length check)."""
    chunks = []
    left = size + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
