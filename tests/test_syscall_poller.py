"""The syscall poller reads one reading at a time.

The final reading at stop and a periodic one still in its worker thread
must not interleave: both would see the same counters as new and count the
same syscalls twice. The race needs both threads inside the map read at
once, which the real kernel map makes a matter of luck, so the capture here
is a stand-in whose read waits (up to a moment) for a second reader: with
the poller's lock it never comes, without it both read the same counts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import trio

from agent.capture.events import SyscallCounts
from agent.capture.ledger import Ledger
from agent.capture.loader import LoadedCapture
from agent.capture.syscall_poller import SyscallPoller


class _Decoder:
    def __init__(self) -> None:
        self.syscall_names = {0: "read"}


class _RacyCapture:
    """Counters (pid 7: 10 reads) behind a read that lingers for company."""

    def __init__(self) -> None:
        self.decoder = _Decoder()
        self.company = threading.Barrier(2, timeout=0.5)
        self.met = False

    def syscall_counts(self) -> Iterator[tuple[int, int, int]]:
        try:
            self.company.wait()
            self.met = True
        except threading.BrokenBarrierError:
            pass  # alone in the map, as it should be
        yield (7, 0, 10)

    def pop_syscall_counts(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
        return {}


class _Sink:
    def __init__(self) -> None:
        self.readings: list[SyscallCounts] = []

    async def record_many(self, events: Sequence[Any]) -> None:
        self.readings.extend(events)


def test_two_readings_at_once_count_each_syscall_once() -> None:
    capture, sink, ledger = _RacyCapture(), _Sink(), Ledger()
    poller = SyscallPoller(cast(LoadedCapture, capture), cast(Any, sink), ledger, interval=60)

    async def main() -> None:
        async with trio.open_nursery() as both:
            both.start_soon(poller.poll_once)  # the periodic reading
            both.start_soon(poller.poll_once)  # the final one, at stop

    trio.run(main)
    assert not capture.met, "the two readings were in the map at the same time"
    assert ledger.received["syscall"] == 10
    assert [r.counts for r in sink.readings] == [{"read": 10}]
