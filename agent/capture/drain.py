"""The drain: empties the kernel's ring buffer into an EventSink.

It runs in the trio thread (a C poll loop in a worker thread contending for
the GIL made each callback ~70x slower, see the kernel notes): wait on the
ring buffer's map fd with ``trio.lowlevel.wait_readable``, read a batch of
records straight from the mapped ring (agent.capture.ringbuf: no per-record
ctypes callback), decode into msgspec Structs, hand the batch to the sink.
It does nothing else: mapping, hashing and I/O belong to other tasks.

What can go wrong: a record that does not decode is counted per kind as a
decode error, never raised; a sink that blocks (StreamingSink with the ``block`` policy) stops the drain,
the ring buffer fills, and the kernel counts the overflow as lost.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from agent.capture.events import ExitEvent, KernelEvent, kind_of
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
    probes' handlers off, empty the ring buffer, and return from :meth:`run`
    (detaching is the loader's close(), after the results are out).
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

    def _decode_batch(self, records: list[bytes]) -> None:
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
        batch, self._batch = self._batch, []
        record = self.sink.record
        on_exit = self.on_exit
        done = 0
        try:
            for event in batch:
                await record(event)
                done += 1
                if on_exit is not None and type(event) is ExitEvent:
                    on_exit(event.pid)
        finally:
            # Cancelled or failed mid-batch: the event in hand was counted by
            # the sink that gave up on it; the rest never reached any sink.
            for event in batch[done + 1 :]:
                self.ledger.abandoned[kind_of(event)] += 1

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
            self.capture.disable()
            await trio.sleep(self.settle)
            while ring.pending():
                self._decode_batch(ring.read(self.batch_max))
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
