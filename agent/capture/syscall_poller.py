"""Reads the kernel's per-process syscall counters into the sink.

Counts are aggregated in the kernel (bpf/syscalls.bpf.c); this task reads
the map every ``interval`` seconds and sends each process whose counts
changed a cumulative :class:`SyscallCounts`. A process that exited gets a
last reading marked ``final``, read from the map as its counters are
deleted (so nothing it counted between two readings is lost): that is what
keeps the map from filling up on a long-running host.
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

    def process_exited(self, pid: int) -> None:
        self._exited.add(pid)

    async def poll_once(self) -> None:
        exited_now = set(self._exited)
        current: dict[int, dict[int, int]] = defaultdict(dict)
        changed: set[int] = set()
        for pid, nr, count in self.capture.syscall_counts():
            current[pid][nr] = count
            old = self._last.get((pid, nr), 0)
            if count != old:
                changed.add(pid)
                self.ledger.received["syscall"] += count - old
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
                self.ledger.received["syscall"] += count - old
            current[pid][nr] = count
        for pid in sorted(changed | final):
            counts = {
                self._names.get(nr, f"syscall_{nr}"): c for nr, c in sorted(current[pid].items())
            }
            await self.sink.record(SyscallCounts(pid=pid, counts=counts, final=pid in final))
        for pid in final:
            for nr in current[pid]:
                self._last.pop((pid, nr), None)
        # Exits seen during this poll's awaits wait for the next one.
        self._exited -= exited_now

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.poll_once()
