"""The live tail: each evidence record, once it is in the log, fanned out to
every ``/v1/stream`` client.

The publisher calls :meth:`LiveTail.publish` in the trio thread after each
batch is written; it never waits. Each client has its own bounded
:class:`~agent.api.sse.SseClientBuffer`: a client that reads slower than the
host produces loses the newest records (counted, and told in an
``overflow`` event), never the capture. Because a record reaches the tail
only after it is in the log, a client that reconnects with the last id it
saw can always fetch what it missed from the log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from agent.api.sse import SseClientBuffer, sse_event
from agent.evidence.types import EvidenceRecord

__all__ = ["LiveClient", "LiveTail", "record_event"]


def record_event(body: bytes, type: str, id: str) -> bytes:
    """One evidence record as an SSE event: ``id`` is the record's id (the
    client's Last-Event-ID), ``event`` its type, ``data`` its canonical JSON
    as the log holds it (``body``, never encoded again), the same bytes
    whether it comes live or from the log."""
    return sse_event(body.decode("utf-8"), event=type, id=id)


class LiveClient:
    """One subscriber: its buffer, the log position (chain seq) of each
    record in it, and a way to wait for more."""

    def __init__(self, capacity: int) -> None:
        self.buffer = SseClientBuffer(capacity)
        self._seqs: deque[int] = deque()
        self._more = trio.Event()
        self.closed = False

    def offer(self, items: Sequence[tuple[int, bytes]]) -> None:
        for seq, item in items:
            if self.buffer.offer(item):
                self._seqs.append(seq)
        self._more.set()

    def take(self, after_seq: int = -1) -> bytes:
        """What to write now: queued records past chain seq ``after_seq`` (the
        rest were sent from the log already), then any overflow notice."""
        items = self.buffer.take_all()
        seqs, self._seqs = self._seqs, deque()
        fresh = [item for seq, item in zip(seqs, items, strict=True) if seq > after_seq]
        notice = self.buffer.overflow_notice()
        if notice is not None:
            fresh.append(notice)
        return b"".join(fresh)

    async def wait(self, timeout: float) -> None:
        """Until something was offered, the tail closed, or ``timeout`` passed."""
        with trio.move_on_after(timeout):
            await self._more.wait()
        self._more = trio.Event()

    def close(self) -> None:
        self.closed = True
        self._more.set()


class LiveTail:
    """The set of subscribed clients and their counters (for the metrics)."""

    def __init__(self) -> None:
        self._clients: set[LiveClient] = set()
        self._dropped_by_gone = 0
        self.closed = False

    @property
    def clients(self) -> list[LiveClient]:
        return list(self._clients)

    @property
    def dropped(self) -> int:
        """Records refused by any client's full buffer, since start."""
        return self._dropped_by_gone + sum(c.buffer.dropped for c in self._clients)

    def subscribe(self, capacity: int) -> LiveClient:
        client = LiveClient(capacity)
        if self.closed:
            client.close()
        self._clients.add(client)
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._dropped_by_gone += client.buffer.dropped

    def publish(self, records: Sequence[EvidenceRecord], seqs: Sequence[int]) -> None:
        """Offer ``records`` (at chain positions ``seqs``) to every client;
        framed once from their bytes, and only if anyone listens."""
        if not self._clients:
            return
        items = [
            (seq, record_event(record.body, record.type, record.id))
            for seq, record in zip(seqs, records, strict=True)
        ]
        for client in self._clients:
            client.offer(items)

    def close(self) -> None:
        """The daemon is stopping: every stream ends once its buffer is written."""
        self.closed = True
        for client in self._clients:
            client.close()
