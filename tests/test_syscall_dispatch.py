"""Syscall dispatch against the real kernel: the daemon's syscall probes are
two raw tracepoints and two dispatch tables (no per-syscall perf events, the
slow ones to release at stop), every concern's syscalls are still seen with
their arguments, ia32 syscalls are not mistaken for x86_64 ones, and the
register offsets the handlers read are the running kernel's."""

from __future__ import annotations

import collections
import ctypes
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from agent.capture import bpf_syscall, dispatch
from agent.capture.loader import BPF_DIR, LoadOptions, load, plan_probes
from agent.capture.probes import PROBES, TAIL_PROGRAMS, with_tracepoint_overrides
from tests.conftest import TRACEHOUND
from tests.test_run_daemon import wait_for

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
SYS_PIDFD_GETFD = 438


# -- the kernel's own layout (BTF) ---------------------------------------------


def btf_members(path: Path, wanted: set[str]) -> dict[str, dict[str, int]]:
    """Byte offset of every member of the named structs, from raw BTF
    (kernel Documentation/bpf/btf.rst): header, types, strings."""
    data = path.read_bytes()
    magic, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", data)
    assert magic == 0xEB9F
    types = hdr_len + type_off
    strings = hdr_len + str_off

    def name(off: int) -> str:
        return data[strings + off : data.index(b"\0", strings + off)].decode()

    # Bytes that follow each kind's 12-byte btf_type: fixed, or per member (vlen).
    fixed = {1: 4, 3: 12, 14: 4, 17: 4}
    per_member = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
    found: dict[str, dict[str, int]] = {}
    pos, end = types, types + type_len
    while pos < end:
        name_off, info, _ = struct.unpack_from("<III", data, pos)
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        if kind == 4 and vlen and name(name_off) in wanted and name(name_off) not in found:
            members = {}
            for i in range(vlen):
                m_name, _, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                bits = m_off & 0xFFFFFF if kind_flag else m_off
                members[name(m_name)] = bits // 8
            found[name(name_off)] = members
        pos += fixed.get(kind, 0) + per_member.get(kind, 0) * vlen
    return found


def header_constants() -> dict[str, int]:
    text = (BPF_DIR / "tracehound.h").read_text()
    return {n: int(v, 0) for n, v in re.findall(r"^#define (TH_\w+) (0x[0-9a-f]+|\d+)", text, re.M)}


@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="the kernel has no BTF")
def test_register_and_task_offsets_are_the_running_kernels() -> None:
    btf = btf_members(VMLINUX_BTF, {"pt_regs", "task_struct", "thread_info"})
    regs = btf["pt_regs"]
    consts = header_constants()
    for reg in ("di", "si", "dx", "r10", "r8", "r9", "orig_ax"):
        assert consts[f"TH_REGS_{reg.upper()}"] == regs[reg], reg
    # The window th_syscall_args reads: r10 first, di last.
    assert min(regs[r] for r in ("di", "si", "dx", "r10", "r8", "r9")) == consts["TH_REGS_R10"]
    assert max(regs[r] for r in ("di", "si", "dx", "r10", "r8", "r9")) == consts["TH_REGS_DI"]
    assert btf["task_struct"]["thread_info"] == 0
    assert btf["thread_info"]["status"] == consts["TH_TASK_STATUS_OFFSET"]


# -- helpers --------------------------------------------------------------------


