"""The evidence worker: the evidence pipeline in a process of its own.

The daemon forks a process that runs :func:`serve` here
(:func:`agent.evidence.worker.spawn`) with one end of a socketpair, and
speaks :mod:`agent.evidence.worker_protocol` over it. Here
an :class:`~agent.evidence.pipeline.EvidencePipeline` runs as it would in
the daemon, on a core of its own: its events come from the socket, its
books are the latest the daemon sent, its losses go back in every status.

Signals: the worker ignores SIGINT and SIGTERM. A Ctrl-C reaches the whole
process group, and systemd may signal every process of the service; the
worker must still write what the daemon hands it while the daemon drains,
so it ends only when the daemon closes its side of the socket (or dies:
then the socket closes too), after the last records and the final seal.

What can go wrong: a log that cannot be opened is answered with
``Refused`` (one line) and exit status 1; a protocol error (a bug) is said
on stderr in one line, the pipeline finishes what it holds, and the status
is 1.
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import msgspec
import trio

from agent.capture.cgroups import CgroupResolver
from agent.capture.events import Event
from agent.capture.ledger import DownstreamLosses, KindAccount
from agent.errors import RunError, UsageError
from agent.evidence.layout import StoreCorruptError
from agent.evidence.pipeline import EvidencePipeline, open_pipeline
from agent.evidence.store import StoreLockedError
from agent.evidence.types import EvidenceRecord
from agent.evidence.worker_protocol import (
    CONTROL,
    EVENTS,
    PUBLISHED,
    REPORT,
    Append,
    Books,
    Control,
    Extent,
    FrameReader,
    Opened,
    ProtocolError,
    Reconfigure,
    Refused,
    Reply,
    Report,
    Start,
    Status,
    decode_events,
    frame,
)
from agent.failpoints import from_environment
from agent.redact import Redactor
from agent.state_dir import StateDirError

__all__ = ["open_log", "serve"]

#: Seconds between status messages: the daemon's view of depth and losses.
STATUS_INTERVAL = 0.1
#: Batches of events read from the socket and not yet mapped: past this the
#: worker stops reading, the socket fills and the daemon's stream pushes back.
#: Two keep the mapper busy; every batch more is only latency (a drain batch
#: is up to 4096 events: a tenth of a second of mapping each), and the
#: daemon's evidence stream is where the buffering is sized and measured.
INBOX_BATCHES = 2
#: Bytes of committed records waiting to go back for the live tail; past
#: this a batch is dropped here (counted; the records are in the log, and
#: the tail's clients would drop them anyway). By bytes, not batches: a
#: batch of 4096 records is ~4 MiB, and a daemon busy draining a flood
#: reads them back slower than they come.
TAIL_BYTES = 8 * 2**20

_control = msgspec.msgpack.Decoder(Control)


class _Time(msgspec.Struct):
    """A record's ``time``, read back from its bytes (the rest is skipped)."""

    time: str


_encode = msgspec.msgpack.Encoder().encode


def redactor_of(rules: Sequence[Any], max_field_chars: int) -> Redactor:
    """The daemon's redactor, rebuilt from its rules (built-in ones included)."""
    return Redactor(rules, max_field_chars=max_field_chars)


def open_log(
    start: Start,
    events: AsyncIterator[list[Event]],
    *,
    books: Callable[[], Mapping[str, KindAccount]],
    sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]],
    losses: DownstreamLosses,
) -> EvidencePipeline:
    """The pipeline over ``start.state_dir``; every failure one line starting
    with ``start.source``.

    Raises:
        RunError: the log is locked by another tracehound, damaged, or
            cannot be read.
        UsageError: TRACEPARENT/TRACESTATE are malformed.
    """
    source = start.source
    try:
        return open_pipeline(
            start.state_dir,
            events,
            books=books,
            sink_books=sink_books,
            losses=losses,
            failpoints=from_environment(),
            probes=list(start.probes),
            config=start.config,
            redactor=redactor_of(start.rules, start.max_field_chars),
            store_options=start.store,
            traceparent=start.traceparent,
            tracestate=start.tracestate,
            group=start.group,
            # The worker's own resolver (its cache is its own): a miss is
            # looked up on the spot, on this process's core, not the drain's.
            cgroups=CgroupResolver().resolve,
        )
    except StoreLockedError as err:
        raise RunError(f"{source}: in use by another tracehound ({err})") from err
    except StoreCorruptError as err:
        raise RunError(f"{source}: the log is damaged: {err}") from err
    except StateDirError as err:
        raise RunError(f"{source}: {err}") from err
    except OSError as err:
        raise RunError(f"{source}: {err.strerror or err}") from err
    except ValueError as err:  # a malformed TRACEPARENT: refused, not dropped
        raise UsageError(f"TRACEPARENT/TRACESTATE: {err}") from err


