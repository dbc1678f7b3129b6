"""The cursor file, the outbox's start and losses, the backoff, and the status totals."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.evidence.chain import ChainRecord
from agent.evidence.keys import create_key
from agent.evidence.layout import segment_files
from agent.evidence.store import EvidenceStore
from agent.fleet import cursor as cursor_file
from agent.fleet.backoff import Backoff
from agent.fleet.cursor import CURSOR_NAME, Cursor, CursorError
from agent.fleet.heads import HeadTracker
from agent.fleet.outbox import Outbox
from agent.fleet.status import FleetTotals, PublisherStatus, decode_status, encode_status
from agent.metrics import MetricsSources, make_registry, render
from tests.fleet.pubtools import (
    ROOT,
    PublisherProcess,
    expected,
    fleet_config,
    log_lines,
    make_stream,
    stream_messages,
    wait_for,
    write_log,
)
from tests.fleet.servers import NatsServer


def _records(state: Path) -> list[ChainRecord]:
    return [msgspec.json.decode(line, type=ChainRecord) for line in log_lines(state)]


def test_cursor_is_saved_0600_and_read_back(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    saved = Cursor(seq=41, hash="ab" * 32)
    cursor_file.save(tmp_path, saved)
    path = tmp_path / CURSOR_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes()) == {"seq": 41, "hash": "ab" * 32}
    assert cursor_file.load(tmp_path) == saved
    cursor_file.save(tmp_path, Cursor(seq=42, hash="cd" * 32))
    assert cursor_file.load(tmp_path) == Cursor(seq=42, hash="cd" * 32)
    assert not (tmp_path / (CURSOR_NAME + ".tmp")).exists()


def test_a_symlink_in_the_cursors_place_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    (tmp_path / CURSOR_NAME).symlink_to(target)
    with pytest.raises(CursorError, match="symlink"):
        cursor_file.load(tmp_path)
    with pytest.raises(CursorError, match="symlink"):
        cursor_file.save(tmp_path, Cursor(seq=1, hash="ab" * 32))
    assert target.read_bytes() == b"precious\n"


def test_a_cursor_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / CURSOR_NAME).write_bytes(b'{"seq": -1}')
    with pytest.raises(CursorError, match="not a publisher cursor"):
        cursor_file.load(tmp_path)


def test_the_publisher_refuses_a_symlinked_cursor_in_one_line(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 10)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    (state / CURSOR_NAME).symlink_to(target)
    config = fleet_config(tmp_path / "tracehound.toml", nats.url)
    result = subprocess.run(
        [sys.executable, "-m", "agent.fleet.publisher", "--config", str(config),
         "--state-dir", str(state)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "symlink" in lines[0] and CURSOR_NAME in lines[0], result.stderr
    assert target.read_bytes() == b"precious\n"


def test_outbox_resumes_after_the_cursor(tmp_path: Path) -> None:
    write_log(tmp_path, 50)
    records = _records(tmp_path)
    outbox = Outbox(tmp_path, Cursor(seq=records[20].seq, hash=records[20].hash))
    got = outbox.read(1000)
    assert [c.record.seq for c in got] == [r.seq for r in records[21:]]
    assert [c.raw for c in got] == log_lines(tmp_path)[21:]
    assert outbox.resets == 0 and outbox.lost == 0


def test_outbox_starts_over_on_a_cursor_beyond_or_not_of_the_log(tmp_path: Path) -> None:
    write_log(tmp_path, 30)
    records = _records(tmp_path)
    beyond = Outbox(tmp_path, Cursor(seq=10_000, hash="ab" * 32))
    assert [c.record.seq for c in beyond.read(1000)] == [r.seq for r in records]
    assert beyond.resets == 1 and "cut or replaced" in beyond.notices[0]
    other = Outbox(tmp_path, Cursor(seq=records[5].seq, hash="ab" * 32))  # replaced log
    assert [c.record.seq for c in other.read(1000)] == [r.seq for r in records]
    assert other.resets == 1


def test_outbox_counts_records_pruned_before_they_were_published(tmp_path: Path) -> None:
    write_log(tmp_path, 400, segment_max_bytes=8000, retain_max_bytes=10**9)
    segments = segment_files(tmp_path / "segments")
    assert len(segments) > 3
    records = _records(tmp_path)
    outbox = Outbox(tmp_path, Cursor(seq=records[3].seq, hash=records[3].hash))
    first = outbox.read(2)
    assert [c.record.seq for c in first] == [4, 5]
    # the segments holding the next records go (retention, done by hand here)
    segments[0][1].unlink()
    segments[1][1].unlink()
    rest = outbox.read(10_000)
    first_left = msgspec.json.decode(segments[2][1].read_bytes().split(b"\n")[0], type=ChainRecord)
    assert rest[0].record.seq == first_left.seq
    assert outbox.lost == first_left.seq - 6
    assert any("counted as lost" in notice for notice in outbox.notices)
    assert [c.record.seq for c in rest] == list(range(first_left.seq, records[-1].seq + 1))


def test_outbox_never_returns_a_torn_last_line(tmp_path: Path) -> None:
    write_log(tmp_path, 5)
    path = segment_files(tmp_path / "segments")[-1][1]
    with open(path, "ab") as handle:
        handle.write(b'{"body":{"n":')  # the writer's half-written next line
    outbox = Outbox(tmp_path, None)
    assert [c.raw for c in outbox.read(100)] == log_lines(tmp_path)[:-1]
    assert outbox.read(100) == [] and outbox.bad_lines == 0


def test_head_tracker_follows_the_newest_record(tmp_path: Path) -> None:
    write_log(tmp_path, 120, segment_max_bytes=6000)
    tracker = HeadTracker(tmp_path)
    last = _records(tmp_path)[-1]
    assert tracker.poll() == (last.seq, last.hash)
    write_log(tmp_path, 7, start=120, segment_max_bytes=6000)
    last = _records(tmp_path)[-1]
    assert tracker.poll() == (last.seq, last.hash)


def test_backoff_doubles_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff(0.1, 10.0, random.Random(7))
    ceilings = []
    delays = []
    for _ in range(12):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next())
    assert ceilings[:4] == [0.1, 0.2, 0.4, 0.8] and ceilings[-1] == 10.0
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not fixed steps
    backoff.reset()
    assert backoff.ceiling() == 0.1


def test_fleet_totals_only_grow_across_publisher_restarts() -> None:
    totals = FleetTotals()
    totals.update(PublisherStatus(published=10, errors=1, lag_records=4))
    totals.process_ended()
    totals.update(PublisherStatus(published=3, lag_records=0))
    snap = totals.snapshot()
    assert (snap.published, snap.errors, snap.lag_records) == (13, 1, 0)
    line = encode_status(snap)
    assert decode_status(line.rstrip(b"\n")) == snap
    assert decode_status(b"x" * 5000) is None and decode_status(b'{"published":"x"}') is None


def test_publisher_restarts_from_the_start_on_a_cursor_beyond_the_log(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 100)
    cursor_file.save(state, Cursor(seq=5000, hash="ab" * 32))  # a log cut under it
    make_stream(nats.url)
    config = fleet_config(tmp_path / "tracehound.toml", nats.url)
    pub = PublisherProcess(config, state, tmp_path / "publisher.stderr")
    pub.start()
    try:
        total = len(log_lines(state))
        wait_for(lambda: pub.last().get("cursor") == total - 1, "the publisher to republish")
        assert stream_messages(nats.url) == expected(state)
        assert pub.last()["resets"] == 1
        said = [line for line in pub.stderr().splitlines() if "cut or replaced" in line]
        assert len(said) == 1
    finally:
        pub.kill()


def test_fleet_metrics_render_the_totals() -> None:
    totals = FleetTotals()
    totals.starts = 2
    totals.update(PublisherStatus(published=10, errors=1, lost=2))
    totals.process_ended()
    totals.update(PublisherStatus(published=3, connected=True, lag_records=7, lag_seconds=1.5))
    page = render(make_registry(MetricsSources(fleet=lambda: totals))).decode()
    for line in (
        "tracehound_fleet_published_records_total 13.0",
        "tracehound_fleet_publish_errors_total 1.0",
        "tracehound_fleet_lost_records_total 2.0",
        "tracehound_fleet_publisher_starts_total 2.0",
        "tracehound_fleet_connected 1.0",
        "tracehound_fleet_lag_records 7.0",
        "tracehound_fleet_lag_seconds 1.5",
    ):
        assert line in page.splitlines(), line


def test_head_tracker_gives_the_newest_checkpoints_seal(tmp_path: Path) -> None:
    create_key(tmp_path)
    write_log(tmp_path, 250, checkpoint_every_records=40, segment_max_bytes=9000)
    assert len(segment_files(tmp_path / "segments")) > 2
    records = _records(tmp_path)
    newest = [r for r in records if r.type == "checkpoint"][-1]
    tracker = HeadTracker(tmp_path)
    assert tracker.poll() == (records[-1].seq, records[-1].hash)
    assert tracker.seal is not None
    assert msgspec.to_builtins(tracker.seal) == newest.body
    # a tracker started right after a rotation finds the seal in the segment before
    fresh = HeadTracker(tmp_path)
    with EvidenceStore(tmp_path, checkpoint_every_records=40, segment_max_bytes=10) as store:
        store.append("note", {"n": -1})  # rotates: the checkpoint closes the old segment
        store.commit()
    assert fresh.poll() is not None and fresh.seal is not None
    last_cp = [r for r in _records(tmp_path) if r.type == "checkpoint"][-1]
    assert msgspec.to_builtins(fresh.seal) == last_cp.body
