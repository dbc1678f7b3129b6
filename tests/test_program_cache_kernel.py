"""The program cache against the real kernel: a second load replays the first
compile with no child and no bcc, and captures; a bad cache file or a
program the kernel refuses is reported in one line and compiled instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.capture.cache_store import CacheDir
from agent.capture.events import ExecEvent, FileEvent
from agent.capture.loader import LoadedCapture, LoadOptions, load, plan_probes, program_key
from agent.capture.program_cache import CachedProgram, CacheEntry, decode_entry, encode_entry
from tests.conftest import require_kernel


def _children_cpu() -> float:
    """CPU time of every child this process has reaped: a compile child
    costs a second or more of it, a replay none."""
    times = os.times()
    return times.children_user + times.children_system


def _events(capture: LoadedCapture) -> list[object]:
    ring = capture.mapped_ring()
    try:
        return [capture.decoder.decode(r) for r in ring.read(1_000_000)]
    finally:
        ring.close()


def _file(cache: Path, options: LoadOptions) -> Path:
    present, _ = plan_probes(options.probes)
    return cache / CacheDir.file_name(program_key(options, present))


def test_a_second_load_replays_the_compile_and_captures(kernel: None, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reports: list[str] = []
    first = load(LoadOptions(), cache_dir=cache, report=reports.append)
    try:
        assert (first.cache.state, first.cache.reason, first.cache.stored) == (
            "miss",
            "no entry",
            "stored",
        )
        compiled = first.statuses
    finally:
        first.close()
    assert reports == []
    assert _file(cache, LoadOptions()).exists()

    before = _children_cpu()
    second = load(LoadOptions(), cache_dir=cache, report=reports.append)
    try:
        assert _children_cpu() == before, "a hit starts no compile child"
        assert second.cache.state == "hit"
        assert second.statuses == compiled
        assert all(s.attached for s in second.statuses)
        assert second.decoder.syscall_names.get(59) == "execve"
        marker, own = tmp_path / "replay-marker", tmp_path / "own-marker"
        subprocess.run(["/bin/sh", "-c", f": > {marker}"], check=True)
        own.write_text("the agent's own open is never traced")
        time.sleep(0.1)
        events = _events(second)
        generated = {kind: g for kind, (g, _) in second.kernel_counters().items()}
    finally:
        second.close()
    assert reports == []
    execs = [e for e in events if isinstance(e, ExecEvent)]
    files = [e for e in events if isinstance(e, FileEvent)]
    assert any(e.filename == "/bin/sh" and e.ret == 0 for e in execs), "an exec captured"
    opened = [e for e in files if e.path == str(marker)]
    assert opened and opened[0].ret >= 0, "an open captured"
    assert not [e for e in files if e.path == str(own)], "the agent pid came through the map"
    assert generated["exec"] >= 1 and generated["file"] >= 1


@pytest.fixture(scope="module")
def compiled_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real compile's cache file, for the module: the tests that spoil
    an entry each spoil a copy of it (a compile costs seconds; what each
    test proves is what its own load does with the spoiled copy)."""
    require_kernel()
    cache = tmp_path_factory.mktemp("compiled") / "cache"
    load(LoadOptions(), cache_dir=cache).close()
    path = _file(cache, LoadOptions())
    assert path.exists()
    return path


def _copy_of_compiled(cache: Path, compiled: Path) -> Path:
    """A cache directory of this test's own holding a copy of the module's
    compiled entry, as a store of it would have left it (0700, 0600)."""
    cache.mkdir(mode=0o700)
    path = cache / compiled.name
    shutil.copy2(compiled, path)
    assert path == _file(cache, LoadOptions()) and path.stat().st_mode & 0o777 == 0o600
    return path


def test_a_corrupt_cache_file_is_refused_and_recompiled(
    kernel: None, tmp_path: Path, compiled_entry: Path
) -> None:
    cache = tmp_path / "cache"
    path = _copy_of_compiled(cache, compiled_entry)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in some program's instructions
    path.write_bytes(bytes(data))
    reports: list[str] = []
    before = _children_cpu()
    capture = load(LoadOptions(), cache_dir=cache, report=reports.append)
    try:
        assert _children_cpu() > before, "compiled in a child"
        assert capture.cache.state == "miss"
        assert capture.cache.reason == f"refused: {path}: checksum mismatch: the file is corrupt"
        assert capture.cache.stored == "stored"
        assert all(s.attached for s in capture.statuses)
    finally:
        capture.close()
    assert reports == [
        f"program cache: {path}: checksum mismatch: the file is corrupt; ignored, compiling"
    ]
    key = bytes.fromhex(path.name.split(".")[0])
    decode_entry(path.read_bytes(), key)  # stored whole again


def test_a_truncated_cache_file_is_refused(
    kernel: None, tmp_path: Path, compiled_entry: Path
) -> None:
    cache = tmp_path / "cache"
    path = _copy_of_compiled(cache, compiled_entry)
    path.write_bytes(path.read_bytes()[:1000])
    reports: list[str] = []
    capture = load(LoadOptions(), cache_dir=cache, report=reports.append)
    try:
        assert capture.cache.state == "miss"
        assert "truncated" in capture.cache.reason
    finally:
        capture.close()
    assert len(reports) == 1 and "truncated" in reports[0] and "\n" not in reports[0]


