"""The off-host chain check and the partition plan, alone (pure: no servers)."""

from __future__ import annotations

import datetime

from agent.evidence.chain import ChainWriter
from agent.evidence.seal import Sealer, keygen
from agent.fleet.chaincheck import (
    Conflict,
    GapState,
    HostCheck,
    Link,
    SealState,
    Stored,
    _KeyCache,
    check_head,
    check_seal,
    gap_step,
)
from agent.fleet.partitions import create_sql, days_ahead, partition_name, to_drop
from agent.fleet.wire import ChainHead


def chain(count: int, salt: str = "") -> list[Link]:
    writer = ChainWriter()
    out = []
    for n in range(count):
        record, _ = writer.append("t", {"n": n, "salt": salt})
        out.append(Link(record.seq, record.hash, record.prev))
    return out


def stored(links: list[Link]) -> dict[int, Stored]:
    return {link.seq: Stored(link.hash, link.prev) for link in links}


def test_a_good_chain_in_two_batches_and_out_of_order_has_no_events() -> None:
    links = chain(10)
    check = HostCheck("h")
    assert check.batch(links[5:], [], stored(links[4:]), None) == []
    # The first half arrives later: its seq 4 must link to the stored seq 5.
    assert check.batch(links[:5], [], stored(links), 9) == []


def test_link_both_ways() -> None:
    links = chain(6)
    forged = Link(3, "f" * 64, "e" * 64)
    events = HostCheck("h").batch(
        [forged],
        [],
        stored(links[:3]) | {3: Stored(*forged[1:]), 4: Stored(links[4].hash, links[4].prev)},
        2,
    )
    assert [(e.seq, e.kind) for e in events] == [(3, "link"), (4, "link")]


def test_a_jump_is_a_gap_only_after_the_grace_and_once() -> None:
    links = chain(10)
    check = HostCheck("h")
    assert check.batch(links[:3] + links[6:], [], stored(links[:3] + links[6:]), None) == []
    # Stored: 0-2 and 6-9. The watch sees seq 3 missing at t=100 ...
    state, event, again = gap_step("h", GapState(-1, None, None), 2, 6, 100.0, 60.0)
    assert (state, event, again) == (GapState(2, 3, 100.0), None, False)
    # ... still missing 59 s later: nothing yet (another collector may hold it) ...
    state, event, again = gap_step("h", state, 2, 6, 159.0, 60.0)
    assert event is None and state == GapState(2, 3, 100.0)
    # ... at 60 s it is a gap, seq 3 to 5, reported once; the watch moves past it.
    state, event, again = gap_step("h", state, 2, 6, 160.0, 60.0)
    assert event is not None and (event.seq, event.kind) == (3, "gap")
    assert "seq 3 to 5" in event.detail and again and state == GapState(6, None, None)
    state, event, again = gap_step("h", state, 9, None, 161.0, 60.0)
    assert (state, event, again) == (GapState(9, None, None), None, False)
    # Filled before the grace: no event at all.
    state, _, _ = gap_step("h", GapState(-1, None, None), 2, 6, 100.0, 60.0)
    state, event, _ = gap_step("h", state, 9, None, 120.0, 60.0)
    assert event is None and state == GapState(9, None, None)


def test_fork_and_rollback_one_event_per_run() -> None:
    links = chain(20)
    other = chain(8, salt="restarted")
    check = HostCheck("h")
    conflicts = [Conflict(o.seq, o.hash, f"id{o.seq}", links[o.seq].hash) for o in other]
    events = check.batch([], conflicts, stored(links), 19)
    assert [(e.seq, e.kind) for e in events] == [(0, "rollback")]
    # The same run, in the next batch: no new event.
    more = chain(12, salt="restarted")[8:]
    conflicts = [Conflict(o.seq, o.hash, f"id{o.seq}", links[o.seq].hash) for o in more]
    assert check.batch([], conflicts, stored(links), 19) == []
    # A republished record (same hash) is nothing; another at the tip is a fork.
    fork = HostCheck("h").batch(
        [], [Conflict(19, "9" * 64, "x", links[19].hash), Conflict(5, links[5].hash, "y", links[5].hash)],
        stored(links), 19,
    )  # fmt: skip
    assert [(e.seq, e.kind) for e in fork] == [(19, "fork")]


def test_heads() -> None:
    head = ChainHead(host="h", seq=5, hash="a" * 64, seal=None, time_ns=0)
    assert check_head(head, 4, "a" * 64) is None
    back = check_head(head, 9, None)
    assert back is not None and (back.seq, back.kind) == (5, "rollback")
    other = check_head(head, 5, "b" * 64)
    assert other is not None and other.kind == "fork"


def test_seals_with_the_key_and_a_wrong_key() -> None:
    key = keygen()
    sealer = Sealer(key)
    writer = ChainWriter()
    state: SealState | None = None
    cache = _KeyCache()
    for round_ in range(3):
        record, _ = writer.append("t", {"n": round_})
        seal = sealer.seal(record.seq, record.hash)
        at = record.seq + 1
        state, event = check_seal(
            "h", key, state, seal, at, Stored(record.hash, record.prev), cache=cache
        )
        assert event is None and state is not None and state.epoch == round_
        writer.append("checkpoint", {})
    record, _ = writer.append("t", {"n": 99})
    seal = Sealer(keygen(), epoch=3, prev_seal=state.mac).seal(record.seq, record.hash)
    after, event = check_seal(
        "h", key, state, seal, record.seq + 1, Stored(record.hash, record.prev), cache=cache
    )
    assert event is not None and event.kind == "seal" and "MAC" in event.detail
    assert after == state
    replay = Sealer(key).seal(record.seq, record.hash)  # epoch 0 again
    _, event = check_seal("h", key, state, replay, record.seq + 1, None, cache=cache)
    assert event is not None and "epoch" in event.detail


def test_partition_plan() -> None:
    now = datetime.datetime(2026, 12, 1, 23, 59, tzinfo=datetime.UTC)
    assert days_ahead(now) == [datetime.date(2026, 12, 1), datetime.date(2026, 12, 2)]
    assert create_sql(datetime.date(2026, 12, 31)) == (
        "CREATE TABLE IF NOT EXISTS records_20261231 PARTITION OF records"
        " FOR VALUES FROM ('2026-12-31 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    )
    names = [partition_name(now.date() - datetime.timedelta(days=d)) for d in range(40)]
    dropped = to_drop([*names, "records_default", "records_20261399"], now, 30)
    assert dropped == sorted(names[31:])
    assert to_drop(names, now, 0) == []


def test_a_head_older_than_the_newest_taken_is_stale_not_a_rollback() -> None:
    from agent.fleet.chaincheck import is_stale
    from agent.fleet.wire import ChainHead

    newest = ChainHead(host="h", seq=900, hash="a" * 64, seal=None, time_ns=5_000_000_123_456)
    old = ChainHead(host="h", seq=300, hash="b" * 64, seal=None, time_ns=4_000_000_000_000)
    later = ChainHead(host="h", seq=300, hash="b" * 64, seal=None, time_ns=6_000_000_000_000)
    taken = newest.time_ns // 1000
    assert not is_stale(newest, None)
    assert is_stale(newest, taken)  # the same head again (redelivered)
    assert is_stale(old, taken)  # redelivered after newer ones
    assert not is_stale(later, taken)  # a newer head saying less: checked, a rollback
