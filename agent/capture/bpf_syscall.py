"""BPF maps read and written with plain bpf(2) calls, no bcc.

The daemon keeps only file descriptors once its programs are loaded (see
:mod:`agent.capture.compile_child`): importing bcc would map libLLVM and
libclang (~80 MiB) for the few map operations it needs afterwards. This
module is those operations, through ``syscall(SYS_bpf, ...)`` via ctypes.

Keys and values are ``bytes`` of the map's exact sizes (read from the
kernel with ``BPF_OBJ_GET_INFO_BY_FD``, not trusted from anyone); callers
pack and unpack them with :mod:`struct`. A per-CPU map's value is one slot
per possible CPU, each rounded up to 8 bytes, as the kernel lays it out.

What can go wrong: every failing call raises :class:`BpfError` (an
``OSError`` with the errno) naming the operation and the map, except a
missing key, which is ``None`` from the lookups. ``lookup_batch`` raises
:class:`BatchUnsupported` on kernels without batch operations for this
map type, so callers can fall back to key-by-key iteration.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from agent.capture import bpf_abi as abi

__all__ = [
    "BPF_ANY",
    "BPF_MAP_TYPE_ARRAY",
    "BPF_MAP_TYPE_HASH",
    "BPF_MAP_TYPE_PERCPU_ARRAY",
    "BPF_MAP_TYPE_PERCPU_HASH",
    "BPF_MAP_TYPE_PROG_ARRAY",
    "BPF_MAP_TYPE_RINGBUF",
    "BatchUnsupported",
    "BpfError",
    "BpfMap",
    "bpf_call",
    "create_map",
    "possible_cpus",
]


# enum bpf_map_type
BPF_MAP_TYPE_HASH: Final = 1
BPF_MAP_TYPE_ARRAY: Final = 2
BPF_MAP_TYPE_PROG_ARRAY: Final = 3  # a lookup from user space gives the program's id
BPF_MAP_TYPE_PERCPU_HASH: Final = 5
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH: Final = 10
BPF_MAP_TYPE_RINGBUF: Final = 27
_PER_CPU_TYPES: Final = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)

BPF_ANY: Final = 0  # update flags: create or replace

#: __NR_bpf by machine; the syscall numbers differ per architecture.
_SYS_BPF: Final = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}

_BATCH_CHUNK: Final = 256  # entries per BPF_MAP_LOOKUP_BATCH call


class BpfError(OSError):
    """A bpf(2) call failed; ``errno`` is the kernel's."""


