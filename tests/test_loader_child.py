"""The loader's compile child, against the real kernel: what it hands over
keeps the programs attached, errors come back as one line, detaching closes
every attachment."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.capture import dispatch
from agent.capture.loader import CaptureError, LoadOptions, load
from agent.capture.probes import PROBES, Probe


def _perf_event_fds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[perf_event]":
                count += 1
        except OSError:
            continue
    return count


def test_handed_over_fds_keep_capturing_after_the_child_exits(kernel: None, tmp_path: Path) -> None:
    before = _perf_event_fds()
    capture = load(LoadOptions(), cache_dir=None)  # the compile child itself, not the cache
    try:
        tracepoints = sum(
            1
            for p in PROBES
            if not p.raw
            for tp, fn in p.attach
            if dispatch.slot_for(tp, fn) is None
        )
        # task_newtask, sched_process_exit, signal_generate/deliver,
        # sched_process_exec (its __data_loc filename needs no struct offset),
        # inet_sock_set_state, io_uring submit and complete.
        assert tracepoints == 8, "syscalls go through the dispatch tables, not perf events"
        assert _perf_event_fds() - before == tracepoints, "one perf event per tracepoint"
        assert all(s.attached for s in capture.statuses)
        marker = tmp_path / "loader-child-marker"
        subprocess.run(["/bin/sh", "-c", f": > {marker}"], check=True)
        time.sleep(0.1)
        ring = capture.mapped_ring()
        try:
            events = [capture.decoder.decode(r) for r in ring.read(1_000_000)]
        finally:
            ring.close()
        paths = {getattr(e, "path", None) for e in events}
        assert str(marker) in paths
        generated, _ = capture.kernel_counters()["file"]
        assert generated >= 1
        assert capture.decoder.syscall_names.get(59) == "execve", "names came from the child"
        capture.disable()
        capture.detach()
        assert _perf_event_fds() == before, "detach closed every attachment"
        exec_before = capture.kernel_counters()["exec"][0]
        subprocess.run(["/bin/true"], check=True)
        assert capture.kernel_counters()["exec"][0] == exec_before, "nothing runs after detach"
    finally:
        capture.close()
    assert _perf_event_fds() == before


def test_no_usable_probe_is_a_one_line_capture_error(kernel: None) -> None:
    bogus = Probe("file.open", "file", (("syscalls:sys_enter_tracehound_nope", "th_enter_open"),))
    with pytest.raises(CaptureError) as err:
        load(LoadOptions(probes=(bogus,)))
    assert str(err.value) == "none of the configured probes' tracepoints exist on this kernel"


def test_scope_map_through_bpf_syscalls(kernel: None) -> None:
    capture = load(LoadOptions(scoped=True))
    try:
        assert capture.scope_size() == 0
        capture.add_to_scope(os.getpid())
        capture.add_to_scope(1)
        assert capture.scope_size() == 2
    finally:
        capture.close()
