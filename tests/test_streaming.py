"""StreamingSink: a bounded channel; 'block' waits for the consumer, 'drop' counts."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from agent.capture.events import Event, ExitEvent, ForkEvent, SyscallCounts, kind_of
from agent.sinks.streaming import StreamingSink, StreamStats


def fork(i: int) -> ForkEvent:
    return ForkEvent(pid=1, tid=1, ts_ns=i, uid=0, gid=0, cgroup_id=0, comm="p", child_pid=i,
                     clone_flags=0)  # fmt: skip


def exit_(i: int) -> ExitEvent:
    return ExitEvent(pid=i, tid=i, ts_ns=i, uid=0, gid=0, cgroup_id=0, comm="p", exit_code=0,
                     signal=0, have_code=True, have_signal=False)  # fmt: skip


def mixed(n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        if i % 3 == 0:
            out.append(exit_(i))
        elif i % 3 == 1:
            out.append(fork(i))
        else:
            out.append(SyscallCounts(pid=i, counts={"read": i}, final=False))
    return out


def totals(sink: StreamingSink) -> Counter[str]:
    return sink.delivered + sink.dropped


# -- construction --------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        StreamingSink(capacity)


@pytest.mark.parametrize("policy", ["lossy", "", "BLOCK"])
def test_policy_must_be_known(policy: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        StreamingSink(4, policy)  # type: ignore[arg-type]


def test_defaults() -> None:
    sink = StreamingSink()
    assert (sink.capacity, sink.policy, sink.name, sink.depth) == (8192, "block", "streaming", 0)


# -- the bound -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["block", "drop"])
@pytest.mark.parametrize("seed", range(6))
async def test_depth_never_exceeds_capacity(
    policy: str, seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    capacity = rng.randint(1, 5)
    sink = StreamingSink(capacity, policy)  # type: ignore[arg-type]
    offered = mixed(rng.randint(20, 80))
    received: list[Event] = []
    max_depth = 0

    async def producer() -> None:
        nonlocal max_depth
        for event in offered:
            await sink.record(event)
            max_depth = max(max_depth, sink.depth)
            if rng.random() < 0.3:
                await trio.sleep(rng.random() / 10)
        sink.finish()

    async def consumer() -> None:
        nonlocal max_depth
        async for batch in sink.receive_channel:
            received.extend(batch)
            max_depth = max(max_depth, sink.depth)
            await trio.sleep(rng.random() / 5)  # slower than the producer, on average

    async def watcher() -> None:
        nonlocal max_depth
        while True:
            max_depth = max(max_depth, sink.depth)
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)
        async with trio.open_nursery() as work:
            work.start_soon(producer)
            work.start_soon(consumer)
        nursery.cancel_scope.cancel()

    assert 1 <= max_depth <= capacity
    assert totals(sink) == Counter(kind_of(e) for e in offered)
    assert sum(sink.delivered.values()) == len(received)
    if policy == "block":
        assert received == offered  # nothing lost, order kept
        assert not sink.dropped
    else:
        it = iter(offered)
        assert all(any(e is o for o in it) for e in received)  # an ordered subsequence


@pytest.mark.parametrize("policy", ["block", "drop"])
async def test_bound_holds_with_no_consumer(
    policy: str, autojump_clock: trio.testing.MockClock
) -> None:
    sink = StreamingSink(3, policy)  # type: ignore[arg-type]
    with trio.move_on_after(60):
        for event in mixed(10):
            await sink.record(event)
    assert sink.depth == 3
    assert len(sink.receive_channel.receive_nowait()) == 3


# -- block -----------------------------------------------------------------------


async def test_block_waits_for_the_consumer_then_continues() -> None:
    sink = StreamingSink(1, "block")
    await sink.record(fork(1))  # room: returns at once
    done = trio.Event()

    async def second() -> None:
        await sink.record(fork(2))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        assert sink.depth == 1
        assert sink.delivered == {"fork": 1}
        (first,) = await sink.receive_channel.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert done.is_set()
    assert isinstance(first, ForkEvent) and first.child_pid == 1
    assert sink.delivered == {"fork": 2}
    assert not sink.dropped
    (nxt,) = sink.receive_channel.receive_nowait()
    assert isinstance(nxt, ForkEvent) and nxt.child_pid == 2


async def test_block_does_not_return_while_full(autojump_clock: trio.testing.MockClock) -> None:
    sink = StreamingSink(2, "block")
    await sink.record(fork(1))
    await sink.record(fork(2))
    with trio.move_on_after(3600) as scope:
        await sink.record(fork(3))
    assert scope.cancelled_caught
    assert sink.depth == 2
    assert sink.delivered == {"fork": 2}
    # The cancelled wait gave up its event: counted, never silent.
    assert sink.dropped == {"fork": 1}


async def test_block_record_returns_when_consumer_leaves() -> None:
    sink = StreamingSink(1, "block")
    await sink.record(fork(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.record, exit_(2))
        await trio.testing.wait_all_tasks_blocked()
        await sink.receive_channel.aclose()
    assert sink.consumer_gone
    assert sink.delivered == {"fork": 1}
    assert sink.dropped == {"exit": 1}


async def test_cancelled_blocked_record_is_still_accounted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = StreamingSink(1, "block")
    await sink.record(fork(1))
    with trio.move_on_after(1):
        await sink.record(fork(2))
    assert sum(totals(sink).values()) == 2


# -- drop ------------------------------------------------------------------------


async def test_drop_counts_per_kind(autojump_clock: trio.testing.MockClock) -> None:
    sink = StreamingSink(2, "drop")
    offered = [fork(1), exit_(2), fork(3), exit_(4), exit_(5), fork(6)]
    with trio.fail_after(1):  # 'drop' never waits
        for event in offered:
            await sink.record(event)
    assert sink.delivered == {"fork": 1, "exit": 1}
    assert sink.dropped == {"fork": 2, "exit": 2}
    assert totals(sink) == Counter(kind_of(e) for e in offered)
    got = sink.receive_channel.receive_nowait()  # everything queued, as one batch
    assert got == offered[:2]
    # Room again: the next one is delivered.
    await sink.record(fork(7))
    assert sink.delivered["fork"] == 2
    assert sink.depth == 1


async def test_drop_accounting() -> None:
    sink = StreamingSink(1, "drop", name="events-file")
    for event in mixed(7):
        await sink.record(event)
    acct = sink.accounting()
    assert list(acct) == ["events-file"]
    assert acct["events-file"] == {"exit": (1, 2), "fork": (0, 2), "syscall": (0, 2)}
    offered = Counter(kind_of(e) for e in mixed(7))
    assert {k: d + x for k, (d, x) in acct["events-file"].items()} == offered


# -- consumer gone / finish ------------------------------------------------------


@pytest.mark.parametrize("policy", ["block", "drop"])
async def test_closed_consumer_makes_counted_drops(policy: str) -> None:
    sink = StreamingSink(4, policy)  # type: ignore[arg-type]
    await sink.record(fork(1))
    await sink.receive_channel.aclose()
    for event in mixed(6):
        await sink.record(event)  # never raises
    assert sink.consumer_gone
    assert sink.delivered == {"fork": 1}
    assert sink.dropped == Counter(kind_of(e) for e in mixed(6))
    assert sink.stats().consumer_gone is True


async def test_finish_ends_the_stream_after_buffered_events() -> None:
    sink = StreamingSink(8)
    offered = mixed(5)
    for event in offered:
        await sink.record(event)
    sink.note("probe x missing")
    stats = sink.finish()
    assert isinstance(stats, StreamStats)
    assert stats.capacity == 8
    assert stats.policy == "block"
    assert stats.depth == 5
    assert stats.delivered == {"exit": 2, "fork": 2, "syscall": 1}
    assert list(stats.delivered) == sorted(stats.delivered)
    assert stats.dropped == {}
    assert stats.consumer_gone is False
    received = [event async for batch in sink.receive_channel for event in batch]
    assert received == offered
    assert list(sink.notes) == ["probe x missing"]


async def test_finish_wakes_a_waiting_consumer() -> None:
    sink = StreamingSink(2)
    ended = trio.Event()

    async def consume() -> None:
        async for _ in sink.receive_channel:
            pass
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert not ended.is_set()
        sink.finish()
    assert ended.is_set()


def test_notes_are_bounded() -> None:
    sink = StreamingSink(1, max_notes=2)
    for i in range(4):
        sink.note(str(i))
    assert list(sink.notes) == ["2", "3"]


def test_accounting_empty() -> None:
    assert StreamingSink(1).accounting() == {"streaming": {}}


async def test_batches_keep_order_and_split_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A batch larger than the room left is split: what fits is queued at
    once, the rest waits (block) or is dropped and counted (drop)."""
    offered = mixed(10)
    blocking = StreamingSink(4, "block")
    received: list[Event] = []

    async def consume() -> None:
        async for batch in blocking.receive_channel:
            assert len(batch) <= 4
            received.extend(batch)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await blocking.record_many(offered[:7])
        await blocking.record_many(offered[7:])
        blocking.finish()
    assert received == offered
    assert sum(blocking.delivered.values()) == 10 and not blocking.dropped

    dropping = StreamingSink(4, "drop")
    await dropping.record_many(offered[:7])
    assert dropping.receive_channel.receive_nowait() == offered[:4]
    assert totals(dropping) == Counter(kind_of(e) for e in offered[:7])
    assert sum(dropping.dropped.values()) == 3


async def test_every_blocked_producer_wakes_when_the_consumer_takes() -> None:
    """The drain and the syscall poller can both wait for room at once: one
    take must wake both (a lost wakeup once stalled the drain for good)."""
    sink = StreamingSink(1, "block")
    await sink.record(fork(0))
    done: list[str] = []

    async def produce(name: str, event: Event) -> None:
        await sink.record(event)
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, "drain", fork(1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(produce, "poller", exit_(2))
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        with trio.fail_after(5):
            while len(done) < 2:
                sink.receive_channel.receive_nowait()
                await trio.testing.wait_all_tasks_blocked()
    assert sorted(done) == ["drain", "poller"]
    assert sum(sink.delivered.values()) == 3 and not sink.dropped
