"""Cgroup ids to paths and containers: the resolver, its cache, its books.

Every event header carries the cgroup v2 id of the task
(``bpf_get_current_cgroup_id()``: the kernfs node id, which is the cgroup
directory's inode number). This turns an id into the cgroup's path from the
hierarchy's root (as ``/proc/PID/cgroup`` writes it) and the container that
path names (:mod:`agent.capture.container_id`).

How: ``open_by_handle_at(2)`` on the cgroup2 mount with a kernfs file handle
(type 0xfe, FILEID_KERNFS, the 8-byte id) opens the directory in tens of
microseconds; ``readlink`` of its ``/proc/self/fd`` entry is its path. That
needs CAP_DAC_READ_SEARCH; without it (or on a kernel refusing kernfs
handles) the fallback walks the cgroup2 tree for a directory with that
inode number, bounded in depth and in directories read
(:data:`WALK_MAX_DEPTH`, :data:`WALK_MAX_DIRS`). The mount is found in
``/proc/self/mountinfo`` (hybrid hosts have it at ``/sys/fs/cgroup/unified``),
never assumed.

Cached: cgroup v2 ids are never reused (the kernel's 64-bit kernfs ids
grow) and a v2 cgroup cannot be renamed, so an id's path never changes;
the cache is an LRU of :data:`CACHE_CAPACITY` entries, evictions counted.
An id that cannot be resolved (its cgroup was removed before it was looked
up, no cgroup2 mount, the walk's bounds hit) is answered as
:data:`UNRESOLVED` (path None), counted, and never guessed. A removed
cgroup stays unresolved (cached: it cannot come back); any other failure
is not cached and is tried again the next time the id is asked for.

What can go wrong is never raised: every OSError becomes "unresolved"
with the reason counted in :attr:`CgroupResolver.stats`.

Not thread-safe: one resolver per task (the daemon's aggregate has one, the
evidence worker another).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
import trio

from agent.capture.container_id import Container, parse_container

__all__ = [
    "CACHE_CAPACITY",
    "UNRESOLVED",
    "CgroupInfo",
    "CgroupResolver",
    "CgroupStats",
    "cgroup2_mount",
    "resolve_periodically",
]

#: Entries the cache keeps (about 200 bytes each with a typical path).
CACHE_CAPACITY: Final = 4096
#: The walk's bounds: levels below the mount, and directories listed.
WALK_MAX_DEPTH: Final = 32
WALK_MAX_DIRS: Final = 65536
#: How often :func:`resolve_periodically` resolves noted ids, and at most how
#: many each time (about 50 us each by handle: at most ~13 ms of the loop).
RESOLVE_EVERY_S: Final = 0.25
RESOLVE_PER_TICK: Final = 256
#: Ids waiting to be resolved (:meth:`CgroupResolver.note`); past this, counted.
PENDING_CAPACITY: Final = 1024

FILEID_KERNFS: Final = 0xFE
_ENTRY_BYTES: Final = 200  # the dict slot, the key, the CgroupInfo, the Container
_READLINK_MAX: Final = 4096


class CgroupInfo(msgspec.Struct, frozen=True, gc=False):
    """What a cgroup id resolved to: ``path`` from the hierarchy's root
    (None: unresolved), and the ``container`` it names (None: none, or
    unresolved)."""

    path: str | None
    container: Container | None = None


UNRESOLVED: Final = CgroupInfo(path=None)


class CgroupStats(msgspec.Struct, frozen=True):
    """The resolver's books (``/v1/stats``): how ids were resolved, which
    could not be and why, and the cache (entries, capacity, evictions)."""

    mount: str | None
    by_handle: int
    by_walk: int
    unresolved: dict[str, int]
    pending_dropped: int
    entries: int
    capacity: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


def _unescape_mountinfo(field: str) -> str:
    r"""A mountinfo path field with its octal escapes (``\040``) undone."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def cgroup2_mount(mountinfo: str) -> tuple[str, str] | None:
    """``(mount point, root within the hierarchy)`` of the first cgroup2 mount
    in ``mountinfo`` (the text of ``/proc/self/mountinfo``), preferring one
    of the hierarchy's root; None if there is none. Pure."""
    found: list[tuple[str, str]] = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields = head.split(" ")
        if len(fields) < 5 or tail.split(" ", 1)[0] != "cgroup2":
            continue
        found.append((_unescape_mountinfo(fields[4]), _unescape_mountinfo(fields[3])))
    for mount, root in found:
        if root == "/":
            return mount, root
    return found[0] if found else None


class _FileHandle(ctypes.Structure):
    _fields_ = (
        ("handle_bytes", ctypes.c_uint32),
        ("handle_type", ctypes.c_int),
        ("cgroup_id", ctypes.c_uint64),
    )


_libc: ctypes.CDLL | None = None


