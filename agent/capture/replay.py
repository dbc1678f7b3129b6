"""Load a cached compile into the kernel with plain bpf(2) calls: no bcc, no child.

What bcc did at the compile (:mod:`agent.capture.compile_child`), done again
from a :class:`~agent.capture.program_cache.CacheEntry`, in this order:
load each BTF blob (``BPF_BTF_LOAD``: task-storage maps need their value
type described), create each map (``BPF_MAP_CREATE``), patch every map
reference of every program with the new map's fd and load it
(``BPF_PROG_LOAD``), fill the prog arrays' slots with program fds; then,
separately (:func:`attach`, once the caller has written what the programs
read at their first run), attach each program: a perf event of
``PERF_TYPE_TRACEPOINT`` (the id from tracefs) with ``PERF_EVENT_IOC_SET_BPF``
and ``PERF_EVENT_IOC_ENABLE``, exactly as bcc's ``attach_tracepoint``, or
``BPF_RAW_TRACEPOINT_OPEN``.

What can go wrong: the kernel refusing any step (a verifier that changed, a
tracepoint gone, no memory) raises :class:`ReplayError`, one line naming the
step and the object, with every descriptor made so far closed: nothing is
left loaded or attached half-way, and the caller falls back to compiling.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.capture import bpf_abi as abi
from agent.capture.bpf_syscall import BpfError, bpf_call
from agent.capture.program_cache import (
    BPF_INSN_BYTES,
    BPF_OBJ_NAME_LEN,
    CachedMap,
    CachedProgram,
    CacheEntry,
)

__all__ = ["Loaded", "ReplayError", "attach", "load_entry"]


_PERF_TYPE_TRACEPOINT: Final = 2
_PERF_SAMPLE_RAW: Final = 1 << 10
_PERF_FLAG_FD_CLOEXEC: Final = 8
_PERF_EVENT_IOC_ENABLE: Final = 0x2400  # _IO('$', 0)
_PERF_EVENT_IOC_SET_BPF: Final = 0x40042408  # _IOW('$', 8, __u32)
#: __NR_perf_event_open by machine.
_SYS_PERF_EVENT_OPEN: Final = {
    "x86_64": 298,
    "aarch64": 241,
    "riscv64": 241,
    "armv7l": 364,
    "ppc64le": 319,
}
#: Bytes of verifier log asked for when a load fails, to say why.
_LOG_BYTES: Final = 1 << 16
_U32: Final = struct.Struct("<I")


class ReplayError(RuntimeError):
    """A cached program could not be loaded or attached; one line."""


class _PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr, its first version (PERF_ATTR_SIZE_VER0: 64 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass
class Loaded:
    """What :func:`load_entry` made: every map's fd by name, every program's
    fd by index. The caller owns them all (:meth:`close`)."""

    maps: dict[str, int] = field(default_factory=dict)
    programs: list[int] = field(default_factory=list)

    def close_programs(self) -> None:
        """Close the program fds: what is attached or in a prog array stays loaded."""
        programs, self.programs = self.programs, []
        for fd in programs:
            _close(fd)

    def close(self) -> None:
        self.close_programs()
        maps, self.maps = self.maps, {}
        for fd in maps.values():
            _close(fd)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _why(err: BpfError) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


def _load_btf(blob: bytes, number: int) -> int:
    buf = ctypes.create_string_buffer(blob, len(blob))
    attr = abi.BtfLoadAttr(btf=ctypes.addressof(buf), btf_size=len(blob))
    try:
        return bpf_call(abi.BPF_BTF_LOAD, attr, f"load BTF {number}")
    except BpfError as err:
        raise ReplayError(f"BPF_BTF_LOAD of BTF {number}: {_why(err)}") from None


def _create_map(table: CachedMap, btf_fds: list[int]) -> int:
    attr = abi.MapCreateAttr(
        map_type=table.map_type,
        key_size=table.key_size,
        value_size=table.value_size,
        max_entries=table.max_entries,
        map_flags=table.map_flags,
        map_name=table.name.encode()[: BPF_OBJ_NAME_LEN - 1],
        map_extra=table.map_extra,
    )
    if table.btf >= 0:
        attr.btf_fd = btf_fds[table.btf]
        attr.btf_key_type_id = table.btf_key_type_id
        attr.btf_value_type_id = table.btf_value_type_id
        attr.btf_vmlinux_value_type_id = table.btf_vmlinux_value_type_id
    try:
        return bpf_call(abi.BPF_MAP_CREATE, attr, f"create map {table.name}")
    except BpfError as err:
        raise ReplayError(f"BPF_MAP_CREATE of map {table.name}: {_why(err)}") from None


def _patched(prog: CachedProgram, map_fds: list[int]) -> ctypes.Array[ctypes.c_char]:
    insns = ctypes.create_string_buffer(prog.insns, len(prog.insns))
    for ref in prog.maps:
        struct.pack_into("<i", insns, ref.insn * BPF_INSN_BYTES + 4, map_fds[ref.map])
    return insns


def _verifier_reason(log: bytes) -> str:
    """The verifier's last words: the line that says what it refused."""
    lines = [line.strip() for line in log.split(b"\0", 1)[0].decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("processed ")]
    return lines[-1][:200] if lines else ""


