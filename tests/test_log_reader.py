"""Reading CloudEvents back from a real sealed log on disk, as the API does while
the daemon writes: several segments, checkpoints, a torn tail, pruned segments.

Expectations are computed independently of the reader: from the CloudEvents
the test appended, or from the segment files parsed line by line with ``json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    SyscallCounts,
)
from agent.evidence.canonical import canonical
from agent.evidence.chain import ChainWriter
from agent.evidence.keys import create_key
from agent.evidence.layout import segment_files
from agent.evidence.log_reader import (
    LoggedEvent,
    event_pid,
    events_after,
    find_event,
    iter_events,
    recent_events,
    type_matches,
)
from agent.evidence.mapper import encode
from agent.evidence.store import EvidenceStore
from agent.evidence.types import TYPE_PREFIX, Anchor, CloudEvent
from tests.evidence.plain_mapper import plain_mapper

BOOT_NS = 1_000_000_000_000
ANCHOR = Anchor(boot_id="b00t", wall_ns=1_714_564_800_000_000_000, boottime_ns=BOOT_NS)
NESTED_ID = "a" * 32  # only ever a nested data field's "id", never an event's
NOTE_ID = "b" * 32  # the id of a record whose type is not an evidence type
PIDS = (10, 100, 1000)  # each a prefix of the next: the pid pre-check must not confuse them


def _header(pid: int, n: int) -> dict[str, Any]:
    return {"pid": pid, "tid": pid, "ts_ns": BOOT_NS + n, "uid": 0, "gid": 0, "cgroup_id": 1}


def _event(n: int) -> Event:
    """Event ``n``: kinds and pids cycle, so every filter has hits spread over segments."""
    pid = PIDS[(n // 6) % 3]  # every kind with every pid
    head = _header(pid, n)
    match n % 6:
        case 0:
            return ExecEvent(
                **head,
                comm="sh",
                ret=0,
                filename="/bin/ls",
                argv=("ls", str(n)),
                argv_truncated=False,
                at=False,
            )
        case 1:
            op = ("open", "unlink", "mkdir")[(n // 18) % 3]
            return FileEvent(
                **head,
                comm="sh",
                op=op,
                syscall=op,
                ret=0,
                dfd=-100,
                path=f"/tmp/f{n}",
                dfd2=-100,
                path2="",
                flags=0,
                mode=0,
            )
        case 2:
            return NetEvent(
                **head,
                comm="sh",
                op="connect",
                ret=0,
                fd=3,
                endpoint=Endpoint("ipv4", "10.0.0.1", 443),
                backlog=0,
            )
        case 3:
            return ForkEvent(**head, comm="sh", child_pid=5000 + n, clone_flags=0)
        case 4:
            return ExitEvent(
                **head, comm="sh", exit_code=0, signal=0, have_code=True, have_signal=False
            )
        case _:
            return SyscallCounts(pid=pid, counts={"read": n}, final=False)


def _write_log(state: Path, count: int = 90) -> list[CloudEvent]:
    """A sealed log of the anchor, ``count`` events and two config records, in
    small segments with frequent checkpoints; returns the CloudEvents in order."""
    create_key(state)
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    records = [mapper.anchor_record()]
    records += [mapper.map(_event(n)) for n in range(count)]
    # A nested "pid" that is not data.pid: the pid filter must not pick it up.
    records.insert(40, mapper.capture_config({"pid": 100, "id": NESTED_ID}))
    records.append(mapper.capture_config({"last": True}))
    with EvidenceStore(state, segment_max_bytes=4096, checkpoint_every_records=7) as store:
        for n, record in enumerate(records):
            store.append_body(record.type, encode(record))
            if n == 50:  # CloudEvent-shaped, but its record type says it is not evidence
                store.append("note", {**msgspec.to_builtins(record), "id": NOTE_ID})
            store.commit()
    return records


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _ids(events: list[LoggedEvent] | None) -> list[str]:
    assert events is not None
    return [e.event["id"] for e in events]


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, list[CloudEvent]]:
    state = tmp_path / "state"
    return state, _write_log(state)


def test_iter_events_is_the_cloudevents_in_order_without_store_records(
    log: tuple[Path, list[CloudEvent]],
) -> None:
    state, records = log
    segments = segment_files(state / "segments")
    assert len(segments) >= 5  # rotation happened
    on_disk = [rec for _, path in segments for rec in _lines(path)]
    store_types = {r["type"] for r in on_disk if not r["type"].startswith(TYPE_PREFIX)}
    assert store_types == {"segment.start", "checkpoint", "note"}  # something to skip

    got = list(iter_events(state))
    assert [e.event for e in got] == [msgspec.to_builtins(r) for r in records]
    expected_seqs = [r["seq"] for r in on_disk if r["type"].startswith(TYPE_PREFIX)]
    assert [e.seq for e in got] == expected_seqs
    for logged, record in zip(got, records, strict=True):
        assert logged.raw == canonical(record)  # the bytes as written, ready to serve


def test_find_event_first_middle_last_and_unknown(log: tuple[Path, list[CloudEvent]]) -> None:
    state, records = log
    by_id = {e.event["id"]: e for e in iter_events(state)}
    for index in (0, len(records) // 2, len(records) - 1):
        found = find_event(state, records[index].id)
        assert found is not None
        assert found.event == msgspec.to_builtins(records[index])
        assert found == by_id[records[index].id]
    assert find_event(state, "f" * 32) is None
    # Ids that are no hex: no exception, just not there.
    for odd in ('x"y', "é" * 4, "\ud800", ""):
        assert find_event(state, odd) is None
    # Not an event's id: nested in another event's data, or on a non-evidence record.
    assert NESTED_ID.encode() in b"".join(
        p.read_bytes() for _, p in segment_files(state / "segments")
    )
    assert find_event(state, NESTED_ID) is None
    assert events_after(state, NESTED_ID, max_events=5) is None
    assert find_event(state, NOTE_ID) is None


def test_events_after_is_exactly_what_follows(log: tuple[Path, list[CloudEvent]]) -> None:
    state, _ = log
    all_ids = _ids(list(iter_events(state)))
    for index in range(len(all_ids)):  # every position, segment boundaries included
        assert _ids(events_after(state, all_ids[index], max_events=10_000)) == all_ids[index + 1 :]
    assert _ids(events_after(state, all_ids[7], max_events=5)) == all_ids[8:13]
    # A page spanning a segment boundary, as the SSE resume pages through.
    assert _ids(events_after(state, all_ids[20], max_events=40)) == all_ids[21:61]
    assert events_after(state, all_ids[-1], max_events=5) == []
    assert events_after(state, all_ids[3], max_events=0) == []  # known id, empty page
    assert events_after(state, "0" * 32, max_events=5) is None
    assert events_after(state, "0" * 32, max_events=0) is None


def test_recent_events_filters_and_limit(log: tuple[Path, list[CloudEvent]]) -> None:
    state, records = log

    def expect(keep: Any, limit: int) -> list[str]:
        return [r.id for r in records if keep(r)][-limit:]

    def got(type: str | None = None, pid: int | None = None, limit: int = 1000) -> list[str]:
        return _ids(recent_events(state, type=type, pid=pid, limit=limit))

    assert got(limit=4) == expect(lambda r: True, 4)
    assert got() == [r.id for r in records]
    exec_type = TYPE_PREFIX + "process.exec.v1"
    assert got(exec_type) == expect(lambda r: r.type == exec_type, 1000)
    assert got("process.exec") == expect(lambda r: r.type == exec_type, 1000)
    files = expect(lambda r: r.type.startswith(TYPE_PREFIX + "file."), 1000)
    assert len({r.type for r in records if r.id in files}) == 3  # open, unlink, mkdir
    assert got("file") == files
    assert got("file", limit=3) == files[-3:]
    process = expect(lambda r: r.type.startswith(TYPE_PREFIX + "process."), 1000)
    assert got("process") == process and len(process) > len(got("process.exec"))
    assert got("proc") == []
    assert got("network.listen") == []
    for pid in PIDS:
        mine = expect(lambda r, pid=pid: r.data.get("pid") == pid, 1000)
        assert len(mine) >= 20
        assert got(pid=pid) == mine
        assert got(pid=pid, limit=2) == mine[-2:]
    assert got(pid=1) == []
    # The config record's nested {"pid": 100} is not data.pid.
    assert records[40].type == TYPE_PREFIX + "capture.config.v1"
    assert records[40].id not in got(pid=100)
    both = expect(lambda r: r.type.startswith(TYPE_PREFIX + "file.") and r.data["pid"] == 10, 1000)
    assert both and got("file", pid=10) == both
    assert got(limit=0) == []


def test_type_matches_and_event_pid() -> None:
    exec_type = TYPE_PREFIX + "process.exec.v1"
    assert type_matches(exec_type, exec_type)
    assert type_matches("process.exec", exec_type)
    assert type_matches("process.exec.v1", exec_type)
    assert type_matches("process", exec_type)
    assert type_matches("file", TYPE_PREFIX + "file.open.v12")
    assert not type_matches("proc", exec_type)
    assert not type_matches("process.ex", exec_type)
    assert not type_matches("process.exit", exec_type)
    assert not type_matches("", exec_type)
    assert not type_matches("file", "other.file.open.v1")
    assert event_pid({"data": {"pid": 7}}) == 7
    assert event_pid({"data": {"pid": True}}) is None
    assert event_pid({"data": {"pid": "7"}}) is None
    assert event_pid({"data": "x"}) is None
    assert event_pid({}) is None


def test_a_torn_final_line_is_skipped(log: tuple[Path, list[CloudEvent]]) -> None:
    state, records = log
    before = list(iter_events(state))
    newest = segment_files(state / "segments")[-1][1]
    last = _lines(newest)[-1]
    # The next record, valid and whole but with no newline yet: not durable.
    mapper = plain_mapper(host="h", anchor=Anchor(boot_id="other", wall_ns=1, boottime_ns=1))
    pending = mapper.anchor_record()
    _, line = ChainWriter(head=(last["seq"], last["hash"])).append(
        pending.type, msgspec.to_builtins(pending)
    )
    for tail in (line[: len(line) // 2], line[:-1]):
        with open(newest, "ab") as f:
            f.write(tail)
        assert list(iter_events(state)) == before
        assert find_event(state, pending.id) is None
        assert events_after(state, records[-1].id, max_events=5) == []
        assert _ids(recent_events(state, type=None, pid=None, limit=1)) == [records[-1].id]
        with open(newest, "r+b") as f:
            f.truncate(f.seek(0, 2) - len(tail))


def test_deleted_segments_are_skipped(log: tuple[Path, list[CloudEvent]]) -> None:
    state, _ = log
    all_ids = _ids(list(iter_events(state)))
    segments = segment_files(state / "segments")
    gone = segments[2][1]
    gone_ids = [r["body"]["id"] for r in _lines(gone) if r["type"].startswith(TYPE_PREFIX)]
    assert gone_ids
    kept = [i for i in all_ids if i not in gone_ids]

    # Pruned while a read is under way: listed, but gone by the time it is opened.
    reading = iter_events(state)
    first = next(reading)
    gone.unlink()
    assert [first.event["id"], *(e.event["id"] for e in reading)] == kept

    assert _ids(list(iter_events(state))) == kept
    assert find_event(state, gone_ids[0]) is None
    assert events_after(state, gone_ids[-1], max_events=100) is None
    before_gap = all_ids.index(gone_ids[0]) - 1
    assert _ids(events_after(state, all_ids[before_gap], max_events=1000)) == kept[before_gap + 1 :]
    assert _ids(recent_events(state, type=None, pid=None, limit=1000)) == kept


def test_reads_alongside_the_writer_see_committed_records_only(tmp_path: Path) -> None:
    state = tmp_path / "live"
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    records = [mapper.anchor_record(), *(mapper.map(_event(n)) for n in range(30))]
    # One segment: rotating would flush the buffered records early.
    with EvidenceStore(state, checkpoint_every_records=1000) as store:
        for record in records[:20]:
            store.append_body(record.type, encode(record))
        store.commit()
        for record in records[20:]:
            store.append_body(record.type, encode(record))  # buffered, not written
        assert _ids(list(iter_events(state))) == [r.id for r in records[:20]]
        assert events_after(state, records[19].id, max_events=5) == []
        store.commit()
        assert _ids(events_after(state, records[19].id, max_events=50)) == [
            r.id for r in records[20:]
        ]
