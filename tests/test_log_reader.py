"""Reading CloudEvents back from a real log on disk, as the API does while
the daemon writes: several segments, checkpoints, a torn tail, a pruned
segment."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec

from agent.evidence.log_reader import (
    event_pid,
    events_after,
    find_event,
    iter_events,
    recent_events,
    type_matches,
)
from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore, segment_files
from agent.evidence.types import TYPE_PREFIX, Anchor, CloudEvent


def _write_log(state: Path, count: int) -> list[CloudEvent]:
    """``count`` records (config records with a pid), in small segments."""
    mapper = Mapper(host="h", anchor=Anchor(boot_id="b", wall_ns=10, boottime_ns=1))
    records = [mapper.anchor_record()]
    records += [mapper.capture_config({"i": i}) for i in range(count - 1)]
    with EvidenceStore(state, segment_max_bytes=4096, checkpoint_every_records=7) as store:
        for record in records:
            store.append(record.type, msgspec.to_builtins(record))
            store.commit()
    return records


def _with_pid(event: CloudEvent, pid: int) -> dict[str, object]:
    return {**msgspec.to_builtins(event), "data": {"pid": pid}}


def test_iter_find_and_after(tmp_path: Path) -> None:
    records = _write_log(tmp_path, 60)
    assert len(segment_files(tmp_path / "segments")) > 3  # rotation happened
    ids = [r.id for r in records]
    logged = list(iter_events(tmp_path))
    assert [e.event["id"] for e in logged] == ids  # store records skipped, order kept
    assert all(a.seq < b.seq for a, b in itertools.pairwise(logged))
    for index in (0, 31, 59):
        found = find_event(tmp_path, ids[index])
        assert found is not None and found.event == msgspec.to_builtins(records[index])
    assert find_event(tmp_path, "f" * 32) is None
    after = events_after(tmp_path, ids[20], max_events=1000)
    assert after is not None and [e.event["id"] for e in after] == ids[21:]
    page = events_after(tmp_path, ids[20], max_events=5)
    assert page is not None and [e.event["id"] for e in page] == ids[21:26]
    last = events_after(tmp_path, ids[-1], max_events=5)
    assert last == []
    assert events_after(tmp_path, "0" * 32, max_events=5) is None


def test_recent_events_filters(tmp_path: Path) -> None:
    records = _write_log(tmp_path, 30)
    ids = [r.id for r in records]
    newest = recent_events(tmp_path, type=None, pid=None, limit=4)
    assert [e.event["id"] for e in newest] == ids[-4:]
    configs = recent_events(tmp_path, type="capture.config", pid=None, limit=100)
    assert [e.event["id"] for e in configs] == ids[1:]
    assert len(recent_events(tmp_path, type="capture", pid=None, limit=100)) == 30
    assert recent_events(tmp_path, type="capt", pid=None, limit=100) == []
    full = recent_events(tmp_path, type=TYPE_PREFIX + "capture.anchor.v1", pid=None, limit=9)
    assert [e.event["id"] for e in full] == ids[:1]
    assert recent_events(tmp_path, type=None, pid=4242, limit=5) == []


def test_type_matches_and_pid() -> None:
    exec_type = TYPE_PREFIX + "process.exec.v1"
    assert type_matches("process.exec", exec_type)
    assert type_matches("process", exec_type)
    assert type_matches(exec_type, exec_type)
    assert not type_matches("proc", exec_type)
    assert not type_matches("process.exit", exec_type)
    assert not type_matches("file", "other.file.v1")
    assert event_pid({"data": {"pid": 7}}) == 7
    assert event_pid({"data": {"pid": True}}) is None
    assert event_pid({"data": "x"}) is None


def test_torn_tail_and_pruned_segment_are_skipped(tmp_path: Path) -> None:
    records = _write_log(tmp_path, 40)
    segments = segment_files(tmp_path / "segments")
    newest = segments[-1][1]
    line = newest.read_bytes().splitlines()[-1]
    with open(newest, "ab") as f:
        f.write(line[: len(line) // 2])  # a half-written record, no newline
    assert [e.event["id"] for e in iter_events(tmp_path)] == [r.id for r in records]
    first_kept = next(iter_events(tmp_path))
    segments[0][1].unlink()  # pruned
    remaining = [e.event["id"] for e in iter_events(tmp_path)]
    assert first_kept.event["id"] not in remaining and remaining[-1] == records[-1].id
    assert find_event(tmp_path, records[0].id) is None


def test_pid_filter_reads_data_pid(tmp_path: Path) -> None:
    records = _write_log(tmp_path, 5)
    state = tmp_path / "pids"
    with EvidenceStore(state) as store:
        for n, record in enumerate(records):
            store.append(record.type, _with_pid(record, 100 + n % 2))
        store.commit()
    found = recent_events(state, type=None, pid=101, limit=10)
    assert [e.event["id"] for e in found] == [records[1].id, records[3].id]
    assert recent_events(state, type=None, pid=10, limit=10) == []  # not a prefix match of 100
