"""The drain: empties the kernel's ring buffer into an EventSink.

It runs in the trio thread (a C poll loop in a worker thread contending for
the GIL made each callback ~70x slower, see the kernel notes): wait on the
ring buffer's map fd with ``trio.lowlevel.wait_readable``, read a batch of
records straight from the mapped ring (agent.capture.ringbuf: no per-record
ctypes callback), decode into msgspec Structs, hand the batch to the sink.
It does nothing else: mapping, hashing and I/O belong to other tasks.

With folding on (``fold``), the records go through a
:class:`~agent.capture.fold.FoldTable` instead: repeats of a file or
network event inside the window are counted, not decoded, and delivered
as one event carrying their ``count``. Windows are closed on each pass
(at least every ``poll_interval``), and all of them at stop, before
:meth:`Drain.run` returns.

What can go wrong: a record that does not decode is counted per kind as a
decode error, never raised; a sink that blocks (StreamingSink with the ``block`` policy) stops the drain,
the ring buffer fills, and the kernel counts the overflow as lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from agent.capture.events import ExitEvent, KernelEvent, kind_of
from agent.capture.fold import FoldSettings, FoldStats, FoldTable
from agent.capture.kinds import KIND_NAMES
from agent.capture.ledger import Ledger
from agent.capture.loader import LoadedCapture
from agent.capture.ringbuf import MappedRing
from agent.capture.wire import WireError
from agent.sinks.base import EventSink

#: Records read per pass before the sink gets them: bounds the batch.
DEFAULT_BATCH_MAX = 4096


class Drain:
    """Moves records from ``capture``'s ring buffer to ``sink``.

    ``on_exit`` is told each process that exited (the syscall poller uses it
    to read that process's final counts). Call :meth:`stop` to turn the
    probes' handlers off, start detaching them in the background, empty the
    ring buffer, and return from :meth:`run` (the loader's close() waits for
    the detach to finish and frees the maps, after the results are out).
    """

    def __init__(
        self,
        capture: LoadedCapture,
        sink: EventSink[object],
        ledger: Ledger,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        on_exit: Callable[[int], None] | None = None,
        poll_interval: float = 0.05,
        settle: float = 0.05,
        fold: FoldSettings | None = None,
    ) -> None:
        self.capture = capture
        self.sink = sink
        self.ledger = ledger
        self.batch_max = batch_max
        self.on_exit = on_exit
        self.poll_interval = poll_interval
        self.settle = settle
        self.paused = False  # tests hold the consumer back with this
        self._batch: list[KernelEvent] = []
        self._ring: MappedRing | None = None
        #: Passes through the loop: the watchdog pings only while this moves.
        self.passes = 0
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._decode = capture.decoder.decode
        self.fold: FoldTable | None = None
        if fold is not None and fold.enabled:
            self.fold = FoldTable(
                self._decode,
                window_ns=fold.window_ms * 1_000_000,
                capacity=fold.capacity,
                received=ledger.received,
                decode_errors=ledger.decode_errors,
                pending=ledger.folding,
            )

    def fold_stats(self) -> FoldStats | None:
        """The fold table's counters, None when folding is off."""
        return None if self.fold is None else self.fold.stats()

    def _decode_batch(self, records: list[bytes]) -> None:
        fold = self.fold
        if fold is not None:
            fold.feed(records, self._batch)
            fold.expire(time.clock_gettime_ns(time.CLOCK_BOOTTIME), self._batch)
            return
        decode = self._decode
        received = self.ledger.received
        batch = self._batch
        for raw in records:
            try:
                event = decode(raw)
            except WireError:
                kind = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
                name = KIND_NAMES.get(kind, "unknown")
                received[name] += 1
                self.ledger.decode_errors[name] += 1
                continue
            received[kind_of(event)] += 1
            batch.append(event)

    async def _deliver(self) -> None:
        """Hand the batch over in one await: a sink that waits (backpressure)
        or is cancelled counts what it could not take itself."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        await self.sink.record_many(batch)
        on_exit = self.on_exit
        if on_exit is not None:
            for event in batch:
                if type(event) is ExitEvent:
                    on_exit(event.pid)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ring = self._ring = self.capture.mapped_ring()
        task_status.started()
        try:
            while not self._stop.is_set():
                if not ring.pending():
                    # The kernel wakes us only every TH_WAKEUP_EVERY records
                    # per CPU (see th_submit_flags); the timeout catches a
                    # trickle that never reaches that many.
                    with trio.move_on_after(self.poll_interval):
                        await trio.lowlevel.wait_readable(ring.fd)
                if self.paused:
                    await trio.sleep(self.poll_interval)
                    continue
                self._decode_batch(ring.read(self.batch_max))
                await self._deliver()
                self.passes += 1
                await trio.lowlevel.checkpoint()
            # Turn every handler off at once; let syscalls already past their
            # check land (a handler runs for microseconds); then empty the ring.
            # Detaching (slow: RCU grace periods) runs in threads meanwhile:
            # a disabled handler makes no record, attached or not.
            self.capture.disable()
            self.capture.start_detach()
            await trio.sleep(self.settle)
            while ring.pending():
                self._decode_batch(ring.read(self.batch_max))
                await self._deliver()
            if self.fold is not None:
                self.fold.flush(self._batch)
                await self._deliver()
        finally:
            trio.lowlevel.notify_closing(ring.fd)
            self._ring = None
            ring.close()
            self._stopped.set()

    def ring_depth(self) -> tuple[int, int] | None:
        """(bytes waiting in the kernel ring, its size), while running."""
        ring = self._ring
        return None if ring is None else (ring.backlog(), ring.capacity)

    def stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
