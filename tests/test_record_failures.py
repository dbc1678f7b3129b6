"""One record that cannot be processed never ends the pipeline (real daemon).

Failpoints (agent/failpoints.py) make every event of a process named
``th-poison`` fail in the mapper and in the ``--events`` encoder, and every
record of ``th-poison2`` fail at the store. The daemon must count each such
event per kind at its stage, report it in ``capture.loss``, and go on:
later events are mapped, written and served, the log verifies, and the run
exits 0 (nothing was lost to the disk).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.failpoints import ENV
from tests.conftest import TRACEHOUND
from tests.harness import Daemon, evidence, own_daemon, wait_until


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with own_daemon(tmp_path) as d:
        yield d


def downstream(daemon: Daemon) -> dict[str, dict[str, int]]:
    stats = daemon.get_json("/v1/stats")
    table: dict[str, dict[str, int]] = stats["capture"]["downstream"]
    return table


def lost_at(daemon: Daemon, kind: str, stage: str) -> int:
    return downstream(daemon).get(kind, {}).get(stage, 0)


def test_failing_records_are_counted_and_capture_goes_on(
    kernel: None, daemon: Daemon, tmp_path: Path
) -> None:
    events_file = tmp_path / "events.ndjson"
    stats_file = tmp_path / "stats.json"
    poison = tmp_path / "th-poison"
    poison2 = tmp_path / "th-poison2"
    shutil.copy("/bin/true", poison)
    shutil.copy("/bin/true", poison2)
    daemon.start(
        "--events", str(events_file), "--stats-file", str(stats_file),
        env={ENV: "evidence.map=th-poison,events.encode=th-poison,evidence.store=th-poison2"},
    )  # fmt: skip
    for _ in range(3):
        subprocess.run([str(poison)], check=True)
        subprocess.run([str(poison2)], check=True)
    wait_until(lambda: lost_at(daemon, "exec", "evidence:map") >= 3, "map failures counted")
    wait_until(lambda: lost_at(daemon, "exec", "evidence:store") >= 3, "store refusals counted")
    wait_until(lambda: lost_at(daemon, "exec", "events:encode") >= 3, "encode failures counted")
    # Capture, the log and the API go on.
    subprocess.run(["/bin/echo", "after-the-poison"], check=True, capture_output=True)
    assert daemon.status("/readyz")[0] == 200

    def echoed() -> bool:
        found = daemon.get_json("/v1/events?type=process.exec&last=200")["events"]
        return any("after-the-poison" in e["data"]["argv"] for e in found)

    wait_until(echoed, "a later exec in the log")
    # The --events writer's redaction memo is a bounded cache, in the stats and the metrics.
    memo = daemon.get_json("/v1/stats")["caches"]["redact:events"]
    assert 0 < memo["entries"] <= memo["capacity"] and memo["bytes"] <= memo["max_bytes"]
    assert 'tracehound_cache_entries{cache="redact:events"}' in daemon.metrics()
    assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log()

    final = json.loads(stats_file.read_text())["downstream"]
    assert final["exec"]["evidence:map"] >= 3
    assert final["exec"]["evidence:store"] >= 3
    assert final["exec"]["events:encode"] >= 3
    # Every loss is in the evidence itself, by kind and stage.
    losses = evidence(daemon.state, "capture.loss.v1")
    for kind, stages in final.items():
        for stage, count in stages.items():
            reported = sum(r["data"]["counts"].get(kind, {}).get(stage, 0) for r in losses)
            assert reported == count, (kind, stage)
    comms = {json.loads(line).get("comm") for line in events_file.read_text().splitlines()}
    assert "th-poison" not in comms and "th-poison2" in comms and "echo" in comms
    logged = {r["data"].get("comm") for r in evidence(daemon.state, "process.exec.v1")}
    assert "th-poison" not in logged and "th-poison2" not in logged and "echo" in logged
    verify = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(daemon.state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout


def test_a_malformed_failpoint_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TRACEHOUND, "run", "--duration", "1"],
        capture_output=True, text=True, timeout=60, env={ENV: "nonsense"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and ENV in done.stderr, done.stderr
