"""A capture session: the drain, the syscall poller and the stats reporter,
all in one trio nursery, around one loaded capture and one sink.

``CaptureSession.run`` returns once ``stop()`` was called and everything in
flight was delivered: probes detached, ring buffer emptied, last syscall
counts read. Only then are the books exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from agent.capture.drain import Drain
from agent.capture.fold import FoldSettings, FoldStats
from agent.capture.ledger import KindAccount, Ledger
from agent.capture.loader import CacheReport, LoadedCapture, ProbeStatus
from agent.capture.syscall_poller import SyscallPoller
from agent.sinks.base import EventSink
from agent.wallclock import human_time, measure_boot_offset


class CaptureStats(msgspec.Struct, frozen=True):
    """What ``tracehound run`` prints and writes with ``--stats-file``."""

    kinds: dict[str, KindAccount]
    probes: list[ProbeStatus]
    balanced: bool
    #: Counted in the kernel, not a record's loss: scope_full (children left
    #: out of a profile's scope, with their subtrees), exit_status_full.
    errors: dict[str, int]
    uptime_s: float
    #: Taken from a sink, then lost in a consumer: {kind: {stage: n}}.
    downstream: dict[str, dict[str, int]] = {}
    #: The drain's fold table (None: folding is off).
    fold: FoldStats | None = None
    #: How the programs were loaded: from the program cache (hit) or compiled.
    cache: CacheReport | None = None
    #: When the session started, wall clock (RFC 3339 UTC, ms; agent.wallclock):
    #: ``uptime_s`` counts from there.
    started_at: str = ""


class CaptureSession:
    def __init__(
        self,
        capture: LoadedCapture,
        sink: EventSink[Any],
        *,
        syscall_interval: float = 1.0,
        stats_interval: float | None = None,
        report: Callable[[str], None] | None = None,
        fold: FoldSettings | None = None,
    ) -> None:
        self.capture = capture
        self.sink = sink
        self.ledger = Ledger()
        self.poller = SyscallPoller(capture, sink, self.ledger, interval=syscall_interval)
        self.drain = Drain(
            capture, sink, self.ledger, on_exit=self.poller.process_exited, fold=fold
        )
        self.stats_interval = stats_interval
        self.report = report
        self._started = time.monotonic()
        self._started_at = human_time(
            time.clock_gettime_ns(time.CLOCK_BOOTTIME), measure_boot_offset()
        )
        self._stop = trio.Event()
        for status in capture.statuses:
            if not status.attached:
                sink.note(f"probe {status.name} missing: {status.reason}")

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> CaptureStats:
        books = self.ledger.account(self.capture.kernel_counters(), self.sink.accounting())
        return CaptureStats(
            kinds=books,
            probes=list(self.capture.statuses),
            balanced=all(b.balanced for b in books.values()),
            errors=self.capture.kernel_errors(),
            uptime_s=round(time.monotonic() - self._started, 3),
            downstream=self.ledger.downstream.table(),
            fold=self.drain.fold_stats(),
            cache=self.capture.cache,
            started_at=self._started_at,
        )

    def stats_line(self, depth: str = "") -> str:
        books = self.stats().kinds
        events = " ".join(f"{k}={b.delivered}" for k, b in books.items())
        lost = " ".join(f"{k}={b.lost}" for k, b in books.items())
        missing = sum(1 for s in self.capture.statuses if not s.attached)
        line = f"events {events} | lost {lost}"
        ring = self.drain.ring_depth()
        if ring is not None:
            line += f" | ring {ring[0] // 1024}/{ring[1] // 1024} KiB"
        if depth:
            line += f" | {depth}"
        if missing:
            line += f" | probes missing {missing}"
        return line

    async def _report(self) -> None:
        assert self.stats_interval is not None and self.report is not None
        while True:
            await trio.sleep(self.stats_interval)
            self.report(self.stats_line())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.drain.run)
            nursery.start_soon(self.poller.run)
            if self.stats_interval and self.report:
                nursery.start_soon(self._report)
            task_status.started()
            await self._stop.wait()
            self.drain.stop()
            await self.drain.wait_stopped()
            await self.poller.poll_once()
            nursery.cancel_scope.cancel()
