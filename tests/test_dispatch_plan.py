"""Syscall dispatch planning (agent/capture/dispatch.py) and the C mask test
it feeds (bpf/dispatch.bpf.c): no kernel, no bcc."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.capture import dispatch
from agent.capture.loader import BPF_DIR, LoadOptions, compile_flags, plan_probes
from agent.capture.probes import PROBES, probe_named, with_tracepoint_overrides

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def everything_exists(tracepoint: str) -> bool:
    return True


def test_syscall_tracepoints_name_a_direction_and_syscall() -> None:
    assert dispatch.syscall_of("syscalls:sys_enter_openat") == ("enter", "openat")
    assert dispatch.syscall_of("syscalls:sys_exit_exit_group") == ("exit", "exit_group")
    assert dispatch.syscall_of("raw_syscalls:sys_enter") is None
    assert dispatch.syscall_of("sched:sched_process_exit") is None
    assert dispatch.syscall_of("syscalls:sys_enter_") is None


def test_every_syscall_pair_of_the_table_has_a_slot() -> None:
    slots = [slot for probe in PROBES for slot in dispatch.slots_of(probe)]
    named = {name for p in PROBES for tp, _ in p.attach if (s := dispatch.syscall_of(tp))
             for name in [s[1]]}  # fmt: skip
    assert named == set(dispatch.SYSCALL_NUMBERS), "no number unused, none missing"
    assert all(0 <= s.nr < dispatch.SLOTS for s in slots)
    keys = [(s.direction, s.nr) for s in slots]
    assert len(keys) == len(set(keys)), "two handlers in one slot"
    openat = probe_named("file.openat")
    assert list(dispatch.slots_of(openat)) == [
        dispatch.Slot("enter", 257, "th_enter_openat"),
        dispatch.Slot("exit", 257, "th_exit_openat"),
    ]
    # exec.exit mixes both kinds: two enter slots, three perf tracepoints.
    exit_probe = probe_named("exec.exit")
    assert [(s.direction, s.nr) for s in dispatch.slots_of(exit_probe)] == [
        ("enter", 231),
        ("enter", 60),
    ]
    assert dispatch.directions([exit_probe]) == {"enter"}
    assert dispatch.directions(PROBES) == {"enter", "exit"}
    assert dispatch.directions([probe_named("exec.fork")]) == set()


@pytest.mark.skipif(not UNISTD_64.exists(), reason="no x86_64 <asm/unistd_64.h>")
def test_numbers_match_the_uapi_header() -> None:
    """The system's own x86_64 syscall table, for every syscall it knows
    (an older header lacks the newest ones, e.g. fchmodat2)."""
    header = dict(re.findall(r"^#define __NR_(\w+) (\d+)$", UNISTD_64.read_text(), flags=re.M))
    known = {name: int(header[name]) for name in dispatch.SYSCALL_NUMBERS if name in header}
    assert len(known) >= len(dispatch.SYSCALL_NUMBERS) - 2, sorted(known)
    assert known == {name: dispatch.SYSCALL_NUMBERS[name] for name in known}


def test_mask_flags_set_exactly_the_slots() -> None:
    flags = dispatch.mask_flags([probe_named("file.openat"), probe_named("exec.exit")])
    # openat 257 = word 4 bit 1, both ways; exit 60 and exit_group 231
    # (word 3 bit 39), enter only.
    assert flags == [
        f"-DTH_ENTER_MASK_0={1 << 60:#x}ULL",
        f"-DTH_ENTER_MASK_3={1 << 39:#x}ULL",
        "-DTH_ENTER_MASK_4=0x2ULL",
        "-DTH_EXIT_MASK_4=0x2ULL",
    ]
    assert dispatch.mask_flags([probe_named("exec.fork")]) == []
    all_flags = compile_flags(LoadOptions(), PROBES)
    assert set(dispatch.mask_flags(PROBES)) <= set(all_flags)


def test_the_exec_that_turns_32_bit_has_an_exit_slot() -> None:
    execve, execveat = probe_named("exec.execve"), probe_named("exec.execveat")
    assert dispatch.compat_exec_flags(PROBES) == ["-DTH_COMPAT_EXEC_EXIT_NR=59"]
    assert dispatch.compat_exec_flags([execveat]) == ["-DTH_COMPAT_EXEC_EXIT_NR=322"]
    assert dispatch.compat_exec_flags([execve, execveat]) == ["-DTH_COMPAT_EXEC_EXIT_NR=59"]
    assert dispatch.compat_exec_flags([probe_named("file.openat")]) == []
    assert "-DTH_COMPAT_EXEC_EXIT_NR=59" in compile_flags(LoadOptions(), PROBES)


def test_exit_handlers_know_their_slot_number() -> None:
    flags = dispatch.number_flags([probe_named("file.openat"), probe_named("exec.exit")])
    assert flags == ["-DTH_NR_th_exit_openat=257"]
    # The number is the slot's: an override moves a probe's first (enter)
    # pair only, so its exit handler stays at mkdir's.
    moved = with_tracepoint_overrides({"file.mkdir": "syscalls:sys_enter_mkdirat"})
    mkdir = next(p for p in moved if p.name == "file.mkdir")
    assert [(s.direction, s.nr) for s in dispatch.slots_of(mkdir)] == [("enter", 258), ("exit", 83)]
    assert dispatch.number_flags([mkdir]) == ["-DTH_NR_th_exit_mkdir=83"]
    assert "-DTH_NR_th_exit_openat2=437" in compile_flags(LoadOptions(), PROBES)


def test_unknown_syscall_is_reported_missing() -> None:
    probes = with_tracepoint_overrides({"file.mkdir": "syscalls:sys_enter_tracehound_nope"})
    present, missing = plan_probes(probes, everything_exists)
    assert "file.mkdir" not in {p.name for p in present}
    reasons = {m.name: m.reason for m in missing}
    assert reasons == {"file.mkdir": "no x86_64 syscall number known for tracehound_nope"}


def test_two_probes_cannot_share_a_slot() -> None:
    probes = with_tracepoint_overrides({"file.open": "syscalls:sys_enter_openat"})
    present, missing = plan_probes(probes, everything_exists)
    names = {p.name for p in present}
    assert "file.open" in names and "file.openat" not in names
    reasons = {m.name: m.reason for m in missing}
    assert reasons == {"file.openat": "syscall slot already taken by probe file.open"}


def test_slot_beyond_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dispatch.SYSCALL_NUMBERS, "mkdir", dispatch.SLOTS)
    assert dispatch.slot_problem("syscalls:sys_enter_mkdir") == (
        "syscall mkdir is beyond the 512-slot dispatch table"
    )
    with pytest.raises(ValueError, match="beyond"):
        dispatch.slot_for("syscalls:sys_enter_mkdir", "th_enter_mkdir")


def test_slot_count_matches_the_header() -> None:
    header = (BPF_DIR / "tracehound.h").read_text()
    found = re.search(r"^#define TH_SYSCALL_SLOTS (\d+)$", header, flags=re.M)
    assert found is not None and int(found.group(1)) == dispatch.SLOTS
    source = (BPF_DIR / "dispatch.bpf.c").read_text()
    for name in dispatch.PROG_ARRAYS.values():
        assert f"BPF_PROG_ARRAY({name}, TH_SYSCALL_SLOTS);" in source
    for tracepoint, fn in (dispatch.SYS_ENTER, dispatch.SYS_EXIT):
        assert f"int {fn}(struct bpf_raw_tracepoint_args *ctx)" in source, tracepoint


@needs_gcc
def test_the_c_mask_test_agrees_with_the_plan(tmp_path: Path) -> None:
    """TH_NR_IN from dispatch.bpf.c, compiled with gcc and the plan's masks,
    says yes for exactly the planned numbers in 0..SLOTS (and -1, 2**30)."""
    source = (BPF_DIR / "dispatch.bpf.c").read_text()
    macro = re.search(r"^#define TH_NR_IN\(.*?(?<!\\)\n", source, flags=re.M | re.S)
    assert macro is not None
    defaults = re.findall(r"^#ifndef (TH_\w+_MASK_\d)\n#define \1 0\n#endif\n", source, re.M)
    assert len(defaults) == 16
    program = tmp_path / "mask.c"
    program.write_text(
        '#include <stdio.h>\n#include <linux/types.h>\n#include "tracehound.h"\n'
        "typedef unsigned long long u64;\n"
        + "".join(f"#ifndef {n}\n#define {n} 0\n#endif\n" for n in defaults)
        + macro.group(0)
        + "int main(void) {\n"
        "    long nrs[] = {-1, 1L << 30, 512, 600};\n"
        "    for (long nr = 0; nr < 512; nr++)\n"
        '        if (TH_NR_IN(nr, TH_ENTER_MASK_)) printf("enter %ld\\n", nr);\n'
        "    for (long nr = 0; nr < 512; nr++)\n"
        '        if (TH_NR_IN(nr, TH_EXIT_MASK_)) printf("exit %ld\\n", nr);\n'
        "    for (int i = 0; i < 4; i++)\n"
        '        if (TH_NR_IN(nrs[i], TH_ENTER_MASK_)) printf("enter %ld\\n", nrs[i]);\n'
        "    return 0;\n}\n"
    )
    exe = tmp_path / "mask"
    flags = [f"-I{BPF_DIR}", *dispatch.mask_flags(PROBES)]
    subprocess.run(["gcc", "-Wall", "-Werror", *flags, "-o", str(exe), str(program)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = {(d, int(nr)) for d, nr in (line.split() for line in out.splitlines())}
    wanted = {(s.direction, s.nr) for p in PROBES for s in dispatch.slots_of(p)}
    assert got == wanted
