"""The EventSink protocol every sink implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from agent.capture.events import Event

ResultT_co = TypeVar("ResultT_co", covariant=True)

#: Per kind: (delivered, dropped).
SinkCounts = dict[str, tuple[int, int]]


class EventSink(Protocol[ResultT_co]):
    """A consumer of capture events.

    ``record_many`` is awaited once per batch (the drain's, as read off the
    ring buffer), ``record`` once per single event (the syscall poller's,
    /proc seeding); both deliver in the order the kernel produced
    them per CPU. It must not checkpoint unless it has to wait: a sink that
    never waits (AggregatingSink) costs the drain no scheduling; a sink that
    waits (StreamingSink's ``block`` policy) is backpressure, and the kernel's
    loss counters account for what that costs.

    ``note`` records a message about the capture itself (a probe missing, a
    loss) that belongs with the result. ``finish`` ends the sink and returns
    its result; ``record`` must not be called after it.

    ``accounting`` says, per kind, how many events were delivered and how
    many dropped, keyed by sink name, for the loss ledger.
    """

    name: str

    async def record(self, event: Event) -> None: ...

    async def record_many(self, events: Sequence[Event]) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> ResultT_co: ...

    def accounting(self) -> dict[str, SinkCounts]: ...
