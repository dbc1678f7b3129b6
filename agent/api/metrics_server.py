"""Serve ``/metrics`` over TCP (default 127.0.0.1:9464) for Prometheus.

I/O at the edge only: framing comes from :mod:`agent.api.http`, the page
from :func:`agent.metrics.render`. Bounded like every other door into the
daemon: at most ``max_clients`` at once (others are closed at once), one
request per connection, and an idle timeout for a client that says nothing.
"""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry

from agent.api.http import HttpError, RequestParser, error_response, response_bytes
from agent.metrics import CONTENT_TYPE, render


class MetricsServerStats:
    """Counters for the server itself: served, refused (busy), rejected (4xx)."""

    def __init__(self) -> None:
        self.served = 0
        self.refused = 0
        self.rejected = 0


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    max_clients: int = 16,
    idle_timeout: float = 10.0,
    stats: MetricsServerStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen and serve until cancelled. Raises OSError if it cannot bind
    (before ``task_status.started``), so the caller can go on without it."""
    counters = stats or MetricsServerStats()
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(max_clients)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                counters.refused += 1
                return
            try:
                await _answer(stream, registry, idle_timeout, counters)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away: nothing to say to it
            finally:
                limiter.release()

    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def _answer(
    stream: trio.SocketStream,
    registry: CollectorRegistry,
    idle_timeout: float,
    counters: MetricsServerStats,
) -> None:
    parser = RequestParser(max_request_bytes=8192, max_headers=32)
    with trio.move_on_after(idle_timeout):
        while True:
            data = await stream.receive_some(4096)
            if not data:
                return
            try:
                request = parser.feed(data)
            except HttpError as err:
                counters.rejected += 1
                await stream.send_all(error_response(err))
                return
            if request is None:
                continue
            head_only = request.method == "HEAD"
            if request.path != "/metrics":
                counters.rejected += 1
                await stream.send_all(error_response(HttpError(404, "only /metrics is here")))
            elif request.method not in ("GET", "HEAD"):
                counters.rejected += 1
                await stream.send_all(
                    error_response(HttpError(405, "GET or HEAD", headers=(("Allow", "GET, HEAD"),)))
                )
            else:
                counters.served += 1
                body = render(registry)
                await stream.send_all(
                    response_bytes(200, body, CONTENT_TYPE, keep_alive=False, head_only=head_only)
                )
            return
