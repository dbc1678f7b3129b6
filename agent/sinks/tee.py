"""TeeSink: several sinks at once (serve snapshots and stream together)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.capture.events import Event
from agent.sinks.base import EventSink, SinkCounts


class TeeSink:
    """Gives every event to each sink in turn. A blocking child blocks the
    tee: backpressure is whole, so no child silently sees less than another
    unless its own policy drops (and counts) events."""

    def __init__(self, sinks: Sequence[EventSink[Any]], *, name: str = "tee") -> None:
        if not sinks:
            raise ValueError("a tee needs at least one sink")
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            # Their books are keyed by name: a clash would hide one's drops.
            raise ValueError(f"sinks in a tee need distinct names, got {names}")
        self.name = name
        self.sinks = tuple(sinks)

    async def record(self, event: Event) -> None:
        for sink in self.sinks:
            await sink.record(event)

    async def record_many(self, events: Sequence[Event]) -> None:
        for sink in self.sinks:
            await sink.record_many(events)

    def note(self, message: str) -> None:
        for sink in self.sinks:
            sink.note(message)

    def accounting(self) -> dict[str, SinkCounts]:
        out: dict[str, SinkCounts] = {}
        for sink in self.sinks:
            out.update(sink.accounting())
        return out

    def finish(self) -> tuple[Any, ...]:
        return tuple(sink.finish() for sink in self.sinks)
