"""One capture's sink graph and its lifetime, for ``run`` and ``profile`` alike.

The graph: the aggregating sink (snapshot or profile), an optional bounded
stream to the ``--events`` writer, an optional bounded stream to the
evidence pipeline, a tee over them when there is more than one, and the
capture session (drain, syscall poller, stats) feeding it. :class:`Runtime`
builds it once and :meth:`Runtime.running` starts and stops it in one
order, so the two commands cannot drift apart:

start: the consumers (events writer, evidence pipeline, which writes its
start records), then the capture session.

stop (when the ``running`` body returns): the session stops and returns
only once everything in flight was delivered (probes detached, ring
emptied, last syscall counts read); then the streams end; then the
consumers finish what they hold (the pipeline writes its loss, stop and
final seal records). Only after that are the books final: a consumer's
losses at the very end are in them too.

What can go wrong: an exception in the body or a consumer cancels the
whole graph (trio's nursery rules); nothing is stopped twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from agent.capture.fold import FoldSettings
from agent.capture.loader import LoadedCapture
from agent.capture.session import CaptureSession, CaptureStats
from agent.config.schema import StreamPolicy
from agent.evidence.worker import EvidenceWorker
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.base import EventSink
from agent.sinks.streaming import StreamingSink
from agent.sinks.tee import TeeSink

__all__ = ["EventsConsumer", "OpenPipeline", "Runtime"]

OpenPipeline = Callable[[StreamingSink, CaptureSession], EvidenceWorker]
"""Opens the evidence pipeline over its stream, reading the session's books."""

EventsConsumer = Callable[[StreamingSink], Awaitable[None]]
"""Reads the ``--events`` stream until it ends."""


class Runtime:
    """The sink graph of one capture: built here, run by :meth:`running`.

    ``stream_capacity``/``stream_policy`` size each bounded stream
    (``[stream]``). ``events``: the consumer of an events stream (None: no
    such stream). ``evidence``: opens the evidence pipeline (None: no log);
    it runs after the session exists, since the pipeline reads its books,
    and may raise (a locked or damaged log) before anything started.
    ``fold``: how the drain folds floods (None: not at all).
    """

    def __init__(
        self,
        capture: LoadedCapture,
        aggregate: AggregatingSink,
        *,
        stream_capacity: int,
        stream_policy: StreamPolicy,
        events: EventsConsumer | None = None,
        evidence: OpenPipeline | None = None,
        stats_interval: float | None = None,
        report: Callable[[str], None] | None = None,
        fold: FoldSettings | None = None,
    ) -> None:
        self.aggregate = aggregate
        self._events = events
        self.events_stream = (
            StreamingSink(stream_capacity, stream_policy, name="events") if events else None
        )
        self.evidence_stream = (
            StreamingSink(stream_capacity, stream_policy, name="evidence") if evidence else None
        )
        sinks: list[EventSink[Any]] = [aggregate, *self.streams]
        self.sink: EventSink[Any] = aggregate if len(sinks) == 1 else TeeSink(sinks)
        self.session = CaptureSession(
            capture,
            self.sink,
            stats_interval=stats_interval,
            report=None if report is None else (lambda line: report(line + self.depths())),
            fold=fold,
        )
        self.pipeline: EvidenceWorker | None = None
        if evidence is not None and self.evidence_stream is not None:
            self.pipeline = evidence(self.evidence_stream, self.session)

    @property
    def streams(self) -> list[StreamingSink]:
        """The bounded streams, in the tee's order."""
        return [s for s in (self.events_stream, self.evidence_stream) if s is not None]

    def depths(self) -> str:
        """`` | events 3/8192 | evidence 0/8192 | publisher 0/1024`` for the stats line."""
        parts = [f"{s.name} {s.depth}/{s.capacity}" for s in self.streams]
        if self.pipeline is not None:
            parts.append(f"publisher {self.pipeline.depth}/{self.pipeline.capacity}")
        return "".join(f" | {p}" for p in parts)

    def stats(self) -> CaptureStats:
        """The books now; final once :meth:`running` has returned."""
        return self.session.stats()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Start the graph; the body runs while it captures; stop on return.

        The order is the module's: consumers, then the session; at the end
        the session (everything in flight delivered), the streams, then the
        consumers. The aggregate is not finished here: its result is the
        caller's to take (``finish()`` or ``snapshot()``).
        """
        async with trio.open_nursery() as consumers:
            if self._events is not None and self.events_stream is not None:
                consumers.start_soon(self._events, self.events_stream)
            if self.pipeline is not None:
                await consumers.start(self.pipeline.run)
            async with trio.open_nursery() as capturing:
                await capturing.start(self.session.run)
                yield self
                self.session.stop()  # run() returns once all in flight is delivered
            for stream in self.streams:
                stream.finish()  # the consumers read what is buffered, then end
