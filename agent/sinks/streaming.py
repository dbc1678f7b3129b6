"""StreamingSink: a bounded trio memory channel with a policy when full.

``block``: ``record`` waits for room. The drain stops, the kernel's ring
buffer fills, and the kernel counts what no longer fits (per kind): the
loss is real but never silent. ``drop``: the event is dropped here and
counted per kind. Counts are in kernel events (a folded event is its
``count``), so the ledger's law holds whatever folding did.

Memory never grows past ``capacity`` events (plus the one a blocked
``record`` holds), whatever the consumer does. A consumer that closed its
end makes every later event a counted drop ("consumer gone"), never an error
in the drain: delivery fails safe.
"""

from __future__ import annotations

from collections import Counter, deque
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
        self._send, self.receive_channel = trio.open_memory_channel[Event](capacity)
        self.delivered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.notes: deque[str] = deque(maxlen=max_notes)
        self.consumer_gone = False

    @property
    def depth(self) -> int:
        """Events waiting for the consumer now."""
        return self._send.statistics().current_buffer_used

    async def record(self, event: Event) -> None:
        # Counted in kernel events: a dropped folded event loses all it stands for.
        kind = kind_of(event)
        n = event_count(event)
        if self.consumer_gone:
            self.dropped[kind] += n
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            if self.policy == "drop":
                self.dropped[kind] += n
                return
            try:
                await self._send.send(event)
            except trio.Cancelled:
                self.dropped[kind] += n  # never silently: the wait was cut short
                raise
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.consumer_gone = True
                self.dropped[kind] += n
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.consumer_gone = True
            self.dropped[kind] += n
            return
        self.delivered[kind] += n

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
        """Close the sending end: the consumer sees end-of-stream once it has
        read what is buffered."""
        self._send.close()
        return self.stats()
