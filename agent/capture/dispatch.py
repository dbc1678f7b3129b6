"""Syscall dispatch: which handler serves which syscall number.

tracehound does not attach one ``syscalls:sys_enter_X`` / ``sys_exit_X``
perf tracepoint per handler: releasing each one waits for an RCU grace
period under a global kernel mutex (~73 ms here, ~50 of them: seconds at
stop). One raw tracepoint program on ``raw_syscalls:sys_enter`` and one on
``sys_exit`` (bpf/dispatch.bpf.c) tail-call the handlers instead, through a
program array per direction indexed by syscall number. A probe's
``syscalls:sys_enter_X`` pair therefore means "slot nr(X) of the enter
table"; the tracefs event still decides whether the syscall exists.

Pure: numbers, slots and the compile-time masks, no I/O. The numbers are
x86_64's (arch/x86/entry/syscalls/syscall_64.tbl, a fixed ABI), for every
syscall a probe can name: bcc's table (``bcc.syscall``, 0.26) stops at 334
and lacks openat2 and fchmodat2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.capture.probes import Probe

#: The raw tracepoints and programs every syscall handler is reached from.
SYS_ENTER = ("raw_syscalls:sys_enter", "th_raw_sys_enter")
SYS_EXIT = ("raw_syscalls:sys_exit", "th_raw_sys_exit")
#: Program array of each direction, in bpf/dispatch.bpf.c.
PROG_ARRAYS = {"enter": "th_enter_progs", "exit": "th_exit_progs"}
#: Slots per table (TH_SYSCALL_SLOTS in bpf/tracehound.h).
SLOTS = 512
_MASK_WORDS = SLOTS // 64

#: x86_64 syscall numbers of the syscalls tracehound's probes name.
SYSCALL_NUMBERS: dict[str, int] = {
    "open": 2,
    "connect": 42,
    "accept": 43,
    "bind": 49,
    "listen": 50,
    "execve": 59,
    "exit": 60,
    "rename": 82,
    "mkdir": 83,
    "rmdir": 84,
    "creat": 85,
    "unlink": 87,
    "chmod": 90,
    "fchmod": 91,
    "exit_group": 231,
    "openat": 257,
    "mkdirat": 258,
    "unlinkat": 263,
    "renameat": 264,
    "fchmodat": 268,
    "accept4": 288,
    "renameat2": 316,
    "execveat": 322,
    "openat2": 437,
    "fchmodat2": 452,
}

_SYSCALL_TRACEPOINT = re.compile(r"syscalls:sys_(enter|exit)_(\w+)")


@dataclass(frozen=True, order=True)
class Slot:
    """One entry of a dispatch table: ``fn`` serves syscall ``nr`` at
    ``direction`` (``enter`` or ``exit``)."""

    direction: str
    nr: int
    fn: str

    @property
    def table(self) -> str:
        return PROG_ARRAYS[self.direction]


def syscall_of(tracepoint: str) -> tuple[str, str] | None:
    """``("enter", "openat")`` for ``syscalls:sys_enter_openat``; None for a
    tracepoint that is not a per-syscall one (those attach as they are)."""
    match = _SYSCALL_TRACEPOINT.fullmatch(tracepoint)
    return (match.group(1), match.group(2)) if match else None


def slot_for(tracepoint: str, fn: str) -> Slot | None:
    """The dispatch slot a (tracepoint, handler) pair fills, None if the
    pair is not a syscall's. Raises KeyError for a syscall whose number is
    not known, ValueError for one beyond the table."""
    syscall = syscall_of(tracepoint)
    if syscall is None:
        return None
    direction, name = syscall
    nr = SYSCALL_NUMBERS[name]
    if not 0 <= nr < SLOTS:
        raise ValueError(f"syscall {name} is number {nr}, beyond the {SLOTS}-slot table")
    return Slot(direction, nr, fn)


def slot_problem(tracepoint: str) -> str | None:
    """Why a syscall tracepoint cannot be dispatched (None: it can, or it is
    not a syscall's)."""
    syscall = syscall_of(tracepoint)
    if syscall is None:
        return None
    name = syscall[1]
    if name not in SYSCALL_NUMBERS:
        return f"no x86_64 syscall number known for {name}"
    if not 0 <= SYSCALL_NUMBERS[name] < SLOTS:
        return f"syscall {name} is beyond the {SLOTS}-slot dispatch table"
    return None


def slots_of(probe: Probe) -> Iterator[Slot]:
    """The dispatch slots a probe fills (its syscall pairs)."""
    for tracepoint, fn in probe.attach:
        slot = slot_for(tracepoint, fn)
        if slot is not None:
            yield slot


def directions(probes: Iterable[Probe]) -> set[str]:
    """The directions (``enter``/``exit``) whose dispatcher must attach."""
    return {slot.direction for probe in probes for slot in slots_of(probe)}


def mask_flags(probes: Iterable[Probe]) -> list[str]:
    """``-DTH_ENTER_MASK_<w>=0x...ULL`` / ``-DTH_EXIT_MASK_<w>`` for the
    non-zero words: the numbers each dispatcher hands on (bit nr % 64 of
    word nr / 64)."""
    words = {"enter": [0] * _MASK_WORDS, "exit": [0] * _MASK_WORDS}
    for probe in probes:
        for slot in slots_of(probe):
            words[slot.direction][slot.nr // 64] |= 1 << (slot.nr % 64)
    return [
        f"-DTH_{direction.upper()}_MASK_{i}={word:#x}ULL"
        for direction, mask in words.items()
        for i, word in enumerate(mask)
        if word
    ]


def number_flags(probes: Iterable[Probe]) -> list[str]:
    """``-DTH_NR_<handler>=<nr>`` for every exit handler: the number of the
    slot it fills, for handlers that report it (a compile-time constant
    instead of another read of the registers)."""
    return [
        f"-DTH_NR_{slot.fn}={slot.nr}"
        for probe in probes
        for slot in slots_of(probe)
        if slot.direction == "exit"
    ]


#: The handlers that can take an exec that switched the process to 32 bits
#: (it leaves with the ia32 execve number): both do the same, either will do.
_EXEC_EXIT_HANDLERS = ("th_exit_execve", "th_exit_execveat")


def compat_exec_flags(probes: Iterable[Probe]) -> list[str]:
    """``-DTH_COMPAT_EXEC_EXIT_NR=<nr>``: the exit slot of an exec handler,
    if one is planned (see bpf/dispatch.bpf.c)."""
    exits = {s.fn: s.nr for p in probes for s in slots_of(p) if s.direction == "exit"}
    for fn in _EXEC_EXIT_HANDLERS:
        if fn in exits:
            return [f"-DTH_COMPAT_EXEC_EXIT_NR={exits[fn]}"]
    return []
