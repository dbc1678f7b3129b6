"""`tracehound run`: host-wide capture, stats, a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.types import parse_rfc3339_ns
from tests.conftest import TRACEHOUND
from tests.harness import wait_until


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"tracehound run died: {proc.stderr.read() if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("tracehound run never became ready")
        time.sleep(0.05)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_captures_and_stops_cleanly(
    kernel: None, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    ready, stats_file = tmp_path / "ready", tmp_path / "stats.json"
    events, profile_file = tmp_path / "events.ndjson", tmp_path / "profile.json"
    log = tmp_path / "stderr.log"
    launched = time.time_ns()
    with open(log, "w") as err:
        agent = subprocess.Popen(
            [*TRACEHOUND, "run", "--ready-file", str(ready), "--stats-file", str(stats_file),
             "--events", str(events), "--profile-file", str(profile_file),
             "--stats-interval", "0.5"],
            stderr=err, text=True,
        )  # fmt: skip
    try:
        wait_for(ready, agent)
        marker = tmp_path / "run-marker"
        subprocess.run(
            ["/bin/sh", "-c", f"echo hi > {marker}; /bin/true tracehound-run-arg"], check=True
        )
        wait_until(lambda: "events exec=" in log.read_text(), "a stats line", 30)
        agent.send_signal(stop_signal)
        agent.wait(timeout=60)
        stderr = log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "events exec=" in stderr and "lost exec=" in stderr
    assert f"{stop_signal.name}: stopping" in stderr
    stats = json.loads(stats_file.read_text())
    assert stats["balanced"] is True, stats["kinds"]
    assert all(p["attached"] for p in stats["probes"])
    assert stats["kinds"]["exec"]["delivered"] >= 2
    # uptime_s counts from started_at: wall clock, RFC 3339 UTC, within this run
    started = parse_rfc3339_ns(stats["started_at"])
    assert launched - launched % 10**6 <= started <= time.time_ns(), stats["started_at"]
    # the profile carries the boot offset its *_ns times convert with
    offset = json.loads(profile_file.read_text())["boot_offset_ns"]
    assert abs(offset + time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.time_ns()) < 10**9
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    execs = [e for e in lines if e["kind"] == "exec"]
    assert any(e["argv"] == ["/bin/true", "tracehound-run-arg"] for e in execs)
    files = [e for e in lines if e["kind"] == "file" and e["path"] == str(marker)]
    assert files and files[0]["op"] == "open"
    # The stream and the aggregate saw the same exec records.
    assert stats["kinds"]["exec"]["sinks"]["events"]["delivered"] == len(execs)
    profile = json.loads(profile_file.read_text())
    assert any(p["preexisting"] for p in profile["processes"]), "seeded from /proc"
    assert any(p["argv"] == ["/bin/true", "tracehound-run-arg"] for p in profile["processes"])


def test_sd_notify_messages_reach_the_socket_we_provide(kernel: None, tmp_path: Path) -> None:
    """READY=1 once probes are attached, STATUS= lines, WATCHDOG=1 while the
    drain runs (WATCHDOG_USEC set), STOPPING=1 on SIGTERM."""
    import os
    import socket

    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--no-seed", "--stats-interval", "0.3"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            "READY=1" in messages
            and messages.count("WATCHDOG=1") >= 2
            and any(m.startswith("STATUS=events exec=") for m in messages)
        ):
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        agent.send_signal(signal.SIGHUP)  # a reload: RELOADING=1, then READY=1 again
        end = time.monotonic() + 30
        while time.monotonic() < end and messages.count("READY=1") < 2:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        agent.send_signal(signal.SIGTERM)
        end = time.monotonic() + 30
        while time.monotonic() < end and "STOPPING=1" not in messages:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue
        _, stderr = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
        listener.close()
    assert agent.returncode == 0, stderr
    assert "READY=1" in messages
    ready = messages.index("READY=1")
    assert any(m.startswith("STATUS=capturing:") for m in messages[:ready])
    assert messages.count("WATCHDOG=1") >= 2
    assert any(m.startswith("STATUS=events exec=") for m in messages)
    reloading = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
    assert len(reloading) == 1 and reloading[0] > ready
    assert messages.count("READY=1") == 2
    assert "SIGHUP: configuration reloaded (generation 2)" in stderr
    assert "STOPPING=1" in messages and messages.index("STOPPING=1") > reloading[0]


def test_metrics_endpoint_parses_and_has_depth_gauges(kernel: None, tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    ready = tmp_path / "ready"
    config = tmp_path / "tracehound.toml"
    config.write_text('[metrics]\nlisten = "127.0.0.1:19464"\n')
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--config", str(config), "--ready-file", str(ready),
         "--no-seed", "--stats-interval", "0", "--evidence", str(tmp_path / "ev")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(ready, agent)
        subprocess.run(["/bin/true", "metrics-probe"], check=True)
        page: list[str] = []

        def scraped_the_exec() -> bool:
            with urllib.request.urlopen("http://127.0.0.1:19464/metrics", timeout=10) as reply:
                assert reply.status == 200
                page[:] = [reply.read().decode()]
            return 'tracehound_events_total{kind="exec"} 0.0' not in page[0]

        wait_until(scraped_the_exec, "the exec in the metrics", 30)
        text = page[0]
        with urllib.request.urlopen("http://127.0.0.1:19464/nope", timeout=10) as missing:
            raise AssertionError(f"expected 404, got {missing.status}")
    except urllib.error.HTTPError as err:
        assert err.code == 404
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            _, stderr = agent.communicate(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()  # never leave a daemon holding the port
    assert agent.returncode == 0, stderr
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = {s.labels["queue"]: s.value for s in families["tracehound_queue_depth"].samples}
    capacity = {s.labels["queue"]: s.value for s in families["tracehound_queue_capacity"].samples}
    assert {"ring_bytes", "stream:evidence", "publisher"} <= set(depth) <= set(capacity), text
    assert capacity["ring_bytes"] == 4096 * 1024
    events = {s.labels["kind"]: s.value for s in families["tracehound_events"].samples
              if s.name == "tracehound_events_total"}  # fmt: skip
    assert events["exec"] >= 1
    attached = [s.value for s in families["tracehound_probe_attached"].samples]
    assert attached and all(v == 1 for v in attached)


def test_daemon_maps_no_compiler_and_still_captures(kernel: None, tmp_path: Path) -> None:
    """bcc (and its libLLVM/libclang) lives only in the compile child: the
    daemon holds fds, yet an exec and an open are seen end to end."""
    ready, stats_file = tmp_path / "ready", tmp_path / "stats.json"
    events = tmp_path / "events.ndjson"
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--ready-file", str(ready), "--stats-file", str(stats_file),
         "--events", str(events), "--stats-interval", "0", "--no-seed"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(ready, agent)
        maps = Path(f"/proc/{agent.pid}/maps").read_text()
        libraries = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
        heavy = sorted(lib for lib in libraries if any(
            name in lib for name in ("libLLVM", "libclang", "libbcc")))  # fmt: skip
        assert not heavy, heavy
        assert any("libc.so" in lib for lib in libraries), "the check reads real mappings"
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in children]
        # The compile child has exited; the one child left is the evidence worker.
        assert names == ["th-evidence"], names
        marker = tmp_path / "lean-marker"
        subprocess.run(
            ["/bin/sh", "-c", f": > {marker}; /bin/true tracehound-lean-arg"], check=True
        )
        time.sleep(0.3)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    stats = json.loads(stats_file.read_text())
    assert stats["balanced"] is True, stats["kinds"]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(
        e["kind"] == "exec" and e["argv"] == ["/bin/true", "tracehound-lean-arg"] for e in lines
    )
    assert any(e["kind"] == "file" and e["path"] == str(marker) for e in lines)


def _run_once(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[dict[str, Any], list[Any]]:
    """One short `tracehound run`: its stats file and its events (an exec
    and an open made while it ran among them)."""
    ready, stats_file = tmp_path / f"{name}.ready", tmp_path / f"{name}.stats.json"
    events = tmp_path / f"{name}.ndjson"
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--ready-file", str(ready), "--stats-file", str(stats_file),
         "--events", str(events), "--stats-interval", "0", "--no-seed"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for(ready, agent)
        marker = tmp_path / f"{name}-marker"
        subprocess.run(["/bin/sh", "-c", f": > {marker}; /bin/true {name}-arg"], check=True)
        time.sleep(0.3)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr and "program cache" not in stderr, stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(e["kind"] == "exec" and e["argv"] == ["/bin/true", f"{name}-arg"] for e in lines)
    assert any(e["kind"] == "file" and e["path"] == str(marker) for e in lines)
    stats: dict[str, Any] = json.loads(stats_file.read_text())
    assert stats["balanced"] is True, stats["kinds"]
    return stats, lines


def test_a_second_run_loads_from_the_program_cache(kernel: None, tmp_path: Path) -> None:
    """The first run compiles and stores; the second loads what was stored,
    says so in its stats, and captures just the same."""
    import os
    import stat

    from agent.capture.cache_store import CACHE_DIR_ENV

    cache = tmp_path / "state" / "cache"
    env = {**os.environ, CACHE_DIR_ENV: str(cache)}
    first, _ = _run_once(tmp_path, "first", env)
    assert first["cache"] == {"state": "miss", "reason": "no entry", "stored": "stored"}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (stored,) = cache.iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    second, _ = _run_once(tmp_path, "second", env)
    assert second["cache"] == {"state": "hit", "reason": "", "stored": ""}
    assert second["probes"] == first["probes"]
    assert [p.name for p in cache.iterdir()] == [stored.name]
