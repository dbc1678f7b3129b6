"""Disk full under the evidence log: capture goes on, the hole is on the record.

A real tmpfs of 64 MiB holds the state directory (retention keeps the log
under 26 MiB, so a busy host cannot fill it by itself); a filler file takes the
rest of it while events keep coming. The daemon must answer /readyz 503
with the reason, count what the log misses by kind, and, as soon as there
is room again (the same run, or the next start), write it into the log as
a ``capture.loss`` record with the cause; ``run`` then exits 3.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TRACEHOUND, require_kernel
from tests.harness import Daemon, evidence, wait_until

OPEN_FLOOD = (
    "import os\nfor i in range({n}):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
)
EXIT_EVIDENCE_LOST = 3
SMALL_LOG = "segment_mb = 2.0\nretain_mb = 24.0\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    require_kernel()
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.fail("could not mount a tmpfs (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with a new filler file; its path."""
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def flood(system_python: str, n: int = 3000) -> None:
    subprocess.run([system_python, "-c", OPEN_FLOOD.format(n=n)], check=True, timeout=60)


def keygen(state: Path) -> str:
    done = subprocess.run(
        [*TRACEHOUND, "evidence", "keygen", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def verify(state: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(state), "--key", key],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def store_losses(record: dict[str, object], kind: str | None = None) -> int:
    counts = record["data"]["counts"]  # type: ignore[index]
    return sum(
        stages.get("evidence:store", 0)
        for name, stages in counts.items()
        if kind is None or name == kind
    )


def file_store_losses(daemon: Daemon) -> int:
    downstream = daemon.get_json("/v1/stats")["capture"]["downstream"]
    return int(downstream.get("file", {}).get("evidence:store", 0))


def test_disk_full_then_room_again_in_the_same_run(
    kernel: None, small_disk: Path, tmp_path: Path, system_python: str
) -> None:
    state = small_disk / "evidence"
    key = keygen(state)
    daemon = Daemon(tmp_path, state=state)
    stats_file = tmp_path / "stats.json"
    try:
        daemon.start("--stats-file", str(stats_file), config=daemon.config_text(extra=SMALL_LOG))
        assert daemon.status("/readyz")[0] == 200
        filler = fill(small_disk)

        def failing() -> bool:
            flood(system_python, 500)
            return daemon.status("/readyz")[0] == 503

        wait_until(failing, "/readyz 503 while the disk is full", 60)
        code, body = daemon.status("/readyz")
        assert code == 503 and "cannot be written" in body and "No space left" in body, body
        assert "tracehound_evidence_store_failed 1.0" in daemon.metrics()
        before = file_store_losses(daemon)
        flood(system_python, 3000)  # lost for the log, counted
        wait_until(lambda: file_store_losses(daemon) >= before + 3000, "the count", 30)
        lost = file_store_losses(daemon)

        filler.unlink()
        wait_until(lambda: daemon.status("/readyz")[0] == 200, "recovery", 60)
        assert "tracehound_evidence_store_failed 0.0" in daemon.metrics()
        status = daemon.stop()
        assert status == EXIT_EVIDENCE_LOST, daemon.log()
        assert "Traceback" not in daemon.log()
    finally:
        daemon.close()
    losses = evidence(state, "capture.loss.v1")
    caused = [r for r in losses if "cause" in r["data"]]
    assert caused, "no capture.loss record with a cause"
    assert "No space left" in caused[0]["data"]["cause"]["store_failed"]
    # Every event the log missed is in its loss records, none twice.
    final = json.loads(stats_file.read_text())["downstream"]
    for kind, stages in final.items():
        assert sum(store_losses(r, kind) for r in losses) == stages["evidence:store"], kind
    assert final["file"]["evidence:store"] >= lost
    assert evidence(state, "capture.stop.v1"), "the run's stop record is in the log"
    result = verify(state, key)
    assert result.returncode == 0, result.stdout + result.stderr


def test_disk_still_full_at_stop_is_written_at_the_next_start(
    kernel: None, small_disk: Path, tmp_path: Path, system_python: str
) -> None:
    """The run ends with the disk full. Whatever it could not write is in the
    log after the next start, exactly once: written by the run itself if a
    last attempt at its stop found room (a failed write cut back frees a few
    pages), else by the next start from the slot, with a capture.recovered
    record saying the store had failed. (The slot's own path is also tested
    without a kernel in tests/evidence/test_pipeline_outage.py.)"""
    state = small_disk / "evidence"
    key = keygen(state)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Daemon(tmp_path / "first", state=state)
    first_stats = tmp_path / "first-stats.json"
    try:
        first.start("--stats-file", str(first_stats), config=first.config_text(extra=SMALL_LOG))
        fill(small_disk)

        def failing() -> bool:
            flood(system_python, 500)
            return first.status("/readyz")[0] == 503

        wait_until(failing, "/readyz 503 while the disk is full", 60)
        fill(small_disk)  # take what the failed writes freed again
        wait_until(failing, "/readyz 503 with the disk topped up", 60)
        flood(system_python, 2000)
        status = first.stop()
        assert status == EXIT_EVIDENCE_LOST, first.log()
        owed = "the next start writes it" in first.log()
    finally:
        first.close()
    for extra in small_disk.glob("filler*"):
        extra.unlink()

    second = Daemon(tmp_path / "second", state=state)
    second_stats = tmp_path / "second-stats.json"
    try:
        second.start("--duration", "2", "--stats-file", str(second_stats),
                     config=second.config_text(extra=SMALL_LOG))  # fmt: skip
        assert second.proc is not None
        assert second.proc.wait(60) == 0, second.log()
    finally:
        second.close()
    lost = json.loads(first_stats.read_text())["downstream"]
    assert lost["file"]["evidence:store"] >= 2000
    again = json.loads(second_stats.read_text())["downstream"]
    losses = evidence(state, "capture.loss.v1")
    for kind in set(lost) | set(again):  # every loss of both runs, once
        want = sum(d.get(kind, {}).get("evidence:store", 0) for d in (lost, again))
        assert sum(store_losses(r, kind) for r in losses) == want, kind
    carried = [r for r in losses if r["data"].get("cause", {}).get("previous_run")]
    if owed:
        assert len(carried) == 1 and store_losses(carried[0]) > 0
        recovered = evidence(state, "capture.recovered.v1")
        assert recovered and "No space left" in recovered[-1]["data"]["found"]["store_failed"]
    else:
        assert not carried  # the first run wrote it all itself
    assert os.path.getsize(state / "pending-loss") > 0  # kept allocated, now empty
    result = verify(state, key)
    assert result.returncode == 0, result.stdout + result.stderr