def elf32(path: Path, target: Path, link: Path, status: int) -> None:
    """A static i386 program: umask(022) with 42 in edi (ia32 syscall 60:
    x86_64's exit, whose code is read from di), symlink(target, link) (ia32
    83: x86_64's mkdir), then exit(status) (ia32 1)."""
    base, code_at = 0x08048000, 52 + 32
    strings = bytes(target) + b"\0" + bytes(link) + b"\0"
    code_len = 5 + 5 + 5 + 2 + 5 + 5 + 5 + 2 + 5 + 5 + 2
    t_addr = base + code_at + code_len
    l_addr = t_addr + len(bytes(target)) + 1
    code = (
        b"\xb8" + struct.pack("<I", 60)  # mov eax, 60
        + b"\xbb" + struct.pack("<I", 0o22)  # mov ebx, 022
        + b"\xbf" + struct.pack("<I", 42)  # mov edi, 42
        + b"\xcd\x80"  # int 0x80
        + b"\xb8" + struct.pack("<I", 83)  # mov eax, 83
        + b"\xbb" + struct.pack("<I", t_addr)  # mov ebx, target
        + b"\xb9" + struct.pack("<I", l_addr)  # mov ecx, link
        + b"\xcd\x80"  # int 0x80
        + b"\xb8" + struct.pack("<I", 1)  # mov eax, 1
        + b"\xbb" + struct.pack("<I", status)  # mov ebx, status
        + b"\xcd\x80"
    )  # fmt: skip
    size = code_at + len(code) + len(strings)
    ehdr = (
        b"\x7fELF\x01\x01\x01"
        + bytes(9)
        + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + code_at, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    )
    phdr = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
    path.write_bytes(ehdr + phdr + code + strings)
    path.chmod(0o755)


