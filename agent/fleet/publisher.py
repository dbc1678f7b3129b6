"""The publisher: the committed evidence log, record by record, into NATS JetStream.

``python -m agent.fleet.publisher --config FILE --state-dir DIR [--status]``

(``FILE``'s ``[fleet]`` section; ``DIR`` the evidence state directory;
``--status``: the status lines below on stdout.)

The daemon starts it when ``[fleet] enabled = true`` and restarts it if it
dies (:mod:`.publisher_process`); it also runs alone, over a log written
earlier, for tests and operators. **The bridge**: the daemon is trio and
embeds no NATS code; this is a separate process running asyncio and
nats-py, which reads the log from disk and talks to the daemon only through
its stdout (one :class:`~agent.fleet.status.PublisherStatus` JSON line a
second, which the daemon shows on ``/metrics``) and its stderr (one line
per notice, which the daemon passes on). Capture never waits for it.

What it does:

- **The log is the outbox** (:mod:`.outbox`): committed lines only, read
  from the segments; nothing is published that is not on disk, and there
  is no queue but the log.
- Each line is published as its exact bytes to ``evidence_subject(prefix,
  host, type)`` with ``Nats-Msg-Id = message_id(host, record)``
  (:mod:`.wire`); host is ``[fleet] host`` or else the records' ``thhost``.
  Up to ``max_in_flight`` publishes are outstanding (nats-py's
  ``publish_async``, issued in seq order on one connection); their PubAcks
  are taken in order, so the **cursor** (:mod:`.cursor`) only ever moves
  over a contiguous acknowledged prefix. It is saved at most every
  :data:`SAVE_S` and when idle, so a restart sends at most that much again,
  which JetStream's duplicate window (or the collector's keys) drops.
- Any error (a failed publish, an error ack, no ack within
  :data:`ACK_TIMEOUT_S`, the connection lost) ends the connection: the
  unacknowledged records are read again from the log and sent again on a
  new connection after a backoff (:mod:`.backoff`, 0.1 s doubling to 10 s,
  full jitter). nats-py's own reconnect is off for that reason: a
  reconnecting client would flush its buffered publishes after ones the
  server lost, out of order; a fresh connection re-sends from the cursor.
  A NATS that is away is said once per outage on stderr, never fatal.
- A line larger than the server's ``max_payload`` (1 MiB by default) cannot
  be published: it is passed over in order, said, and counted
  (``oversize``); the collector then sees a gap at its seq, the truth.
- Every ``heads_interval_s`` a :class:`~agent.fleet.wire.ChainHead` (the
  newest committed record and seal, :mod:`.heads`) goes to
  ``heads_subject(prefix, host)``, a plain (core NATS) publish: a lost head
  is replaced by the next; the stream keeps them when it captures
  ``<prefix>.heads.*``.

Started by the daemon (``--parent PID``) it runs at niceness :data:`NICE`,
so capture and the commit path come first (the log keeps what it is behind
by), and stops when that daemon is gone.

Exit status: 0 after SIGTERM (the cursor saved), 2 for a configuration
that cannot work (one line naming the key or file: a missing token file, a
cursor that is a symlink), 1 if the cursor cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import nats
from nats.aio.client import Client
from nats.js.api import PubAck

from agent.config.errors import ConfigError
from agent.config.fleet import FleetConfig
from agent.config.load import load_config
from agent.evidence.layout import segment_files
from agent.fleet import cursor as cursor_file
from agent.fleet.backoff import Backoff
from agent.fleet.cursor import Cursor, CursorError
from agent.fleet.heads import HeadTracker
from agent.fleet.nats_options import NatsSetupError, connect_options
from agent.fleet.outbox import Committed, Outbox, record_time_ns
from agent.fleet.segment_read import read_block
from agent.fleet.status import PublisherStatus, encode_status
from agent.fleet.wire import (
    MSG_ID_HEADER,
    ChainHead,
    evidence_subject,
    heads_subject,
    message_id,
)
from agent.safetext import escape_text

__all__ = ["ACK_TIMEOUT_S", "NICE", "POLL_S", "SAVE_S", "STATUS_INTERVAL_S", "Publisher", "main"]

POLL_S: Final = 0.05
"""How often the log is looked at for new records when all are published."""
SAVE_S: Final = 0.2
"""Longest time an acknowledged cursor waits to be saved while busy."""
ACK_TIMEOUT_S: Final = 10.0
"""A PubAck later than this ends the connection (the record is sent again)."""
STATUS_INTERVAL_S: Final = 1.0
CONNECT_TIMEOUT_S: Final = 2.0
STOP_GRACE_S: Final = 2.0
"""At SIGTERM, how long outstanding acks are waited for before the cursor is saved."""
NICE: Final = 10
"""The publisher's niceness under the daemon (the index follower's is 19:
the fleet's lag is watched, the index's is not)."""
_READ_MAX: Final = 512


class _SessionEnded(Exception):
    """The connection cannot go on (the message says why, one line)."""


def _say(line: str) -> None:
    print(f"tracehound: fleet: {line}", file=sys.stderr, flush=True)


class Publisher:
    """Publish one state directory's log with ``fleet``'s settings until stopped."""

    def __init__(
        self,
        fleet: FleetConfig,
        state_dir: Path,
        *,
        status_out: IO[bytes] | None = None,
        parent: int | None = None,
    ) -> None:
        """Raises :class:`NatsSetupError`/:class:`ConfigError` (bad settings)
        and :class:`CursorError` (a cursor not to be trusted) at once."""
        self.fleet = fleet
        self.state_dir = state_dir
        self._options = connect_options(fleet, "fleet")
        self._servers: list[str] = list(self._options.pop("servers"))
        self._status_out = status_out
        self._parent = parent
        self.cursor: Cursor | None = cursor_file.load(state_dir)
        self._saved = self.cursor
        self.outbox = Outbox(state_dir, self.cursor)
        self.heads = HeadTracker(state_dir)
        self.host: str | None = fleet.host or None
        self.stop = asyncio.Event()
        self._window: collections.deque[Committed] = collections.deque()
        self.published = 0
        self.duplicates = 0
        self.errors = 0
        self.reconnects = 0
        self.oversize = 0
        self.connected = False
        self._connections = 0
        self._first_seen: tuple[int, int] | None = None
        self._away = False  # an outage was said and has not ended

    # --- the whole run ---------------------------------------------------------------

    async def run(self) -> None:
        """Until :attr:`stop` is set (or the parent is gone)."""
        status = asyncio.create_task(self._report())
        try:
            while self.host is None and not self.stop.is_set():
                self.host = _find_host(self.state_dir)
                if self.host is None:
                    await self._sleep(0.5)
            if self.host is not None:
                await self._deliver()
        finally:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
            self._save(force=True)
            self._write_status()

    async def _deliver(self) -> None:
        """Connect, publish, and after any error connect again after a backoff.

        An outage is said once, when it starts (NATS unreachable, or a
        publish or ack that failed), and its end once, at the first
        acknowledgement after it: a NATS that is away or refuses (no stream
        for the subjects) is one line, not one per try.
        """
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                client, lost = await self._connect()
            except Exception as err:  # every kind of "not reachable": retried
                self._outage(f"cannot reach NATS at {self.fleet.nats_url} ({_what(err)})")
                await self._sleep(backoff.next())
                continue
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
            acked_before = self.published
            self.connected = True
            try:
                await self._session(client, lost)
            except _SessionEnded as err:
                self.errors += 1
                self._outage(f"publishing stopped: {err}")
            finally:
                self.connected = False
                self._rewind()
                self._save(force=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 2.0)
            if self.published > acked_before:
                backoff.reset()
            if not self.stop.is_set():
                await self._sleep(backoff.next())

    def _outage(self, what: str) -> None:
        if not self._away:
            _say(f"{what}; trying again with backoff (the log keeps the backlog)")
            self._away = True

    async def _connect(self) -> tuple[Client, asyncio.Event]:
        lost = asyncio.Event()
        server = self._servers[self._connections % len(self._servers)]
        self._servers = self._servers[1:] + self._servers[:1]

        async def gone() -> None:
            lost.set()

        async def error(err: Exception) -> None:
            pass  # each failure ends the connection and is said by _deliver

        client = await nats.connect(
            servers=[server],
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=CONNECT_TIMEOUT_S,
            disconnected_cb=gone,
            closed_cb=gone,
            error_cb=error,
            name=f"tracehound-publisher:{self.host}",
            **self._options,
        )
        return client, lost

    # --- one connection ------------------------------------------------------------

    async def _session(self, client: Client, lost: asyncio.Event) -> None:
        """Publish until stopped; raises :class:`_SessionEnded` at any error."""
        assert self.host is not None
        host = self.host
        prefix = self.fleet.subject_prefix
        js = client.jetstream(publish_async_max_pending=self.fleet.max_in_flight)
        # a PubAck each, or None for an oversize record passed over
        acks: collections.deque[asyncio.Future[Any]] = collections.deque()
        loop = asyncio.get_running_loop()
        lost_wait = asyncio.create_task(lost.wait())
        stop_wait = asyncio.create_task(self.stop.wait())
        next_head = time.monotonic()
        try:
            while not self.stop.is_set():
                if lost.is_set() or client.is_closed:
                    raise _SessionEnded("the connection to NATS was lost")
                room = self.fleet.max_in_flight - len(acks)
                batch = self._read(min(room, _READ_MAX))
                for committed in batch:
                    self._window.append(committed)
                    msg_id = message_id(host, committed.record)
                    headers = {MSG_ID_HEADER: msg_id}
                    subject = evidence_subject(prefix, host, committed.record.type)
                    if len(committed.raw) + _header_bytes(msg_id) > client.max_payload:
                        self._oversize(committed, client.max_payload)
                        skipped: asyncio.Future[Any] = loop.create_future()
                        skipped.set_result(None)  # passed over in order, like an ack
                        acks.append(skipped)
                        continue
                    try:
                        acks.append(await js.publish_async(subject, committed.raw, headers=headers))
                    except Exception as err:
                        raise _SessionEnded(f"a publish failed ({_what(err)})") from None
                if acks and (not batch or len(acks) >= self.fleet.max_in_flight):
                    await self._wait(acks[0], lost_wait, stop_wait, ACK_TIMEOUT_S)
                    if not acks[0].done() and not self.stop.is_set() and not lost.is_set():
                        raise _SessionEnded(f"no acknowledgement within {ACK_TIMEOUT_S:g} s")
                elif not batch:
                    await self._wait(None, lost_wait, stop_wait, POLL_S)
                else:
                    await asyncio.sleep(0)  # let the acks in
                self._settle(acks)
                self._save(force=not acks)
                if time.monotonic() >= next_head:
                    next_head = time.monotonic() + self.fleet.heads_interval_s
                    await self._publish_head(client)
            # stopping: give what is in flight a moment, so the cursor is current
            deadline = time.monotonic() + STOP_GRACE_S
            while acks and not lost.is_set() and time.monotonic() < deadline:
                await self._wait(acks[0], lost_wait, None, deadline - time.monotonic())
                self._settle(acks)
        finally:
            lost_wait.cancel()
            stop_wait.cancel()

    async def _wait(
        self,
        future: asyncio.Future[Any] | None,
        lost: asyncio.Task[Any],
        stop: asyncio.Task[Any] | None,
        timeout: float,
    ) -> None:
        waiting: set[asyncio.Future[Any]] = {lost}
        if stop is not None:
            waiting.add(stop)
        if future is not None:
            waiting.add(future)
        await asyncio.wait(waiting, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)

    def _oversize(self, committed: Committed, limit: int) -> None:
        self.oversize += 1
        _say(
            f"record {committed.record.seq} ({len(committed.raw)} bytes) is larger than the"
            f" NATS server's max_payload ({limit}): not published, counted as oversize"
        )

    def _settle(self, acks: collections.deque[asyncio.Future[Any]]) -> None:
        """Move the cursor over the acknowledged prefix; an error ack ends the session."""
        while acks and acks[0].done():
            future = acks.popleft()
            committed = self._window.popleft()
            try:
                ack: PubAck | None = future.result()
            except Exception as err:
                self._window.appendleft(committed)
                raise _SessionEnded(
                    f"record {committed.record.seq} was refused ({_what(err)})"
                ) from None
            if ack is not None:  # None: an oversize record, passed over
                self.published += 1
                self.duplicates += 1 if ack.duplicate else 0
            self.cursor = Cursor(seq=committed.record.seq, hash=committed.record.hash)
            if self._away:
                self._away = False
                _say(
                    f"NATS at {self.fleet.nats_url} acknowledges again;"
                    f" publishing on from seq {committed.record.seq}"
                )

    async def _publish_head(self, client: Client) -> None:
        assert self.host is not None
        head = self._poll_head()
        if head is None:
            return
        message = ChainHead(
            host=self.host, seq=head[0], hash=head[1], seal=self.heads.seal, time_ns=time.time_ns()
        )
        try:
            await client.publish(
                heads_subject(self.fleet.subject_prefix, self.host), message.encode()
            )
        except Exception as err:
            raise _SessionEnded(f"the head could not be sent ({_what(err)})") from None

    # --- the log and the cursor -------------------------------------------------

    def _read(self, limit: int) -> list[Committed]:
        try:
            batch = self.outbox.read(limit)
        except OSError as err:
            _say(f"cannot read the log now ({err}); trying again")
            batch = []
        for notice in self.outbox.notices:
            _say(notice)
        self.outbox.notices.clear()
        return batch

    def _rewind(self) -> None:
        """Records read but not acknowledged are read again (and sent again)."""
        if self._window:
            first = self._window[0]
            self.outbox.rewind(first.position, first.record.seq)
            self._window.clear()

    def _save(self, *, force: bool) -> None:
        if self.cursor is None or self.cursor == self._saved:
            return
        now = time.monotonic()
        if not force and now - getattr(self, "_saved_at", 0.0) < SAVE_S:
            return
        cursor_file.save(self.state_dir, self.cursor)  # CursorError ends the process
        self._saved = self.cursor
        self._saved_at = now

    def _poll_head(self) -> tuple[int, str] | None:
        try:
            return self.heads.poll()
        except OSError:
            return self.heads.head

    # --- status --------------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            self._write_status()
            if self._parent is not None and os.getppid() != self._parent:
                _say("the daemon that started this publisher is gone; stopping")
                self.stop.set()
            await asyncio.sleep(STATUS_INTERVAL_S)

    def status(self) -> PublisherStatus:
        head = self._poll_head()
        cursor = self.cursor.seq if self.cursor is not None else None
        lag_records = 0
        lag_seconds = 0.0
        if head is not None:
            lag_records = max(0, head[0] - (cursor if cursor is not None else -1))
        oldest: Committed | None = self._window[0] if self._window else None
        if oldest is None and lag_records:
            oldest = self._peek()
        if oldest is not None:
            # a record without a time of its own is as old as its first reading
            # (re-reads after a rewind or a peek must not make it young again)
            if self._first_seen is None or self._first_seen[0] != oldest.record.seq:
                self._first_seen = (oldest.record.seq, oldest.seen_ns)
            oldest = oldest._replace(seen_ns=self._first_seen[1])
            lag_seconds = max(0.0, (time.time_ns() - record_time_ns(oldest)) / 1e9)
        return PublisherStatus(
            published=self.published,
            duplicates=self.duplicates,
            errors=self.errors,
            reconnects=self.reconnects,
            lost=self.outbox.lost,
            resets=self.outbox.resets,
            bad_lines=self.outbox.bad_lines,
            oversize=self.oversize,
            connected=self.connected,
            cursor=cursor,
            head=None if head is None else head[0],
            lag_records=lag_records,
            lag_seconds=round(lag_seconds, 3),
        )

    def _peek(self) -> Committed | None:
        """The next record to publish, left to be read again."""
        batch = self._read(1)
        if not batch:
            return None
        self.outbox.rewind(batch[0].position, batch[0].record.seq)
        return batch[0]

    def _write_status(self) -> None:
        if self._status_out is None:
            return
        try:
            self._status_out.write(encode_status(self.status()))
            self._status_out.flush()
        except (BrokenPipeError, ValueError):
            self._status_out = None
            self.stop.set()  # the daemon that read it is gone

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


class _HostLine(msgspec.Struct):
    body: Any


def _find_host(state_dir: Path) -> str | None:
    """The ``thhost`` of the log's first CloudEvent that has one (None: none yet)."""
    for _, path in segment_files(state_dir / "segments"):
        offset = 0
        while (block := read_block(path, offset)) is not None and block.data:
            data = block.data
            hit = data.find(b'"thhost":')
            while hit >= 0:
                start = data.rfind(b"\n", 0, hit) + 1
                end = data.find(b"\n", hit)
                with contextlib.suppress(msgspec.DecodeError):
                    body = msgspec.json.decode(data[start:end], type=_HostLine).body
                    host = body.get("thhost") if isinstance(body, dict) else None
                    if isinstance(host, str) and host:
                        return host
                hit = data.find(b'"thhost":', end)
            offset += len(data)
    return None