def test_a_program_the_kernel_refuses_falls_back_to_compiling(
    kernel: None, tmp_path: Path, compiled_entry: Path
) -> None:
    """A well-formed entry whose first program the verifier refuses (it
    returns an uninitialised r0): nothing of it stays loaded, the start
    compiles, and the one line says which program and why."""
    cache = tmp_path / "cache"
    path = _copy_of_compiled(cache, compiled_entry)
    key = bytes.fromhex(path.name.split(".")[0])
    entry = decode_entry(path.read_bytes(), key)
    bad = CachedProgram(name=entry.programs[0].name, prog_type=5, insns=bytes([0x95]) + bytes(7))
    broken = CacheEntry(
        license=entry.license,
        btfs=entry.btfs,
        maps=entry.maps,
        programs=[bad, *entry.programs[1:]],
        attachments=entry.attachments,
        prog_slots=entry.prog_slots,
        syscall_names=entry.syscall_names,
    )
    path.write_bytes(encode_entry(key, broken))
    reports: list[str] = []
    capture = load(LoadOptions(), cache_dir=cache, report=reports.append)
    try:
        assert capture.cache.state == "miss"
        assert capture.cache.reason.startswith(f"replay failed: BPF_PROG_LOAD of {bad.name}: ")
        assert "R0 !read_ok" in capture.cache.reason
        assert capture.cache.stored == "stored"
        assert all(s.attached for s in capture.statuses)
    finally:
        capture.close()
    assert len(reports) == 1 and reports[0].startswith("program cache: loading the cached")


def test_no_cache_directory_means_compiling(kernel: None, tmp_path: Path) -> None:
    capture = load(LoadOptions(), cache_dir=None)
    try:
        assert capture.cache.state == "off"
    finally:
        capture.close()
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("")
    reports: list[str] = []
    capture = load(LoadOptions(), cache_dir=file_in_the_way / "cache", report=reports.append)
    try:
        assert capture.cache.state == "miss"
        assert capture.cache.reason.startswith("no cache directory: ")
        assert capture.cache.stored == ""
    finally:
        capture.close()
    assert len(reports) == 1 and reports[0].endswith("compiling without the program cache")


TAIL_CALLS = r"""
BPF_PROG_ARRAY(th_progs, 8);
BPF_ARRAY(th_hits, u64, 2);

static __always_inline void th_hit(u32 slot)
{
    u64 *count = th_hits.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
}

int th_target(struct bpf_raw_tracepoint_args *ctx)
{
    th_hit(1);
    return 0;
}

int th_dispatch(struct bpf_raw_tracepoint_args *ctx)
{
    th_hit(0);
    th_progs.call(ctx, 5);
    return 0;
}
"""


def test_prog_array_slots_are_recorded_and_refilled(kernel: None) -> None:
    """Tail calls: what the compile put in a prog array's slots is taken
    from the kernel, and a replay fills the same slots with its own
    programs, so the dispatcher reaches its target again."""
    import ctypes
    import struct

    from bcc import BPF

    from agent.capture import bpf_info, compile_child, replay
    from agent.capture.bpf_syscall import BpfMap
    from agent.capture.loader import TRACEFS
    from agent.capture.program_cache import ProgSlot

    bpf = BPF(text=TAIL_CALLS.encode())
    try:
        target = bpf.load_func(b"th_target", BPF.RAW_TRACEPOINT)
        bpf[b"th_progs"][ctypes.c_int(5)] = ctypes.c_int(target.fd)
        bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"th_dispatch")
        fd = int(bpf.raw_tracepoint_fds[b"sys_enter"])
        entry = compile_child.cache_entry(bpf, [("raw_syscalls:sys_enter", fd)], {})
    finally:
        bpf.cleanup()
    names = [p.name for p in entry.programs]
    maps = [m.name for m in entry.maps]
    assert sorted(names) == ["th_dispatch", "th_target"]
    assert entry.prog_slots == [ProgSlot(maps.index("th_progs"), 5, names.index("th_target"))]
    (attachment,) = entry.attachments
    assert (attachment.kind, attachment.tracepoint) == ("raw_tracepoint", "raw_syscalls:sys_enter")
    assert entry.programs[attachment.program].name == "th_dispatch"

    loaded = replay.load_entry(entry)
    attachments: list[int] = []
    try:
        target_id = bpf_info.prog_type_and_id(loaded.programs[names.index("th_target")])[1]
        attachments = replay.attach(entry, loaded, TRACEFS)
        loaded.close_programs()  # the slot and the attachment hold them now
        progs = BpfMap(loaded.maps["th_progs"], "th_progs")
        assert bpf_info.prog_array_slots(progs) == {5: target_id}
        hits = BpfMap(loaded.maps["th_hits"], "th_hits")
        for _ in range(100):
            os.getppid()
        counts = [struct.unpack("<Q", hits.lookup(struct.pack("<I", i)) or b"")[0] for i in (0, 1)]
        assert counts[0] >= 100 and counts[1] >= 100, counts
    finally:
        for fd in attachments:
            os.close(fd)
        loaded.close()
