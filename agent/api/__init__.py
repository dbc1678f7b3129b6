"""The local API's protocol layer, sans-I/O.

Nothing here touches a socket or trio: the server feeds the bytes it reads
into :class:`~agent.api.http.RequestParser`, asks :func:`~agent.api.routes.route`
what the request means, and writes the bytes the helpers return. Keeping the
framing pure makes every hostile-client case (oversized heads, header floods,
traversal paths, random bytes) testable without a daemon.

- :mod:`agent.api.http`: strict HTTP/1.1 request-head parser and response framing.
- :mod:`agent.api.sse`: Server-Sent Events framing and the bounded per-client buffer.
- :mod:`agent.api.routes`: which endpoint a request names, with validated parameters.
"""

from __future__ import annotations

from agent.api.http import (
    HttpError,
    Request,
    RequestParser,
    error_response,
    reason_phrase,
    response_bytes,
    sse_response_head,
)
from agent.api.routes import Route, route
from agent.api.sse import SseClientBuffer, sse_comment, sse_event

__all__ = [
    "HttpError",
    "Request",
    "RequestParser",
    "Route",
    "SseClientBuffer",
    "error_response",
    "reason_phrase",
    "response_bytes",
    "route",
    "sse_comment",
    "sse_event",
    "sse_response_head",
]