def _open_by_handle(mount_fd: int, cgroup_id: int) -> int:
    """``open_by_handle_at`` of a kernfs id; the fd, or raises OSError."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    handle = _FileHandle(8, FILEID_KERNFS, cgroup_id)
    fd = int(
        _libc.open_by_handle_at(
            mount_fd, ctypes.byref(handle), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        )
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return fd


def _cost(info: CgroupInfo) -> int:
    return _ENTRY_BYTES + len(info.path or "")


#: errnos after which the handle route is given up for the walk.
_NO_HANDLES: Final = frozenset({errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOSYS})
#: errnos that mean the cgroup is gone (cached: ids are never reused).
_GONE: Final = frozenset({errno.ESTALE, errno.ENOENT})


class CgroupResolver:
    """Cgroup ids to :class:`CgroupInfo`, cached (see the module).

    ``mountinfo`` is the text to find the cgroup2 mount in (default: this
    process's ``/proc/self/mountinfo``, read on first use); ``handles``
    False forces the tree walk (tests). Two ways to ask:

    - :meth:`resolve`: the answer now, resolving a miss on the spot (a
      few syscalls): for the evidence worker, which has a core of its own;
    - :meth:`cached` plus :meth:`note` and :meth:`resolve_pending`: a cache
      lookup that never does I/O (None: not known yet), the id noted for a
      later :meth:`resolve_pending` (the daemon runs it off the drain).
    """

    def __init__(
        self,
        *,
        mountinfo: str | None = None,
        capacity: int = CACHE_CAPACITY,
        handles: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"cgroup cache capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._mountinfo = mountinfo
        self._mount: tuple[str, str] | None = None
        self._mount_looked = False
        self._mount_fd: int | None = None
        self._handles = handles
        self._cache: OrderedDict[int, CgroupInfo] = OrderedDict()
        self._pending: dict[int, None] = {}
        self.by_handle = 0
        self.by_walk = 0
        self.unresolved: Counter[str] = Counter()
        self.pending_dropped = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: The cache's estimated size (an entry's fixed cost plus its path).
        self.bytes = 0

    # -- asking -------------------------------------------------------------------
    def cached(self, cgroup_id: int) -> CgroupInfo | None:
        """The cached answer for ``cgroup_id``, or None (never any I/O)."""
        info = self._cache.get(cgroup_id)
        if info is not None:
            self._cache.move_to_end(cgroup_id)
            self.hits += 1
        return info

    def note(self, cgroup_id: int) -> None:
        """Ask for ``cgroup_id`` to be resolved by the next :meth:`resolve_pending`
        (nothing if it is cached already). Bounded: past
        :data:`PENDING_CAPACITY` waiting ids, one more is counted and dropped
        (it is noted again the next time it is seen)."""
        if cgroup_id in self._cache or cgroup_id in self._pending:
            return
        if len(self._pending) >= PENDING_CAPACITY:
            self.pending_dropped += 1
            return
        self._pending[cgroup_id] = None

    def pending(self) -> list[int]:
        """The ids noted and not resolved yet, oldest first."""
        return list(self._pending)

    def resolve_pending(self, limit: int | None = None) -> int:
        """Resolve the noted ids, oldest first, at most ``limit`` (None: all);
        I/O, a few syscalls each. How many were."""
        ids = list(self._pending)[:limit]
        for cgroup_id in ids:
            del self._pending[cgroup_id]
            self.resolve(cgroup_id)
        return len(ids)

    def resolve(self, cgroup_id: int) -> CgroupInfo:
        """``cgroup_id``'s :class:`CgroupInfo`, from the cache or looked up now."""
        info = self.cached(cgroup_id)
        if info is not None:
            return info
        self.misses += 1
        self._pending.pop(cgroup_id, None)
        info, keep = self._lookup(cgroup_id)
        if keep:
            self._keep(cgroup_id, info)
        return info

    def resolve_many(self, ids: Iterable[int]) -> dict[int, CgroupInfo]:
        """:meth:`resolve` of each id."""
        return {cgroup_id: self.resolve(cgroup_id) for cgroup_id in ids}

    def stats(self) -> CgroupStats:
        mount = self._mount[0] if self._mount is not None else None
        return CgroupStats(
            mount=mount, by_handle=self.by_handle, by_walk=self.by_walk,
            unresolved=dict(sorted(self.unresolved.items())),
            pending_dropped=self.pending_dropped, entries=len(self._cache),
            capacity=self.capacity, bytes=self.bytes,
            max_bytes=self.capacity * (_ENTRY_BYTES + _READLINK_MAX),
            hits=self.hits, misses=self.misses,
            evictions=self.evictions,
        )  # fmt: skip

    def close(self) -> None:
        if self._mount_fd is not None:
            os.close(self._mount_fd)
            self._mount_fd = None

    # -- looking up -----------------------------------------------------------------
    def _keep(self, cgroup_id: int, info: CgroupInfo) -> None:
        self._cache[cgroup_id] = info
        self.bytes += _cost(info)
        while len(self._cache) > self.capacity:
            _, gone = self._cache.popitem(last=False)
            self.bytes -= _cost(gone)
            self.evictions += 1

    def _find_mount(self) -> tuple[str, str] | None:
        if not self._mount_looked:
            self._mount_looked = True
            text = self._mountinfo
            if text is None:
                try:
                    with open(
                        "/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape"
                    ) as f:
                        text = f.read()
                except OSError:
                    text = ""
            self._mount = cgroup2_mount(text)
        return self._mount

    def _unresolved(self, why: str, keep: bool) -> tuple[CgroupInfo, bool]:
        self.unresolved[why] += 1
        return UNRESOLVED, keep

    def _lookup(self, cgroup_id: int) -> tuple[CgroupInfo, bool]:
        """The info and whether to cache it (a transient failure is not)."""
        mount = self._find_mount()
        if mount is None:
            return self._unresolved("no-cgroup2-mount", True)
        mount_point, root = mount
        if self._handles:
            try:
                relative = self._by_handle(mount_point, cgroup_id)
            except OSError as err:
                if err.errno in _GONE:
                    return self._unresolved("gone", True)
                if err.errno not in _NO_HANDLES:
                    return self._unresolved(errno.errorcode.get(err.errno or 0, "error"), False)
                self._handles = False  # no CAP_DAC_READ_SEARCH, or no kernfs handles
            else:
                if relative is None:
                    return self._unresolved("outside-mount", True)
                self.by_handle += 1
                return self._info(root, relative), True
        relative, complete = self._walk(mount_point, cgroup_id)
        if relative is None:
            # Not found in a complete walk: gone. A walk cut short proves nothing.
            return self._unresolved("gone" if complete else "walk-limit", complete)
        self.by_walk += 1
        return self._info(root, relative), True

    @staticmethod
    def _info(root: str, relative: str) -> CgroupInfo:
        path = relative if root == "/" else (root.rstrip("/") + relative).rstrip("/") or "/"
        return CgroupInfo(path=path, container=parse_container(path))

    def _by_handle(self, mount_point: str, cgroup_id: int) -> str | None:
        """The path below ``mount_point`` (``/a/b``, ``/`` for the root) of the
        directory the handle opens; None if it is not below the mount."""
        if self._mount_fd is None:
            self._mount_fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = _open_by_handle(self._mount_fd, cgroup_id)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}".encode())
        finally:
            os.close(fd)
        if len(link) > _READLINK_MAX:
            return None
        base = mount_point.encode("utf-8", "surrogateescape").rstrip(b"/")
        if link == base:
            return "/"
        if not link.startswith(base + b"/"):
            return None
        return link[len(base) :].decode("utf-8", "surrogateescape")

    def _walk(self, mount_point: str, cgroup_id: int) -> tuple[str | None, bool]:
        """Breadth-first search below the mount for a directory whose inode
        number is ``cgroup_id``: ``(path below the mount or None, whether the
        whole tree was searched)``."""
        try:
            if os.stat(mount_point).st_ino == cgroup_id:
                return "/", True
        except OSError:
            return None, False
        level: list[bytes] = [b""]
        base = mount_point.encode("utf-8", "surrogateescape").rstrip(b"/")
        listed = 0
        for _depth in range(WALK_MAX_DEPTH):
            below: list[bytes] = []
            for relative in level:
                if listed >= WALK_MAX_DIRS:
                    return None, False
                listed += 1
                try:
                    entries = os.scandir(base + relative)
                except OSError:
                    continue  # removed meanwhile, or unreadable
                with entries:
                    for entry in entries:
                        try:
                            if not entry.is_dir(follow_symlinks=False):
                                continue
                            inode = entry.inode()
                        except OSError:
                            continue
                        child = relative + b"/" + entry.name
                        if inode == cgroup_id and stat.S_ISDIR(entry.stat().st_mode):
                            return child.decode("utf-8", "surrogateescape"), True
                        below.append(child)
            if not below:
                return None, True
            level = below
        return None, False


async def resolve_periodically(
    resolve: Callable[[int], int],
    interval: float = RESOLVE_EVERY_S,
    per_tick: int = RESOLVE_PER_TICK,
) -> None:
    """Call ``resolve(per_tick)`` (:meth:`AggregatingSink.resolve_cgroups`)
    every ``interval`` seconds, forever: the noted cgroup ids are looked up
    off the drain (folding never does I/O) and soon enough that a
    container's cgroup is still there (a removed one is unresolved, counted)."""
    while True:
        await trio.sleep(interval)
        resolve(per_tick)