class BatchUnsupported(BpfError):
    """The kernel has no batch operations for this map (before 5.6, or the type)."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _sys_bpf_number() -> int:
    machine = platform.machine()
    try:
        return _SYS_BPF[machine]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf(2): no syscall number known for {machine}") from None


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    """One bpf(2) call; raises BpfError naming ``what`` on failure."""
    ret = int(
        _libc.syscall(
            ctypes.c_long(_sys_bpf_number()),
            ctypes.c_int(cmd),
            ctypes.byref(attr),
            ctypes.c_uint(ctypes.sizeof(attr)),
        )
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf(2) {what}: {os.strerror(err)}")
    return ret


def bpf_call(cmd: int, attr: ctypes.Structure, what: str) -> int:
    """bpf(2) command ``cmd`` with ``attr`` (a ctypes bpf_attr variant of
    the command's exact layout); its result. Raises BpfError naming ``what``.
    For the modules that load and describe programs (:mod:`agent.capture.replay`,
    :mod:`agent.capture.bpf_info`)."""
    return _bpf(cmd, attr, what)


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """How many CPUs a per-CPU map holds a slot for (the kernel's
    ``num_possible_cpus``, which may exceed the CPUs online).

    The file reads like ``0-3`` or ``0,2-5``; the count is the highest
    index plus one, as libbpf's ``libbpf_num_possible_cpus`` takes it.
    """
    text = path.read_text().strip()
    try:
        highest = max(int(part.rsplit("-", 1)[-1]) for part in text.split(",") if part)
    except ValueError:
        raise ValueError(f"{path}: expected CPU ranges like 0-3, got {text[:40]!r}") from None
    return highest + 1


class BpfMap:
    """One BPF map by its fd (the caller's: :meth:`close` closes it).

    Sizes and type come from the kernel. Not thread-safe (it reuses one
    buffer per call shape); the daemon uses it from its trio thread.
    """

    def __init__(self, fd: int, name: str = "") -> None:
        info = abi.MapInfo()
        attr = abi.InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
        _bpf(abi.BPF_OBJ_GET_INFO_BY_FD, attr, f"map info of fd {fd}")
        self.fd = fd
        self.name = name or info.name.decode(errors="replace")
        self.map_type = int(info.type)
        self.key_size = int(info.key_size)
        self.value_size = int(info.value_size)
        self.max_entries = int(info.max_entries)
        self.per_cpu = self.map_type in _PER_CPU_TYPES
        self.cpus = possible_cpus() if self.per_cpu else 1
        #: Bytes of one value as the syscalls read and write it.
        self.stride = (self.value_size + 7) & ~7 if self.per_cpu else self.value_size
        self.value_bytes = self.stride * self.cpus

    def __repr__(self) -> str:
        return (
            f"BpfMap({self.name!r}, fd={self.fd}, type={self.map_type},"
            f" key={self.key_size}, value={self.value_size})"
        )

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, self.key_size)

    def _elem(self, cmd: int, key: bytes, what: str) -> bytes | None:
        kbuf = self._key(key)
        vbuf = ctypes.create_string_buffer(self.value_bytes)
        attr = abi.ElemAttr(
            map_fd=self.fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(vbuf)
        )
        try:
            _bpf(cmd, attr, f"{what} in map {self.name}")
        except BpfError as err:
            if err.errno == errno.ENOENT:
                return None
            raise
        return vbuf.raw

    def lookup(self, key: bytes) -> bytes | None:
        """The value (all CPUs' slots for a per-CPU map), None if absent."""
        return self._elem(abi.BPF_MAP_LOOKUP_ELEM, key, "lookup")

    def lookup_and_delete(self, key: bytes) -> bytes | None:
        """Read and delete in one step (hash maps since 5.14): a count made
        between a read and a delete cannot fall in between. None if absent."""
        return self._elem(abi.BPF_MAP_LOOKUP_AND_DELETE_ELEM, key, "lookup-and-delete")

    def per_cpu_values(self, value: bytes) -> list[bytes]:
        """A per-CPU value cut into its CPUs' slots (each value_size bytes)."""
        return [value[i : i + self.value_size] for i in range(0, len(value), self.stride)]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_bytes:
            raise ValueError(
                f"map {self.name}: value is {len(value)} bytes, expected {self.value_bytes}"
            )
        kbuf = self._key(key)
        vbuf = ctypes.create_string_buffer(value, self.value_bytes)
        attr = abi.ElemAttr(
            map_fd=self.fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(vbuf), flags=flags
        )
        _bpf(abi.BPF_MAP_UPDATE_ELEM, attr, f"update in map {self.name}")

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was not there."""
        kbuf = self._key(key)
        attr = abi.ElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf))
        try:
            _bpf(abi.BPF_MAP_DELETE_ELEM, attr, f"delete in map {self.name}")
        except BpfError as err:
            if err.errno == errno.ENOENT:
                return False
            raise
        return True

    def next_key(self, key: bytes | None) -> bytes | None:
        """The key after ``key`` (the first with None), None at the end."""
        kbuf = self._key(key) if key is not None else None
        nbuf = ctypes.create_string_buffer(self.key_size)
        attr = abi.ElemAttr(
            map_fd=self.fd,
            key=ctypes.addressof(kbuf) if kbuf is not None else 0,
            value=ctypes.addressof(nbuf),
        )
        try:
            _bpf(abi.BPF_MAP_GET_NEXT_KEY, attr, f"next key in map {self.name}")
        except BpfError as err:
            if err.errno == errno.ENOENT:
                return None
            raise
        return nbuf.raw

    def keys(self) -> Iterator[bytes]:
        """Every key, by BPF_MAP_GET_NEXT_KEY. On a hash map being changed
        meanwhile a key can be missed or seen twice (the kernel restarts
        from the first key when the current one was deleted)."""
        key = self.next_key(None)
        while key is not None:
            yield key
            key = self.next_key(key)

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) key by key; a key deleted between the two calls is skipped."""
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def lookup_batch(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value), a few hundred per BPF_MAP_LOOKUP_BATCH call.

        Raises BatchUnsupported where the kernel has no batch lookup for
        this map (EINVAL, EOPNOTSUPP, ENOTSUPP 524) or a hash bucket holds
        more than a chunk (ENOSPC): fall back to :meth:`items`.
        """
        chunk = _BATCH_CHUNK
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        values = ctypes.create_string_buffer(self.value_bytes * chunk)
        # Hash maps use a 4-byte bucket cursor, arrays a key-sized one.
        cursor_in = ctypes.create_string_buffer(max(8, self.key_size))
        cursor_out = ctypes.create_string_buffer(max(8, self.key_size))
        out: list[tuple[bytes, bytes]] = []
        first = True
        while True:
            attr = abi.BatchAttr(
                in_batch=0 if first else ctypes.addressof(cursor_in),
                out_batch=ctypes.addressof(cursor_out),
                keys=ctypes.addressof(keys),
                values=ctypes.addressof(values),
                count=chunk,
                map_fd=self.fd,
            )
            done = False
            try:
                _bpf(abi.BPF_MAP_LOOKUP_BATCH, attr, f"batch lookup in map {self.name}")
            except BpfError as err:
                if err.errno == errno.ENOENT:  # the last chunk (possibly empty)
                    done = True
                elif err.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSPC, 524):
                    raise BatchUnsupported(err.errno, str(err)) from None
                else:
                    raise
            raw_keys, raw_values = keys.raw, values.raw
            for i in range(int(attr.count)):
                out.append(
                    (
                        raw_keys[i * self.key_size : (i + 1) * self.key_size],
                        raw_values[i * self.value_bytes : (i + 1) * self.value_bytes],
                    )
                )
            if done:
                return out
            ctypes.memmove(cursor_in, cursor_out, len(cursor_out))
            first = False

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int) -> BpfMap:
    """A new map owned by the caller (BPF_MAP_CREATE). The daemon's maps are
    made by bcc in the compile child; this is for tests and probes."""
    attr = abi.MapCreateAttr(
        map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries
    )
    fd = _bpf(abi.BPF_MAP_CREATE, attr, f"create map type {map_type}")
    os.set_inheritable(fd, False)
    try:
        return BpfMap(fd)
    except BaseException:
        os.close(fd)
        raise
