"""TeeSink: every event to every child, in order; backpressure is whole."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

from agent.capture.events import Event, ForkEvent, SyscallCounts, kind_of
from agent.capture.ledger import Ledger
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.base import SinkCounts
from agent.sinks.profile import Profile
from agent.sinks.streaming import StreamingSink, StreamStats
from agent.sinks.tee import TeeSink


def fork(i: int) -> ForkEvent:
    return ForkEvent(pid=1, tid=1, ts_ns=i, uid=0, gid=0, cgroup_id=0, comm="p", child_pid=100 + i,
                     clone_flags=0)  # fmt: skip


class Recorder:
    """A child sink that remembers everything it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self.notes: list[str] = []
        self.finished = 0

    async def record(self, event: Event) -> None:
        self.events.append(event)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> str:
        self.finished += 1
        return f"result of {self.name}"

    def accounting(self) -> dict[str, SinkCounts]:
        c = Counter(kind_of(e) for e in self.events)
        return {self.name: {k: (n, 0) for k, n in c.items()}}


def test_needs_a_sink() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TeeSink([])


async def test_every_child_gets_every_event_in_order() -> None:
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    tee = TeeSink([a, b, c])
    events: list[Event] = [fork(1), SyscallCounts(pid=1, counts={"read": 1}, final=False), fork(2)]
    for event in events:
        await tee.record(event)
    assert a.events == events
    assert b.events == events
    assert c.events == events


def test_note_fans_out() -> None:
    a, b = Recorder("a"), Recorder("b")
    tee = TeeSink([a, b])
    tee.note("probe x missing")
    tee.note("lost 3")
    assert a.notes == b.notes == ["probe x missing", "lost 3"]


def test_finish_returns_each_result_in_order() -> None:
    a, b = Recorder("a"), Recorder("b")
    assert TeeSink([b, a]).finish() == ("result of b", "result of a")
    assert (a.finished, b.finished) == (1, 1)


async def test_accounting_merges_children_by_name() -> None:
    agg = AggregatingSink()
    stream = StreamingSink(1, "drop")
    tee = TeeSink([agg, stream], name="both")
    assert tee.name == "both"
    for i in range(4):
        await tee.record(fork(i))
    assert tee.accounting() == {"aggregating": {"fork": (4, 0)}, "streaming": {"fork": (1, 3)}}
    profile, stats = tee.finish()
    assert isinstance(profile, Profile)
    assert isinstance(stats, StreamStats)
    assert len(profile.processes) == 5  # the parent and four children
    assert stats.dropped == {"fork": 3}


async def test_a_blocking_child_blocks_the_tee() -> None:
    first, last = Recorder("first"), Recorder("last")
    stream = StreamingSink(1, "block")
    tee = TeeSink([first, stream, last])
    await tee.record(fork(1))
    done = trio.Event()

    async def second() -> None:
        await tee.record(fork(2))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        # The children before the blocked one have it; the ones after wait too.
        assert not done.is_set()
        assert [e.ts_ns for e in first.events] == [1, 2]
        assert [e.ts_ns for e in last.events] == [1]
        await stream.receive_channel.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert done.is_set()
    assert [e.ts_ns for e in last.events] == [1, 2]
    assert stream.delivered == {"fork": 2}


async def test_tee_books_balance_in_the_ledger() -> None:
    agg = AggregatingSink()
    stream = StreamingSink(2, "drop")
    tee = TeeSink([agg, stream])
    ledger = Ledger()
    for i in range(5):
        ledger.received["fork"] += 1
        await tee.record(fork(i))
    books = ledger.account({"fork": (6, 1)}, tee.accounting())
    fork_books = books["fork"]
    assert fork_books.balanced
    assert fork_books.sinks["aggregating"].delivered == 5
    assert fork_books.sinks["streaming"].delivered == 2
    assert fork_books.sinks["streaming"].dropped == 3
    # The headline shows the sink that dropped.
    assert (fork_books.delivered, fork_books.dropped_sink) == (2, 3)


async def test_children_with_the_same_name_do_not_hide_losses() -> None:
    lossless = StreamingSink(8, "drop")
    lossy = StreamingSink(1, "drop")
    try:
        tee = TeeSink([lossy, lossless])
    except ValueError:
        return  # rejecting duplicate names would be fine too
    for i in range(3):
        await tee.record(fork(i))
    dropped: list[Any] = [d for counts in tee.accounting().values() for _, d in counts.values()]
    assert sum(dropped) == 2
