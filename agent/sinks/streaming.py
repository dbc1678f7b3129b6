"""StreamingSink: a bounded queue of event batches with a policy when full.

Events travel in batches (the drain's, as they came off the ring buffer):
one await per batch from the drain to the consumer, not one per event. The
bound is in events, whatever the batches' sizes.

``block``: ``record_many`` waits for room. The drain stops, the kernel's ring
buffer fills, and the kernel counts what no longer fits (per kind): the
loss is real but never silent. ``drop``: the event is dropped here and
counted per kind. Counts are in kernel events (a folded event is its
``count``), so the ledger's law holds whatever folding did.

Memory never grows past ``capacity`` events (plus the rest of the batch a
blocked ``record_many`` holds), whatever the consumer does. A consumer that closed its
end makes every later event a counted drop ("consumer gone"), never an error
in the drain: delivery fails safe.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import msgspec
import trio

from agent.capture.events import Event, event_count, kind_of
from agent.sinks.base import SinkCounts

FullPolicy = Literal["block", "drop"]


class StreamStats(msgspec.Struct, frozen=True):
    capacity: int
    depth: int
    policy: str
    delivered: dict[str, int]
    dropped: dict[str, int]
    consumer_gone: bool


class StreamClosed(Exception):
    """The sending side finished and everything queued was taken."""


class BatchReceiver:
    """The consuming end of a :class:`StreamingSink`: batches of events, in order.

    ``async for batch in receiver`` takes everything queued at once (one
    list, possibly several producer batches joined) until the sink
    finished; :meth:`receive_nowait` takes what is there without waiting
    (``trio.WouldBlock`` if nothing, :class:`trio.EndOfChannel` once
    finished and empty). :meth:`aclose` says the consumer is gone: later
    events are counted as dropped by the sink; what was queued and not
    taken is the consumer's to count (:meth:`receive_nowait` it away).
    """

    def __init__(self, sink: StreamingSink) -> None:
        self._sink = sink

    def receive_nowait(self) -> list[Event]:
        sink = self._sink
        if sink.consumer_gone:
            raise trio.ClosedResourceError("the receiver was closed")
        if not sink._queue:
            if sink._finished:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        return sink._take()

    async def receive(self) -> list[Event]:
        while True:
            try:
                batch = self.receive_nowait()
            except trio.WouldBlock:
                await self._sink._wait_for_events()
                continue
            await trio.lowlevel.checkpoint()
            return batch

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Event]]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return

    async def aclose(self) -> None:
        self._sink._consumer_closed()
        await trio.lowlevel.checkpoint()


class StreamingSink:
    def __init__(
        self,
        capacity: int = 8192,
        policy: FullPolicy = "block",
        *,
        name: str = "streaming",
        max_notes: int = 256,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"streaming sink capacity must be at least 1, got {capacity}")
        if policy not in ("block", "drop"):
            raise ValueError(f"streaming sink policy must be 'block' or 'drop', got {policy!r}")
        self.name = name
        self.capacity = capacity
        self.policy: FullPolicy = policy
        self._queue: deque[list[Event]] = deque()
        self._depth = 0
        self._finished = False
        self._has_events = trio.Event()
        self._has_room = trio.Event()
        self.receive_channel = BatchReceiver(self)
        self.delivered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.notes: deque[str] = deque(maxlen=max_notes)
        self.consumer_gone = False

    @property
    def depth(self) -> int:
        """Events waiting for the consumer now."""
        return self._depth

    async def record(self, event: Event) -> None:
        await self.record_many((event,))

    async def record_many(self, events: Sequence[Event]) -> None:
        """Queue ``events``; with ``block``, wait for room for what does not fit.

        Cancelled while waiting, the events not yet queued are counted as
        dropped (never silently), and the cancellation goes on.
        """
        rest = list(events)
        while rest:
            if self.consumer_gone or self._finished:
                self._drop(rest)
                return
            room = self.capacity - self._depth
            if room > 0:
                taken, rest = (rest, []) if len(rest) <= room else (rest[:room], rest[room:])
                self._put(taken)
                continue
            if self.policy == "drop":
                self._drop(rest)
                return
            try:
                await self._wait_for_room()
            except trio.Cancelled:
                self._drop(rest)
                raise

    def _put(self, batch: list[Event]) -> None:
        self._queue.append(batch)
        self._depth += len(batch)
        delivered = self.delivered
        for event in batch:  # in kernel events: a folded one is its count
            delivered[kind_of(event)] += event_count(event)
        self._has_events.set()

    def _drop(self, events: Sequence[Event]) -> None:
        dropped = self.dropped
        for event in events:  # a dropped folded event loses all it stands for
            dropped[kind_of(event)] += event_count(event)

    def _take(self) -> list[Event]:
        queue = self._queue
        batch = queue.popleft() if len(queue) == 1 else [e for b in queue for e in b]
        queue.clear()
        self._depth = 0
        self._has_room.set()
        return batch

    async def _wait_for_events(self) -> None:
        if not self._queue and not self._finished and not self.consumer_gone:
            if self._has_events.is_set():
                self._has_events = trio.Event()
            await self._has_events.wait()

    async def _wait_for_room(self) -> None:
        # Several producers may wait at once (the drain, the syscall poller,
        # /proc seeding): they share one unset event, so the consumer's next
        # take wakes every one of them. Replacing it for each waiter would
        # strand the earlier ones on an event nobody sets any more.
        if self._has_room.is_set():
            self._has_room = trio.Event()
        await self._has_room.wait()

    def _consumer_closed(self) -> None:
        self.consumer_gone = True
        self._has_room.set()

    def note(self, message: str) -> None:
        self.notes.append(message)

    def accounting(self) -> dict[str, SinkCounts]:
        kinds = set(self.delivered) | set(self.dropped)
        return {self.name: {k: (self.delivered[k], self.dropped[k]) for k in kinds}}

    def stats(self) -> StreamStats:
        return StreamStats(
            capacity=self.capacity,
            depth=self.depth,
            policy=self.policy,
            delivered=dict(sorted(self.delivered.items())),
            dropped=dict(sorted(self.dropped.items())),
            consumer_gone=self.consumer_gone,
        )

    def finish(self) -> StreamStats:
        """End the stream: the consumer sees its end once it has taken what is queued."""
        self._finished = True
        self._has_events.set()
        self._has_room.set()
        return self.stats()
