"""A probe whose tracepoint does not exist disables only its own events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio

from agent.capture.loader import LoadOptions, load
from agent.capture.probes import with_tracepoint_overrides
from agent.capture.session import CaptureSession
from agent.commands.launcher import launch
from agent.sinks.aggregating import AggregatingSink
from tests.conftest import TRACEHOUND

BOGUS = "syscalls:sys_enter_tracehound_does_not_exist"


def test_missing_tracepoint_disables_only_its_probe(kernel: None, tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    target = tmp_path / "made-by-mkdir"
    result = subprocess.run(
        [*TRACEHOUND, "profile", "--probe-tracepoint", f"file.mkdir={BOGUS}", "--output", str(out),
         "--", "/bin/sh", "-c", f"mkdir {target}; cat /etc/hostname > /dev/null"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert target.is_dir()
    profile = json.loads(out.read_text())
    probes = {p["name"]: p for p in profile["probes"]}
    assert probes["file.mkdir"]["attached"] is False
    assert BOGUS in probes["file.mkdir"]["reason"]
    others = [p for name, p in probes.items() if name != "file.mkdir"]
    assert others and all(p["attached"] for p in others)
    files = [f for p in profile["processes"] for f in p["files"]]
    assert not [f for f in files if f["op"] == "mkdir"]
    assert [f for f in files if f["path"] == "/etc/hostname"], "other file events must still flow"
    assert any("file.mkdir" in note for note in profile["notes"])
    assert profile["complete"] is False
    assert "INCOMPLETE" in result.stderr


def test_run_reports_missing_probe_in_stats(kernel: None, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    result = subprocess.run(
        [*TRACEHOUND, "run", "--duration", "1", "--stats-interval", "0", "--no-seed",
         "--probe-tracepoint", f"net.bind={BOGUS}", "--stats-file", str(stats_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "probe net.bind missing" in result.stderr
    stats = json.loads(stats_file.read_text())
    missing = [p for p in stats["probes"] if not p["attached"]]
    assert [p["name"] for p in missing] == ["net.bind"]


async def test_library_statuses_and_events(kernel: None, system_python: str) -> None:
    probes = with_tracepoint_overrides({"net.connect": BOGUS})
    capture = load(LoadOptions(probes=probes, scoped=True))
    try:
        sink = AggregatingSink()
        session = CaptureSession(capture, sink)
        code = (
            "import socket\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "c = socket.create_connection(s.getsockname())\n"
        )
        child = launch([system_python, "-c", code])
        capture.add_to_scope(child.pid)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            child.release()
            await trio.to_thread.run_sync(_waitpid, child.pid)
            session.stop()
        statuses = {s.name: s for s in capture.statuses}
    finally:
        capture.close()
    assert not statuses["net.connect"].attached
    assert statuses["net.bind"].attached and statuses["net.listen"].attached
    ops = {n.op for p in sink.finish().processes for n in p.network}
    assert "connect" not in ops
    assert {"bind", "listen"} <= ops


def _waitpid(pid: int) -> None:
    import os

    os.waitpid(pid, 0)
