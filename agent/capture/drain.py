"""The drain: empties the kernel's ring buffer into an EventSink.

It runs in the trio thread (a C poll loop in a worker thread contending for
the GIL made each callback ~70x slower, see the kernel notes): wait on
libbpf's epoll fd with ``trio.lowlevel.wait_readable``, consume, decode into
msgspec Structs, hand the batch to the sink. It does nothing else: mapping,
hashing and I/O belong to other tasks.

What can go wrong: an exception inside bcc's ctypes callback would be
swallowed by ctypes, so the callback catches everything and counts it; a
sink that blocks (StreamingSink with the ``block`` policy) stops the drain,
the ring buffer fills, and the kernel counts the overflow as lost.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import trio

from agent.capture.events import ExitEvent, KernelEvent, kind_of
from agent.capture.ledger import Ledger
from agent.capture.loader import LoadedCapture
from agent.capture.wire import KIND_NAMES, WireError
from agent.sinks.base import EventSink

#: Records decoded per consume() before the sink gets them: bounds the batch.
DEFAULT_BATCH_MAX = 4096


class Drain:
    """Moves records from ``capture``'s ring buffer to ``sink``.

    ``on_exit`` is told each process that exited (the syscall poller uses it
    to read that process's final counts). Call :meth:`stop` to detach the
    probes, empty the ring buffer, and return from :meth:`run`.
    """

    def __init__(
        self,
        capture: LoadedCapture,
        sink: EventSink[object],
        ledger: Ledger,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        on_exit: Callable[[int], None] | None = None,
        wake_interval: float = 0.2,
    ) -> None:
        self.capture = capture
        self.sink = sink
        self.ledger = ledger
        self.batch_max = batch_max
        self.on_exit = on_exit
        self.wake_interval = wake_interval
        self.paused = False  # tests hold the consumer back with this
        self._batch: list[KernelEvent] = []
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._decode = capture.decoder.decode

    def _on_record(self, _ctx: Any, data: int, size: int) -> int:
        try:
            raw = ctypes.string_at(data, size)
            try:
                event = self._decode(raw)
            except WireError:
                kind = int.from_bytes(raw[:4], "little") if size >= 4 else 0
                name = KIND_NAMES.get(kind, "unknown")
                self.ledger.received[name] += 1
                self.ledger.decode_errors[name] += 1
                return 0
            self.ledger.received[kind_of(event)] += 1
            self._batch.append(event)
        except BaseException:
            self.ledger.callback_errors += 1
            return -1
        return -1 if len(self._batch) >= self.batch_max else 0

    async def _deliver(self) -> None:
        batch, self._batch = self._batch, []
        record = self.sink.record
        for event in batch:
            await record(event)
            if self.on_exit is not None and type(event) is ExitEvent:
                self.on_exit(event.pid)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        fd = self.capture.open_ring_buffer(self._on_record)
        task_status.started()
        try:
            while not self._stop.is_set():
                with trio.move_on_after(self.wake_interval):
                    await trio.lowlevel.wait_readable(fd)
                if self.paused:
                    await trio.sleep(self.wake_interval)
                    continue
                self.capture.consume()
                await self._deliver()
                await trio.lowlevel.checkpoint()
            # Detach first: nothing new arrives; then empty what is left.
            self.capture.detach()
            while True:
                self.capture.consume()
                if not self._batch:
                    break
                await self._deliver()
        finally:
            trio.lowlevel.notify_closing(fd)
            self._stopped.set()

    def stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