def _header_bytes(msg_id: str) -> int:
    """The size of the headers block nats-py sends with a record (the
    server's max_payload counts headers and payload together)."""
    return len(f"NATS/1.0\r\n{MSG_ID_HEADER}: {msg_id}\r\n\r\n".encode())


def _what(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return escape_text(" ".join(text.split()))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agent.fleet.publisher",
        description="Publish a tracehound evidence log to NATS JetStream ([fleet] settings).",
    )
    parser.add_argument("--config", required=True, help="the tracehound.toml with [fleet]")
    parser.add_argument("--state-dir", required=True, help="the evidence state directory")
    parser.add_argument(
        "--status", action="store_true", help="one JSON status line a second on stdout"
    )
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        fleet = load_config(Path(args.config)).fleet
        publisher = Publisher(
            fleet,
            Path(args.state_dir),
            status_out=sys.stdout.buffer if args.status else None,
            parent=args.parent,
        )
    except (ConfigError, NatsSetupError, CursorError) as err:
        print(f"tracehound: fleet publisher: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent else signal.default_int_handler)
    if args.parent:
        with contextlib.suppress(OSError):
            os.nice(NICE)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, publisher.stop.set)
        if not args.parent:
            loop.add_signal_handler(signal.SIGINT, publisher.stop.set)
        await publisher.run()

    try:
        asyncio.run(run())
    except CursorError as err:
        print(f"tracehound: fleet publisher: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
