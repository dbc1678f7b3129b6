"""What the kernel says about a BPF map, program, BTF or attachment, by fd.

After a compile, the program cache (:mod:`agent.capture.program_cache`)
records what the kernel was given, taken from the kernel itself rather than
from bcc's bookkeeping: each map's definition and BTF type ids
(``BPF_OBJ_GET_INFO_BY_FD``), the BTF blob those ids refer to
(``BPF_BTF_GET_FD_BY_ID``, then its info), which program each attachment
runs and whether it is a perf tracepoint or a raw tracepoint
(``BPF_TASK_FD_QUERY``), and which program each prog array slot holds (a
prog array's lookup from user space gives the program's id).

What can go wrong: every call raises :class:`~agent.capture.bpf_syscall.BpfError`
naming the object; a slot that holds nothing is left out.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Final

from agent.capture import bpf_abi as abi
from agent.capture.bpf_syscall import BpfError, BpfMap, bpf_call

__all__ = [
    "FD_TYPE_RAW_TRACEPOINT",
    "FD_TYPE_TRACEPOINT",
    "FdQuery",
    "MapInfo",
    "btf_blob",
    "fd_query",
    "map_info",
    "prog_array_slots",
    "prog_type_and_id",
]


# enum bpf_task_fd_type
FD_TYPE_RAW_TRACEPOINT: Final = 0
FD_TYPE_TRACEPOINT: Final = 1

_U32: Final = struct.Struct("<I")
_MAX_BTF_BYTES: Final = 16 << 20


def _info(fd: int, info: ctypes.Structure, what: str) -> None:
    attr = abi.InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf_call(abi.BPF_OBJ_GET_INFO_BY_FD, attr, what)


@dataclass(frozen=True)
class MapInfo:
    """A map's definition as the kernel holds it (``btf_id`` 0: no BTF)."""

    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    btf_vmlinux_value_type_id: int
    map_extra: int


def map_info(fd: int) -> MapInfo:
    info = abi.MapInfo()
    _info(fd, info, f"map info of fd {fd}")
    return MapInfo(
        map_type=int(info.type),
        key_size=int(info.key_size),
        value_size=int(info.value_size),
        max_entries=int(info.max_entries),
        map_flags=int(info.map_flags),
        name=info.name.decode(errors="replace"),
        btf_id=int(info.btf_id),
        btf_key_type_id=int(info.btf_key_type_id),
        btf_value_type_id=int(info.btf_value_type_id),
        btf_vmlinux_value_type_id=int(info.btf_vmlinux_value_type_id),
        map_extra=int(info.map_extra),
    )


def prog_type_and_id(fd: int) -> tuple[int, int]:
    """The program type and the kernel's id of the program ``fd`` holds."""
    info = abi.ProgInfo()
    _info(fd, info, f"program info of fd {fd}")
    return int(info.type), int(info.id)


def btf_blob(btf_id: int) -> bytes:
    """The raw BTF (header, types, strings) loaded as object ``btf_id``."""
    fd = bpf_call(abi.BPF_BTF_GET_FD_BY_ID, abi.GetFdAttr(id=btf_id), f"open BTF id {btf_id}")
    try:
        info = abi.BtfInfo()
        _info(fd, info, f"BTF info of id {btf_id}")
        size = int(info.btf_size)
        if not 0 < size <= _MAX_BTF_BYTES:
            raise BpfError(errno.E2BIG, f"BTF id {btf_id}: {size} bytes")
        buf = ctypes.create_string_buffer(size)
        info = abi.BtfInfo(btf=ctypes.addressof(buf), btf_size=size)
        _info(fd, info, f"BTF of id {btf_id}")
        return buf.raw[: int(info.btf_size)]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FdQuery:
    """What an attachment fd of this process runs, and on what."""

    prog_id: int
    fd_type: int
    name: str  # the tracepoint's event name (a perf tracepoint's without its category)


def fd_query(fd: int) -> FdQuery:
    """``BPF_TASK_FD_QUERY`` on one of this process's attachment fds (a
    perf event with a program set, or a raw tracepoint link)."""
    buf = ctypes.create_string_buffer(256)
    attr = abi.FdQueryAttr(pid=os.getpid(), fd=fd, buf_len=len(buf), buf=ctypes.addressof(buf))
    bpf_call(abi.BPF_TASK_FD_QUERY, attr, f"query attachment fd {fd}")
    return FdQuery(int(attr.prog_id), int(attr.fd_type), buf.value.decode(errors="replace"))


def prog_array_slots(table: BpfMap) -> dict[int, int]:
    """{slot: program id} of every filled slot of a prog array."""
    slots: dict[int, int] = {}
    for slot in range(table.max_entries):
        value = table.lookup(_U32.pack(slot))
        if value is not None:
            slots[slot] = _U32.unpack(value)[0]
    return slots
