"""Server-Sent Events framing and the bounded per-client buffer.

Framing follows the WHATWG HTML "Server-sent events" section: an event is a
run of ``field: value`` lines ended by a blank line, UTF-8 throughout. A
parser splits lines on CRLF, CR *or* LF, which is why ``event`` and ``id``
may not contain either (they would end the field early and inject another
one) and why multi-line ``data`` is sent as one ``data:`` line per line: the
client joins them back with LF. A CRLF or lone CR inside ``data`` therefore
arrives as LF; that normalisation is inherent to the format.

The buffer is what keeps a slow ``/v1/stream`` client from holding capture
back: the publisher offers each encoded event to every client's buffer and
never waits; a full buffer refuses (and counts) the event, and the client's
writer later tells the client how many it missed.
"""

from __future__ import annotations

import re
from collections import deque

import msgspec

__all__ = ["SseClientBuffer", "sse_comment", "sse_event"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain CR or LF: {value!r}")


def sse_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """Encode one event.

    ``id`` becomes the client's Last-Event-ID, which it sends back when it
    reconnects, so it must survive parsing exactly: CR, LF and NUL are
    refused (a parser ignores an id containing NUL). ``event`` must not
    contain CR or LF. ``retry_ms`` (the reconnection delay) must be a
    non-negative int. Raises ValueError for any of these, and
    UnicodeEncodeError (a ValueError) for text that is not valid Unicode.
    """
    lines: list[str] = []
    if id is not None:
        _check_field("id", id)
        if "\x00" in id:
            raise ValueError(f"SSE id must not contain NUL: {id!r}")
        lines.append(f"id: {id}")
    if event is not None:
        _check_field("event", event)
        lines.append(f"event: {event}")
    if retry_ms is not None:
        if isinstance(retry_ms, bool) or not isinstance(retry_ms, int) or retry_ms < 0:
            raise ValueError(f"SSE retry must be a non-negative int, got {retry_ms!r}")
        lines.append(f"retry: {retry_ms}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def sse_comment(text: str = "") -> bytes:
    """A comment: ignored by clients, used as a keep-alive.

    Sending one every so often makes a dead peer show up as a write error
    and keeps proxies from timing the stream out. Multi-line text becomes
    one comment line per line. It dispatches nothing, so it is safe between
    any two events.
    """
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8")


class SseClientBuffer:
    """A bounded queue of encoded events for one SSE client.

    ``offer`` never blocks: when the buffer holds ``capacity`` events it
    refuses the new one and counts it. Dropping the *newest* keeps what is
    queued contiguous, so the client's Last-Event-ID still marks the last
    event it saw before the gap; reconnecting with it recovers the dropped
    records from the log.

    The writer should call :meth:`take_all` and then :meth:`overflow_notice`
    with no await in between (or just :meth:`drain`), and send the notice
    after the items: everything taken was queued before the gap, everything
    offered afterwards comes after it, so the notice lands where the events
    went missing.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SSE client buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[bytes] = deque()
        self._dropped = 0
        self._unreported = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def dropped(self) -> int:
        """Events refused since the buffer was made (for the drop counter metric)."""
        return self._dropped

    def offer(self, item: bytes) -> bool:
        """Queue ``item`` unless the buffer is full; False (and counted) if it was."""
        if len(self._items) >= self.capacity:
            self._dropped += 1
            self._unreported += 1
            return False
        self._items.append(item)
        return True

    def take_all(self) -> list[bytes]:
        """Everything queued, oldest first; the buffer is empty afterwards."""
        items = list(self._items)
        self._items.clear()
        return items

    def overflow_notice(self) -> bytes | None:
        """An ``overflow`` event for the drops not yet reported, or None if none.

        Its data is JSON: ``{"dropped": n, "total_dropped": t}``. It carries
        no id, so it leaves the client's Last-Event-ID alone. Each drop is
        reported once.
        """
        if self._unreported == 0:
            return None
        payload = msgspec.json.encode(
            {"dropped": self._unreported, "total_dropped": self._dropped}
        ).decode("ascii")
        self._unreported = 0
        return sse_event(payload, event="overflow")

    def drain(self) -> bytes:
        """The bytes to write now: every queued event, then any overflow notice."""
        items = self.take_all()
        notice = self.overflow_notice()
        if notice is not None:
            items.append(notice)
        return b"".join(items)