class _JoinedLosses(DownstreamLosses):
    """The worker's own downstream losses, counted here, joined in the
    table with what the daemon's other consumers lost (from its books)."""

    def __init__(self, daemon: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        super().__init__()
        self._daemon = daemon

    def own(self) -> dict[str, dict[str, int]]:
        return super().table()

    def table(self) -> dict[str, dict[str, int]]:
        joined = {kind: dict(stages) for kind, stages in self._daemon().items()}
        for kind, stages in self.own().items():
            joined.setdefault(kind, {}).update(stages)
        return {kind: dict(sorted(stages.items())) for kind, stages in sorted(joined.items())}


class _Worker:
    """One conversation with the daemon, over ``stream``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = FrameReader()
        self.send_lock = trio.StrictFIFOLock()
        self.books = Books(kinds={}, sinks={})
        self.losses = _JoinedLosses(lambda: self.books.downstream)
        self.taken = 0  # event batches read from the daemon
        self.tail_send, self.tail_receive = trio.open_memory_channel[bytes](math.inf)
        self.tail_bytes = 0  # waiting in tail_send, at most TAIL_BYTES
        self.inbox_send, self.inbox_receive = trio.open_memory_channel[list[Event]](INBOX_BATCHES)
        self.pipeline: EvidencePipeline | None = None
        self.failed = False
        self.gone = False
        #: The daemon sent its final books: the stream's end is capture's.
        self.ended = False
        self.tail_dropped = 0
        self._frames = self.frames()

    async def send(self, tag: int, payload: bytes) -> None:
        """Send one frame; once the daemon is gone, nothing (the pipeline
        still finishes what it holds: that is what the log is for)."""
        if self.gone:
            return
        async with self.send_lock:
            try:
                await self.stream.send_all(frame(tag, payload))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.gone = True

    async def report(self, message: Report) -> None:
        await self.send(REPORT, _encode(message))

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """Frames until the daemon closes its side."""
        while True:
            try:
                data = await self.stream.receive_some(1 << 20)
            except trio.BrokenResourceError:  # the daemon died: as an end
                data = b""
            if not data:
                if self.reader.pending:
                    raise ProtocolError(
                        f"the stream ended inside a frame ({self.reader.pending} bytes)"
                    )
                return
            for item in self.reader.feed(data):
                yield item

    def status(self, *, final: bool = False) -> Status:
        pipeline = self.pipeline
        assert pipeline is not None
        return Status(
            taken=self.taken,
            losses=self.losses.own(),
            mapped=pipeline.mapped,
            published=pipeline.published,
            depth=pipeline.depth,
            failing=pipeline.failing,
            failures=pipeline.failures,
            lost_to_store=pipeline.lost_to_store,
            owes_the_log=pipeline.owes_the_log,
            sealed=pipeline.sealed,
            checkpoint_age_s=pipeline.checkpoint_age_s,
            memo=pipeline.mapper.memo_stats(),
            tail_dropped=self.tail_dropped,
            final=final,
        )

    async def events(self) -> AsyncIterator[list[Event]]:
        async with self.inbox_receive:
            async for batch in self.inbox_receive:
                yield batch

    def published(self, records: list[EvidenceRecord], seqs: list[int]) -> None:
        """The pipeline committed ``records``: back to the daemon's live
        tail. Never waits: past :data:`TAIL_BYTES` waiting, dropped (the
        records are in the log; a tail client fetches them from there)."""
        if self.tail_bytes + sum(len(r.body) for r in records) > TAIL_BYTES:
            self.tail_dropped += len(records)
            return
        rows = [(seq, r.type, r.id, r.body) for seq, r in zip(seqs, records, strict=True)]
        payload = _encode(rows)
        self.tail_bytes += len(payload)
        self.tail_send.send_nowait(payload)

    async def send_published(self) -> None:
        async for payload in self.tail_receive:
            await self.send(PUBLISHED, payload)
            self.tail_bytes -= len(payload)

    async def send_status_periodically(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(STATUS_INTERVAL)
                await self.report(self.status())

    async def handle(self, message: Control) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        if isinstance(message, Books):
            self.books = message
            if message.final:
                self.ended = True
        elif isinstance(message, Extent):
            extent = await pipeline.extent()
            await self.report(
                Reply(request=message.request, extent=[(str(p), n) for p, n in extent])
            )
        elif isinstance(message, Reconfigure):
            redactor = None
            if message.rules is not None:
                redactor = redactor_of(message.rules, message.max_field_chars)
            await pipeline.reconfigure(message.config, redactor, message.store)
            await self.report(Reply(request=message.request))
        elif isinstance(message, Append):
            done = await pipeline.append_app(message.event)
            if isinstance(done, str):
                await self.report(Reply(request=message.request, refused=done))
            else:
                time = msgspec.json.decode(done.body, type=_Time).time
                await self.report(Reply(request=message.request, record_id=done.id, time=time))
        else:
            raise ProtocolError(f"a {type(message).__name__} message after the start")

    async def read(self) -> None:
        """Events to the pipeline, control messages handled, until EOF."""
        try:
            async for tag, payload in self._frames:
                if tag == EVENTS:
                    batch = decode_events(payload)
                    self.taken += 1
                    await self.inbox_send.send(batch)
                elif tag == CONTROL:
                    await self.handle(_control.decode(payload))
                else:
                    raise ProtocolError(f"a frame tagged {tag}")
        except (ProtocolError, msgspec.DecodeError, msgspec.ValidationError) as err:
            print(f"tracehound evidence worker: {err}", file=sys.stderr, flush=True)
            self.failed = True
        finally:
            if not self.ended and self.pipeline is not None:
                # The daemon died (or a bug cut the conversation): what is
                # here is written, and the log's end says capture did not stop.
                self.pipeline.capture_stopped = False
            self.inbox_send.close()  # the pipeline maps what it has, then ends

    async def run(self) -> int:
        first = await anext(self._frames, None)
        if first is None:
            return 0  # the daemon went away before it asked
        tag, payload = first
        start = _control.decode(payload) if tag == CONTROL else None
        if not isinstance(start, Start):
            raise ProtocolError("the first message was not a start")
        try:
            self.pipeline = pipeline = open_log(
                start,
                self.events(),
                books=lambda: self.books.kinds,
                sink_books=lambda: self.books.sinks,
                losses=self.losses,
            )
        except (RunError, UsageError) as err:
            await self.report(Refused(usage=not isinstance(err, RunError), message=str(err)))
            return 1
        pipeline.on_published = self.published
        async with trio.open_nursery() as outer:
            outer.start_soon(self.send_published)
            ticker = trio.CancelScope()
            outer.start_soon(self.send_status_periodically, ticker)
            async with trio.open_nursery() as inner:
                await inner.start(pipeline.run)
                await self.report(Opened(sealed=pipeline.sealed, capacity=pipeline.capacity))
                inner.start_soon(self.read)
            # The inbox ended (the daemon closed its side) and the pipeline
            # wrote its last records: the tail gets what is left, then the end.
            self.tail_send.close()
            ticker.cancel()
        await self.report(self.status(final=True))
        return 1 if self.failed else 0


def serve(sock: socket.socket) -> int:
    """Be the worker over ``sock`` until the daemon lets go; the exit status.

    Runs in the process :func:`agent.evidence.worker.spawn` forked, which
    ignores SIGINT and SIGTERM (see the module's note)."""
    return trio.run(_serve, sock)


async def _serve(sock: socket.socket) -> int:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with stream:
        try:
            return await _Worker(stream).run()
        except trio.BrokenResourceError:
            return 1  # the daemon is gone: nothing to tell
