"""Reads the kernel's per-process syscall counters into the sink.

Counts are aggregated in the kernel (bpf/syscalls.bpf.c); this task reads
the map every ``interval`` seconds and sends each process whose counts
changed a cumulative :class:`SyscallCounts`. A process that exited gets a
last reading marked ``final``, read from the map as its counters are
deleted (so nothing it counted between two readings is lost): that is what
keeps the map from filling up on a long-running host.

The map is read in a worker thread (a busy host's map holds tens of
thousands of counters): the trio loop, and so the drain and the live tail,
never waits for it.
"""

from __future__ import annotations

import os
from collections import defaultdict

import trio

from agent.capture.events import SyscallCounts
from agent.capture.ledger import Ledger
from agent.capture.loader import LoadedCapture
from agent.sinks.base import EventSink


class SyscallPoller:
    def __init__(
        self,
        capture: LoadedCapture,
        sink: EventSink[object],
        ledger: Ledger,
        *,
        interval: float = 1.0,
    ) -> None:
        self.capture = capture
        self.sink = sink
        self.ledger = ledger
        self.interval = interval
        self._last: dict[tuple[int, int], int] = {}
        self._exited: set[int] = set()
        self._names = capture.decoder.syscall_names
        self._one_at_a_time = trio.Lock()

    def process_exited(self, pid: int) -> None:
        self._exited.add(pid)

    async def poll_once(self) -> None:
        """One reading: the map is read (and finished processes' counters
        deleted) in a worker thread, since a busy host's map holds tens of
        thousands of counters and a bpf(2) call per exited one; the readings
        then reach the sink in one batch. Readings run one at a time: the
        final one at stop must not interleave with a periodic one still in
        its thread (both would count the same increments); so ``_last`` and
        the ledger's ``syscall`` count have one writer at any moment."""
        async with self._one_at_a_time:
            exited_now = set(self._exited)
            readings = await trio.to_thread.run_sync(self._collect, exited_now)
            if readings:
                await self.sink.record_many(readings)
            # Exits seen during this poll's awaits wait for the next one.
            self._exited -= exited_now

    def _collect(self, exited_now: set[int]) -> list[SyscallCounts]:
        current: dict[int, dict[int, int]] = defaultdict(dict)
        changed: set[int] = set()
        received = 0
        for pid, nr, count in self.capture.syscall_counts():
            current[pid][nr] = count
            old = self._last.get((pid, nr), 0)
            if count != old:
                changed.add(pid)
                received += count - old
                self._last[(pid, nr)] = count
        # A process whose exit record was lost would keep its counters
        # forever: one that no longer exists is final too.
        gone = {pid for pid in current if pid not in changed and not os.path.exists(f"/proc/{pid}")}
        final = (exited_now | gone) & set(current)
        # The last counts of a finished process are read as they are deleted:
        # whatever it counted since the reading above is in them.
        popped = self.capture.pop_syscall_counts(
            [(pid, nr) for pid in sorted(final) for nr in current[pid]]
        )
        for (pid, nr), count in popped.items():
            old = self._last.get((pid, nr), 0)
            if count != old:
                changed.add(pid)
                received += count - old
            current[pid][nr] = count
        self.ledger.received["syscall"] += received
        readings = [
            SyscallCounts(
                pid=pid,
                counts={
                    self._names.get(nr, f"syscall_{nr}"): c
                    for nr, c in sorted(current[pid].items())
                },
                final=pid in final,
            )
            for pid in sorted(changed | final)
        ]
        for pid in final:
            for nr in current[pid]:
                self._last.pop((pid, nr), None)
        return readings

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.poll_once()