def _load_program(prog: CachedProgram, license: bytes, map_fds: list[int]) -> int:
    insns = _patched(prog, map_fds)
    lic = ctypes.create_string_buffer(license)

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = abi.ProgLoadAttr(
            prog_type=prog.prog_type,
            insn_cnt=len(prog.insns) // BPF_INSN_BYTES,
            insns=ctypes.addressof(insns),
            license=ctypes.addressof(lic),
            prog_name=prog.name.encode()[: BPF_OBJ_NAME_LEN - 1],
            expected_attach_type=prog.expected_attach_type,
        )
        if log is not None:
            attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        return bpf_call(abi.BPF_PROG_LOAD, attr, f"load program {prog.name}")

    try:
        return attempt(None)
    except BpfError as err:
        first = err
    # Once more with the verifier's log, only to say why.
    log = ctypes.create_string_buffer(_LOG_BYTES)
    try:
        fd = attempt(log)
    except BpfError:
        reason = _verifier_reason(log.raw)
        suffix = f" ({reason})" if reason else ""
        raise ReplayError(f"BPF_PROG_LOAD of {prog.name}: {_why(first)}{suffix}") from None
    return fd  # refused once, accepted with a log: take it


def _fill_slot(array_fd: int, array: str, slot: int, prog_fd: int) -> None:
    key = ctypes.create_string_buffer(_U32.pack(slot), 4)
    value = ctypes.create_string_buffer(_U32.pack(prog_fd), 4)
    attr = abi.ElemAttr(map_fd=array_fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    try:
        bpf_call(abi.BPF_MAP_UPDATE_ELEM, attr, f"fill slot {slot} of {array}")
    except BpfError as err:
        raise ReplayError(f"prog array {array}: slot {slot}: {_why(err)}") from None


def load_entry(entry: CacheEntry) -> Loaded:
    """BTF, maps, programs and prog array slots of ``entry``, in the kernel.
    Raises ReplayError with everything made so far closed."""
    loaded = Loaded()
    btf_fds: list[int] = []
    try:
        for number, blob in enumerate(entry.btfs):
            btf_fds.append(_load_btf(blob, number))
        map_fds: list[int] = []
        for table in entry.maps:
            fd = _create_map(table, btf_fds)
            loaded.maps[table.name] = fd
            map_fds.append(fd)
        license = entry.license.encode()
        for prog in entry.programs:
            loaded.programs.append(_load_program(prog, license, map_fds))
        for slot in entry.prog_slots:
            table = entry.maps[slot.array]
            _fill_slot(map_fds[slot.array], table.name, slot.slot, loaded.programs[slot.program])
    except BaseException:
        loaded.close()
        raise
    finally:
        for fd in btf_fds:  # the maps hold the BTF they use
            _close(fd)
    return loaded


def _tracepoint_id(tracepoint: str, tracefs: Path) -> int:
    category, _, event = tracepoint.partition(":")
    path = tracefs / "events" / category / event / "id"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as err:
        raise ReplayError(
            f"tracepoint {tracepoint}: cannot read its id from {path}: {err}"
        ) from None


def _perf_event_open(attr: _PerfEventAttr) -> int:
    machine = platform.machine()
    number = _SYS_PERF_EVENT_OPEN.get(machine)
    if number is None:
        raise ReplayError(f"perf_event_open: no syscall number known for {machine}")
    fd = int(
        _libc.syscall(
            ctypes.c_long(number),
            ctypes.byref(attr),
            ctypes.c_int(-1),  # any process
            ctypes.c_int(0),  # one CPU: a tracepoint event fires on all CPUs anyway
            ctypes.c_int(-1),
            ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC),
        )
    )
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return fd


def _attach_tracepoint(tracepoint: str, prog_fd: int, tracefs: Path) -> int:
    """A perf event on ``tracepoint`` running ``prog_fd``, as bcc makes it."""
    attr = _PerfEventAttr(
        type=_PERF_TYPE_TRACEPOINT,
        size=ctypes.sizeof(_PerfEventAttr),
        config=_tracepoint_id(tracepoint, tracefs),
        sample_period=1,
        sample_type=_PERF_SAMPLE_RAW,
        wakeup_events=1,
    )
    try:
        fd = _perf_event_open(attr)
    except OSError as err:
        raise ReplayError(f"perf_event_open of {tracepoint}: {err.strerror}") from None
    try:
        fcntl.ioctl(fd, _PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, _PERF_EVENT_IOC_ENABLE, 0)
    except OSError as err:
        os.close(fd)
        raise ReplayError(f"attaching to {tracepoint}: {err.strerror}") from None
    return fd


def _attach_raw(tracepoint: str, prog_fd: int) -> int:
    name = ctypes.create_string_buffer(tracepoint.partition(":")[2].encode())
    attr = abi.RawTracepointAttr(name=ctypes.addressof(name), prog_fd=prog_fd)
    try:
        fd = bpf_call(abi.BPF_RAW_TRACEPOINT_OPEN, attr, f"attach raw tracepoint {tracepoint}")
    except BpfError as err:
        raise ReplayError(f"BPF_RAW_TRACEPOINT_OPEN of {tracepoint}: {_why(err)}") from None
    return fd


def attach(entry: CacheEntry, loaded: Loaded, tracefs: Path) -> list[int]:
    """Attach every program as the entry says; the attachment fds, in order
    (closing one detaches it). Raises ReplayError with the ones made so
    far closed again (detached)."""
    fds: list[int] = []
    try:
        for attachment in entry.attachments:
            prog_fd = loaded.programs[attachment.program]
            if attachment.kind == "raw_tracepoint":
                fds.append(_attach_raw(attachment.tracepoint, prog_fd))
            else:
                fds.append(_attach_tracepoint(attachment.tracepoint, prog_fd, tracefs))
    except BaseException:
        for fd in fds:
            _close(fd)
        raise
    return fds
