"""The start-up self-check of the kernel struct offsets.

BTF gives exact offsets, but a wrong entry in
:data:`agent.capture.kernel_layout.FIELDS` (the wrong member, a member whose
meaning changed) would still read garbage into every record. So right after
loading, ``th_layout_selfcheck`` (bpf/layout.bpf.c) is run once in this very
process with ``BPF_PROG_TEST_RUN``; it reads this process's tgid, parent,
uid, cgroup id and working directory through the offsets, and
:func:`compare` holds them against what /proc and the kernel's helpers say.
Any difference turns struct-based enrichment off for the whole run (the
programs then mark such fields unresolved) and is reported as the
``kernel.layout`` probe's status: in stats, the profile, and the evidence's
``capture.degraded`` record.

:func:`decode` and :func:`compare` are pure; :func:`run` does the bpf(2).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from agent.capture import bpf_abi
from agent.capture.bpf_syscall import BpfError, BpfMap, bpf_call

PATH_MAX: Final = 4096
#: struct th_layout_check (bpf/tracehound.h).
CHECK: Final = struct.Struct(f"<IIIIQQIIII{PATH_MAX}s")
#: The probe name the check reports under (a probe in every listing).
PROBE_NAME: Final = "kernel.layout"
PROBE_KIND: Final = "layout"
PROGRAM: Final = "th_layout_selfcheck"
RESULT_MAP: Final = "th_layout_check"
NOT_COMPILED: Final = "no struct offsets compiled in"


@dataclass(frozen=True)
class Reading:
    """What the check program read (``struct th_layout_check``)."""

    ran: bool
    compiled: bool
    tgid: int
    ppid: int
    cgroup_id: int
    cgroup_helper: int
    uid: int
    cwd_flags: int
    cwd: str


@dataclass(frozen=True)
class Facts:
    """The same facts as /proc and the system calls give them."""

    pid: int
    ppid: int
    uid: int
    cwd: str


def decode(data: bytes) -> Reading:
    ran, compiled, tgid, ppid, cgroup_id, helper, uid, flags, length, _pad, cwd = CHECK.unpack_from(
        data
    )
    text = cwd[: min(length, PATH_MAX)].decode("utf-8", "surrogateescape")
    return Reading(bool(ran), bool(compiled), tgid, ppid, cgroup_id, helper, uid, flags, text)


def facts_of_self() -> Facts:
    return Facts(os.getpid(), os.getppid(), os.getuid(), os.getcwd())


def compare(reading: Reading, facts: Facts) -> str:
    """Why the offsets cannot be trusted, or "" when every fact agrees. Pure."""
    if not reading.ran:
        return "the self-check program did not run"
    if not reading.compiled:
        return NOT_COMPILED
    checks = (
        ("tgid", reading.tgid, facts.pid),
        ("ppid", reading.ppid, facts.ppid),
        ("uid", reading.uid, facts.uid),
        ("cgroup id", reading.cgroup_id, reading.cgroup_helper),
        ("cwd flags", reading.cwd_flags, 0),
        ("cwd", reading.cwd, facts.cwd),
    )
    for what, read, truth in checks:
        if read != truth:
            return f"self-check: {what} read through BTF offsets is {read!r}, expected {truth!r}"
    return ""


def run(prog_fd: int, results: BpfMap, facts: Facts | None = None) -> str:
    """Run the check program in this process; "" if the offsets are right,
    else why not (one line). Never raises for a kernel refusal: that is a
    reason too."""
    zero = struct.pack("<I", 0)
    try:
        results.update(zero, bytes(CHECK.size))
        attr = bpf_abi.TestRunAttr(prog_fd=prog_fd)
        bpf_call(bpf_abi.BPF_PROG_TEST_RUN, attr, "run the layout self-check")
        value = results.lookup(zero)
    except BpfError as err:
        return f"self-check could not run: {err}"
    if value is None:
        return "self-check: no result"
    return compare(decode(value), facts or facts_of_self())


def run_by_fd(prog_fd: int, results_fd: int) -> str:
    """:func:`run` with the result map given by fd (it is not closed)."""
    table = BpfMap(os.dup(results_fd), RESULT_MAP)
    try:
        return run(prog_fd, table)
    finally:
        table.close()


__all__ = [
    "CHECK",
    "PROBE_NAME",
    "PROGRAM",
    "RESULT_MAP",
    "Facts",
    "Reading",
    "compare",
    "decode",
    "facts_of_self",
    "run",
]
