"""The publisher's status line: how the publisher process reports to the daemon.

The publisher (an asyncio process, :mod:`.publisher`) has no HTTP server;
once a second it writes one :class:`PublisherStatus` as a JSON line on its
stdout, which the daemon's supervising task (:mod:`.publisher_process`)
reads and the daemon's ``/metrics`` shows. Counters in a line count from
the publisher process's start; the daemon adds up those of the processes
before it (:class:`FleetTotals`), so its counters only grow.

Defined once here for both ends; it imports nothing of NATS, so the trio
daemon imports it without nats-py.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["MAX_LINE", "FleetTotals", "PublisherStatus", "decode_status", "encode_status"]

MAX_LINE: Final = 4096
"""The longest status line the daemon reads; a longer one is not a status."""


class PublisherStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One status line. Counters (since this process started):

    ``published``: records JetStream acknowledged (``duplicates`` of them it
    already had); ``errors``: publishes or acks that failed (each ends the
    connection, which is made again after a backoff); ``reconnects``:
    connections made after the first; ``lost``: records pruned from the log
    before they were published; ``resets``: times the cursor was not in the
    log (cut or replaced) and the publisher started from its first record;
    ``bad_lines``: complete log lines that are no chain record;
    ``oversize``: records larger than the server's max_payload, not published.

    Gauges: ``connected``; ``cursor``: last acknowledged seq (None before
    any); ``head``: the log's newest seq (None: empty); ``lag_records``:
    ``head - cursor``; ``lag_seconds``: now minus the time of the oldest
    record not yet acknowledged (0 when none is).
    """

    published: int = 0
    duplicates: int = 0
    errors: int = 0
    reconnects: int = 0
    lost: int = 0
    resets: int = 0
    bad_lines: int = 0
    oversize: int = 0
    connected: bool = False
    cursor: int | None = None
    head: int | None = None
    lag_records: int = 0
    lag_seconds: float = 0.0


_COUNTERS: Final = (
    "published",
    "duplicates",
    "errors",
    "reconnects",
    "lost",
    "resets",
    "bad_lines",
    "oversize",
)
_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(PublisherStatus)


def encode_status(status: PublisherStatus) -> bytes:
    return _ENCODER.encode(status) + b"\n"


def decode_status(line: bytes) -> PublisherStatus | None:
    """The status in ``line``, or None if it is not one (too long, not JSON)."""
    if len(line) > MAX_LINE:
        return None
    try:
        return _DECODER.decode(line)
    except msgspec.DecodeError:
        return None


class FleetTotals:
    """The daemon's view: the running publisher's last status, counters summed
    over every publisher process the daemon started (so they only grow)."""

    def __init__(self) -> None:
        self._before: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.current = PublisherStatus()
        #: Publisher processes started, and status lines that were not one.
        self.starts = 0
        self.bad_status = 0
        self.running = False

    def update(self, status: PublisherStatus) -> None:
        self.current = status

    def process_ended(self) -> None:
        """The publisher exited: keep its counts, forget its gauges."""
        for name in _COUNTERS:
            self._before[name] += getattr(self.current, name)
        self.current = PublisherStatus(
            cursor=self.current.cursor,
            head=self.current.head,
            lag_records=self.current.lag_records,
            lag_seconds=self.current.lag_seconds,
        )
        self.running = False

    def snapshot(self) -> PublisherStatus:
        """Counters since the daemon started, gauges as last reported."""
        now = self.current
        summed = {name: self._before[name] + getattr(now, name) for name in _COUNTERS}
        return msgspec.structs.replace(now, **summed)
