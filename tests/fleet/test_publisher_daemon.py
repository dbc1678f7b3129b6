"""A real daemon with ``[fleet] enabled``: what it commits reaches JetStream, /metrics says so."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from agent.fleet.cursor import CURSOR_NAME
from tests.fleet.pubtools import PREFIX, expected, make_stream, stream_messages, wait_for
from tests.fleet.servers import NatsServer, free_port
from tests.harness import own_daemon


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def test_daemon_publishes_what_it_commits_and_metrics_show_it(
    tmp_path: Path, nats: NatsServer
) -> None:
    make_stream(nats.url)
    with own_daemon(tmp_path) as daemon:
        fleet = f"""
[fleet]
enabled = true
nats_url = "{nats.url}"
subject_prefix = "{PREFIX}"
heads_interval_s = 0.5
"""
        daemon.start(config=daemon.config_text() + fleet)
        for _ in range(5):
            subprocess.run(["/bin/true"], check=True)
        host = socket.gethostname()  # no [fleet] host: the records' thhost

        def published() -> float:
            return _metric(daemon.metrics(), "tracehound_fleet_published_records_total") or 0

        wait_for(lambda: published() >= 10, "the daemon's publisher to publish", timeout=60)
        page = daemon.metrics()
        assert _metric(page, "tracehound_fleet_connected") == 1
        assert _metric(page, "tracehound_fleet_lag_records") is not None
        assert _metric(page, "tracehound_fleet_lag_seconds") is not None
        assert _metric(page, "tracehound_fleet_publisher_starts_total") == 1
        acked = published()
        got = stream_messages(nats.url)
        assert len(got) >= acked  # the stream has at least what was acknowledged
        assert got == expected(daemon.state, host)[: len(got)]
        assert daemon.stop() == 0
        # at the stop it saved its cursor: the stream holds the log up to it, one for one
        cursor = json.loads((daemon.state / CURSOR_NAME).read_bytes())
        got = stream_messages(nats.url)
        assert len(got) >= cursor["seq"] + 1
        assert got == expected(daemon.state, host)[: len(got)]
        # the agent restarted (the cursor beside its log): it goes on from there
        daemon.start(config=daemon.config_text() + fleet)
        subprocess.run(["/bin/true"], check=True)
        wait_for(lambda: published() >= 1, "the restarted publisher", timeout=60)
        assert daemon.stop() == 0
    cursor = json.loads((daemon.state / CURSOR_NAME).read_bytes())
    got = stream_messages(nats.url)
    want = expected(daemon.state, host)
    assert len(got) >= cursor["seq"] + 1
    assert got == want[: len(got)]  # no gap, no duplicate, across the restart


def test_fleet_without_a_readable_token_file_is_one_line_at_start(tmp_path: Path) -> None:
    with own_daemon(tmp_path) as daemon:
        fleet = f"""
[fleet]
enabled = true
nats_url = "nats://127.0.0.1:1"
token_file = "{tmp_path / "missing-token"}"
"""
        daemon.config.write_text(daemon.config_text() + fleet)
        with pytest.raises(AssertionError):
            daemon.start(config=daemon.config_text() + fleet, timeout=30)
        assert daemon.proc is not None and daemon.proc.wait(10) != 0
        lines = [line for line in daemon.log().splitlines() if "token_file" in line]
        assert len(lines) == 1 and "fleet.token_file" in lines[0], daemon.log()
        assert "Traceback" not in daemon.log()


def test_a_wrong_nats_url_keeps_the_daemon_capturing_and_is_said_once(tmp_path: Path) -> None:
    with own_daemon(tmp_path) as daemon:
        fleet = f"""
[fleet]
enabled = true
nats_url = "nats://127.0.0.1:{free_port()}"
host = "lonely"
"""
        daemon.start(config=daemon.config_text() + fleet)
        subprocess.run(["/bin/true"], check=True)

        def lagging() -> bool:
            page = daemon.metrics()
            return (_metric(page, "tracehound_fleet_lag_records") or 0) > 0 and (
                _metric(page, "tracehound_fleet_lag_seconds") or 0
            ) >= 2

        wait_for(lagging, "the lag to show on /metrics", timeout=60)
        page = daemon.metrics()
        assert _metric(page, "tracehound_fleet_connected") == 0
        assert _metric(page, "tracehound_fleet_published_records_total") == 0
        assert _metric(page, "tracehound_fleet_publisher_starts_total") == 1  # never died
        assert daemon.proc is not None and daemon.proc.poll() is None
        said = [line for line in daemon.log().splitlines() if "cannot reach NATS" in line]
        assert len(said) == 1, daemon.log()
        assert daemon.stop() == 0
