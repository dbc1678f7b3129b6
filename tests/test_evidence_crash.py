"""The publisher killed with SIGKILL while writing under load, then restarted.

After the restart the log verifies (seals included), and the evidence says
what happened: a capture.recovered record for the run that never stopped,
and, for a torn last line, a `recovered` record with the bytes kept aside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TRACEHOUND

LOAD = "import os\nfor i in range(200000):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRACEHOUND, *args], capture_output=True, text=True, timeout=timeout)


def records(state: Path) -> list[dict[str, Any]]:
    out = cli("evidence", "stream", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def segment_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in (state / "segments").glob("*.ndjson"))


def run_and_kill(state: Path, system_python: str) -> None:
    """Start `run --evidence`, load the host, SIGKILL it mid-stream."""
    ready = state.parent / "ready"
    agent = subprocess.Popen(
        [*TRACEHOUND, "run", "--evidence", str(state), "--ready-file", str(ready),
         "--no-seed", "--stats-interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    load = None
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            assert time.monotonic() < deadline, "agent never became ready"
            time.sleep(0.05)
        load = subprocess.Popen([system_python, "-c", LOAD])
        start = segment_bytes(state)
        while segment_bytes(state) < start + 200_000:  # writing under load
            assert time.monotonic() < deadline + 60, "the log did not grow"
            time.sleep(0.05)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=30)
    finally:
        if load is not None:
            load.kill()
            load.wait()
        if agent.poll() is None:
            agent.kill()
            agent.wait()


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "evidence"
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    return state, out.stdout.strip()


def restart(state: Path) -> None:
    out = cli(
        "run", "--evidence", str(state), "--duration", "1", "--no-seed", "--stats-interval", "0"
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_sigkill_under_load_then_restart(
    kernel: None, system_python: str, sealed: tuple[Path, str]
) -> None:
    state, key = sealed
    run_and_kill(state, system_python)
    restart(state)
    verify = cli("evidence", "verify", str(state), "--key", key)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "seals:" in verify.stdout and "NOT" not in verify.stdout
    types = [r["type"] for r in records(state)]
    recovered = [i for i, t in enumerate(types) if t == "dev.tracehound.capture.recovered.v1"]
    assert len(recovered) == 1, "the unclean stop must be on the record"
    starts = [i for i, t in enumerate(types) if t == "dev.tracehound.capture.start.v1"]
    assert len(starts) == 2 and starts[0] < recovered[0] < starts[1]
    assert types.count("dev.tracehound.capture.stop.v1") == 1  # only the clean restart stopped
    body = records(state)[recovered[0]]["body"]["data"]["found"]
    assert body["previous_start_seq"] < body["last_seq"]


def test_torn_last_line_is_kept_aside_and_recorded(
    kernel: None, system_python: str, sealed: tuple[Path, str]
) -> None:
    state, key = sealed
    run_and_kill(state, system_python)
    last = sorted((state / "segments").glob("*.ndjson"))[-1]
    torn = b'{"body":{"data":{"path":"/half-writ'
    with open(last, "ab") as f:
        f.write(torn)  # what a write cut short leaves: no newline, no end
    broken = cli("evidence", "verify", str(state), "--key", key)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout
    restart(state)
    verify = cli("evidence", "verify", str(state), "--key", key)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    kept = list((state / "recovered").glob("*.torn"))
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    all_records = records(state)
    store_recovered = [r for r in all_records if r["type"] == "recovered"]
    assert len(store_recovered) == 1 and store_recovered[0]["body"]["length"] == len(torn)
    found = next(
        r["body"]["data"]["found"] for r in all_records
        if r["type"] == "dev.tracehound.capture.recovered.v1"
    )  # fmt: skip
    assert [t["length"] for t in found["torn_tails"]] == [len(torn)]
