"""The /proc side: seeding marks what predates capture; the cache is bounded."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.capture.procfs import (
    ProcessInfoCache,
    gone_processes,
    read_process,
    seed_processes,
    started_ns,
)


def test_read_process_describes_a_real_process() -> None:
    child = subprocess.Popen(["/bin/sleep", "5"])
    try:
        # Until the child has exec'd, /proc shows the forked interpreter (or,
        # mid-exec, an empty cmdline): wait for sleep's image.
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child.pid}/comm").read_text() != "sleep\n":
            assert time.monotonic() < deadline, "the child never exec'd sleep"
            time.sleep(0.01)
        seen = read_process(child.pid, preexisting=False)
        assert seen is not None
        assert seen.pid == child.pid and seen.ppid == os.getpid()
        assert seen.cmdline == ("/bin/sleep", "5")
        assert seen.exe.endswith("sleep") and seen.comm == "sleep"
        assert seen.uid == os.getuid() and seen.preexisting is False
    finally:
        child.kill()
        child.wait()
    assert read_process(child.pid, preexisting=False) is None  # gone


def test_cache_is_bounded_and_counts() -> None:
    cache = ProcessInfoCache(capacity=2)
    pids = [os.getpid(), os.getppid(), 1]
    for pid in pids:
        assert cache.lookup(pid) is not None
    assert len(cache) == 2
    assert cache.evictions == 1 and cache.misses == 3
    assert cache.lookup(pids[-1]) is not None
    assert cache.hits == 1


def test_seed_marks_everything_preexisting_and_skips_the_agent() -> None:
    seeded = seed_processes(ProcessInfoCache(capacity=100_000), exclude=os.getpid())
    pids = {p.pid for p in seeded}
    assert 1 in pids and os.getpid() not in pids
    assert all(p.preexisting for p in seeded)
    starts = [(p.start_time, p.pid) for p in seeded]
    assert starts == sorted(starts)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProcessInfoCache(capacity=0)


def test_started_ns_is_on_the_events_clock() -> None:
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    child = subprocess.Popen(["/bin/sleep", "5"])
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    try:
        start = started_ns(child.pid)
        assert start is not None
        tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        assert before - tick <= start <= after + tick
    finally:
        child.kill()
        child.wait()
    assert started_ns(child.pid) is None


def test_gone_processes_sees_exits_and_reused_pids() -> None:
    child = subprocess.Popen(["/bin/sleep", "5"])
    try:
        start = started_ns(child.pid)
        assert start is not None
        alive, seeded = (child.pid, start + 1000), (child.pid, None)
        reused = (child.pid, start - 10_000_000_000)  # another process had this pid
        assert gone_processes([alive, seeded, reused]) == [reused]
    finally:
        child.kill()
        child.wait()
    assert gone_processes([alive, seeded]) == [alive, seeded]