def fd_kinds(pid: int) -> collections.Counter[str]:
    """What each of a process's fds is: perf_event, link:<type>, map:<type>."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in info.splitlines() if ":\t" in line)
        if target == "anon_inode:[perf_event]":
            kinds["perf_event"] += 1
        elif target == "anon_inode:bpf_link":
            kinds[f"link:{fields['link_type'].strip()}"] += 1
        elif target == "anon_inode:bpf-map":
            kinds[f"map:{fields['map_type'].strip()}"] += 1
    return kinds


def filled_slots_of(pid: int) -> dict[int, list[int]]:
    """Per program array the process holds (by fd), the filled slots: its
    fds taken with pidfd_getfd and read with plain bpf(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    tables: dict[int, list[int]] = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                    continue
            except OSError:
                continue
            ours = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            assert ours >= 0, os.strerror(ctypes.get_errno())
            table = bpf_syscall.BpfMap(ours)
            try:
                if table.map_type == bpf_syscall.BPF_MAP_TYPE_PROG_ARRAY:
                    tables[int(fd)] = [
                        nr
                        for nr in range(table.max_entries)
                        if table.lookup(struct.pack("<I", nr)) is not None
                    ]
            finally:
                table.close()
    finally:
        os.close(pidfd)
    return tables


# -- the daemon -----------------------------------------------------------------


def test_daemon_dispatches_every_concerns_syscalls(kernel: None, tmp_path: Path) -> None:
    ready, stats_file, events = tmp_path / "ready", tmp_path / "stats.json", tmp_path / "ev.ndjson"
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--ready-file", str(ready), "--stats-file", str(stats_file),
         "--events", str(events), "--stats-interval", "0", "--no-seed", "--no-evidence",
         "--fold-window-ms", "0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(ready, agent)
        kinds = fd_kinds(agent.pid)
        perf_pairs = sum(
            1
            for p in PROBES
            if not p.raw
            for tp, fn in p.attach
            if dispatch.slot_for(tp, fn) is None
        )
        raw_events = {tp for p in PROBES if p.raw for tp, _ in p.attach}
        raw_events |= {dispatch.SYS_ENTER[0], dispatch.SYS_EXIT[0]}
        # sys_enter and sys_exit, and net.connect_result's inet_sock_set_state
        assert kinds["link:raw_tracepoint"] == len(raw_events) == 3, kinds
        # fork, exit, 2 signals, listen, exec image, io_uring submit and complete
        assert kinds["perf_event"] == perf_pairs == 8, kinds
        # The two dispatch tables, and the file handlers' tail call into the resolver.
        tails = [slots for programs in TAIL_PROGRAMS.values() for _, slots, _ in programs]
        assert kinds[f"map:{bpf_syscall.BPF_MAP_TYPE_PROG_ARRAY}"] == 2 + len(tails), kinds
        planned = {(s.direction, s.nr) for p in PROBES for s in dispatch.slots_of(p)}
        tables = sorted(filled_slots_of(agent.pid).values())
        wanted = sorted(
            [*(sorted(nr for d, nr in planned if d == way) for way in ("enter", "exit")),
             *([slot] for slot in tails)]
        )  # fmt: skip
        assert tables == wanted, "the daemon's tables hold every planned handler"

        # One syscall of each concern, each from a process of its own.
        marker = tmp_path / "dispatch-open"
        made = tmp_path / "dispatch-mkdir"
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        script = (
            f": > {marker}; mkdir {made}; /bin/true dispatch-arg;"
            f" exec 3<>/dev/tcp/127.0.0.1/{port}; exit 7"
        )
        shell = subprocess.run(["/bin/bash", "-c", script], check=False)
        assert shell.returncode == 7
        server.close()
        i386 = tmp_path / "i386-prog"
        target, link = tmp_path / "i386-target", tmp_path / "i386-link"
        elf32(i386, target, link, 3)
        old = subprocess.run([str(i386)], check=False)
        assert old.returncode == 3 and link.is_symlink(), "the ia32 symlink really ran"
        time.sleep(0.3)
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
        print(f"SIGTERM to exit: {time.monotonic() - started:.2f} s")
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stderr
    stats = json.loads(stats_file.read_text())
    assert stats["balanced"] is True, stats["kinds"]
    assert all(p["attached"] for p in stats["probes"])
    lines = [json.loads(line) for line in events.read_text().splitlines()]

    files = {(e["path"], e["op"], e["syscall"]) for e in lines if e["kind"] == "file"}
    assert (str(marker), "open", "openat") in files
    assert (str(made), "mkdir", "mkdir") in files, "legacy mkdir(2): its own slot"
    execs = [e for e in lines if e["kind"] == "exec"]
    assert any(e["argv"] == ["/bin/true", "dispatch-arg"] and e["ret"] == 0 for e in execs)
    nets = [e for e in lines if e["kind"] == "net" and e["op"] == "connect"]
    assert any(
        n["endpoint"] and n["endpoint"]["address"] == "127.0.0.1" and n["endpoint"]["port"] == port
        for n in nets
    ), nets
    exits = [e for e in lines if e["kind"] == "exit" and e["have_code"] and e["exit_code"] == 7]
    assert exits, "exit_group(7) was seen at its entry"
    bash_pid = exits[0]["pid"]
    counts = collections.Counter()
    for e in lines:
        if e["kind"] == "syscalls" and e["pid"] == bash_pid:
            counts.update(e["counts"])
    assert counts["exit_group"] == 1 and counts["connect"] >= 1, counts

    # The 32-bit program: its exec (64-bit entry, ia32 exit) is recorded;
    # its ia32 symlink (83) is not taken for an x86_64 mkdir (83), nor its
    # umask (60) for an exit(42); its ia32 exit(3) is not traced at all.
    old_exec = [e for e in execs if e["filename"] == str(i386)]
    assert len(old_exec) == 1 and old_exec[0]["ret"] == 0, execs
    old_pid = old_exec[0]["pid"]
    assert not [e for e in lines if e["kind"] == "file" and e["pid"] == old_pid]
    old_exit = [e for e in lines if e["kind"] == "exit" and e["pid"] == old_pid]
    assert len(old_exit) == 1 and not old_exit[0]["have_code"], old_exit


# -- degraded: a missing syscall probe leaves its slots empty ----------------------


def test_missing_probe_leaves_its_slots_empty(kernel: None) -> None:
    probes = with_tracepoint_overrides({"net.connect": "syscalls:sys_enter_tracehound_nope"})
    present, _ = plan_probes(probes)
    capture = load(LoadOptions(probes=probes))
    try:
        statuses = {s.name: s for s in capture.statuses}
        assert not statuses["net.connect"].attached
        slots = capture.dispatch_slots()
        planned = {(s.direction, s.nr) for p in present for s in dispatch.slots_of(p)}
        assert {(d, nr) for d, nrs in slots.items() for nr in nrs} == planned
        assert 42 not in slots["enter"] and 42 not in slots["exit"]
        assert 49 in slots["enter"] and 49 in slots["exit"], "bind still attached"
        capture.disable()
        capture.detach()
        assert capture.dispatch_slots() == slots, "the daemon's references keep the tables full"
    finally:
        capture.close()
