"""``tracehound collect``: JetStream into PostgreSQL, the I/O around the pure parts.

One asyncio process (nats-py and psycopg's AsyncConnection are both
asyncio: no bridge). Two tasks and a bounded channel between them:

- the fetcher pulls batches of up to ``batch_size`` messages (waiting at
  most ``batch_time_ms`` to fill one) from the durable pull consumer and
  puts them in an ``asyncio.Queue(channel_batches)``; when the writer is
  slow the queue is full and the fetcher waits: nothing is fetched that
  cannot be held, nothing fetched is dropped;
- the writer takes a batch, runs the sanitiser, writes it in one
  transaction (:func:`agent.fleet.writer.write_batch`) and acks every
  message of it after the commit. A database error is retried with
  back-off, on a fresh connection, until it succeeds (fail safe): while it
  waits the messages are marked in progress so JetStream does not hand
  them to another collector, and nothing new is fetched past the queue.

At start (fail closed, one line each): the DSN must connect and the
migrations apply; NATS must answer; the stream and durable consumer are
made if missing. SIGTERM/SIGINT: the fetcher stops, the batch being written
is finished and acked, batches still queued are nak'ed (redelivered at
once to whoever fetches next), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import nats
import nats.errors
import nats.js.errors
import psycopg
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from agent.config.fleet import CollectConfig, nats_servers
from agent.config.schema import Config
from agent.errors import RunError, shown
from agent.evidence.seal import KeyFormatError, decode_key
from agent.fleet.chaincheck import ChainEvent, HostCheck
from agent.fleet.collect_metrics import CollectMetrics
from agent.fleet.migrate import SchemaTooNewError, migrate
from agent.fleet.partitions import maintain
from agent.fleet.sanitise import DeadLetter, Row, Sanitiser, sanitise_batch
from agent.fleet.wire import ChainHead, evidence_wildcard, heads_wildcard
from agent.fleet.writer import gaps_due, write_batch

__all__ = ["Collector", "run_collector"]

_CONNECT_TIMEOUT_S: Final = 5.0
_RETRY_MIN_S: Final = 0.2
_RETRY_MAX_S: Final = 5.0
_PARTITIONS_EVERY_S: Final = 3600.0
_FIRST_CONNECT_ATTEMPTS: Final = 2
_SAY_EVERY_S: Final = 30.0


def _say(line: str) -> None:
    print(f"tracehound collect: {line}", file=sys.stderr, flush=True)


async def connect_pg(dsn: str) -> psycopg.AsyncConnection[Any]:
    """A connection in autocommit mode (transactions are explicit); RunError, one line, if not."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT_S)
        )
    except psycopg.ProgrammingError as err:  # a DSN libpq cannot parse
        raise RunError(f"collect.dsn: not a valid PostgreSQL DSN: {_first_line(err)}") from None
    except psycopg.Error as err:
        raise RunError(f"collect.dsn: cannot connect to PostgreSQL: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return shown(text[0] if text else type(err).__name__)


def _nats_options(cfg: CollectConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": nats_servers(cfg.nats_url, "collect.nats_url"),
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "allow_reconnect": True,
        "max_reconnect_attempts": _FIRST_CONNECT_ATTEMPTS,
        "reconnect_time_wait": 1,
        "name": "tracehound-collect",
    }
    if cfg.credentials_file:
        options["user_credentials"] = cfg.credentials_file
    if cfg.token_file:
        try:
            with open(cfg.token_file, encoding="utf-8") as handle:
                options["token"] = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise RunError(f"collect.token_file: {shown(cfg.token_file)}: {err}") from None
    if cfg.tls_ca_file or cfg.tls_cert_file:
        import ssl

        context = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
        if cfg.tls_cert_file:
            context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        options["tls"] = context
    return options


async def connect_nats(cfg: CollectConfig) -> NatsClient:
    """Connected, or RunError naming ``collect.nats_url``. The first connect is
    not retried (a wrong URL is the operator's to fix); later cuts are."""
    if not cfg.nats_url:
        raise RunError("collect.nats_url: empty; expected nats://HOST:PORT")
    failures: list[str] = []

    async def error_cb(err: Exception) -> None:
        failures.append(_first_line(err))

    options = _nats_options(cfg)
    try:
        client = await nats.connect(**options, error_cb=error_cb)
    except (TimeoutError, nats.errors.NoServersError, OSError, nats.errors.Error) as err:
        why = failures[-1] if failures else _first_line(err)
        raise RunError(
            f"collect.nats_url: cannot connect to {shown(cfg.nats_url)}: {why}"
        ) from None
    return client


def _verify_keys(cfg: CollectConfig) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for host, text in cfg.verify_keys.items():
        try:
            keys[host] = decode_key(text)
        except KeyFormatError as err:
            raise RunError(f"collect.verify_keys.{shown(host)}: {err}") from None
    return keys


class _Batch(NamedTuple):
    """One fetched batch in the channel: its messages (to ack) and what the
    sanitiser made of them."""

    msgs: list[Msg]
    rows: list[Row]
    dead: list[DeadLetter]
    heads: list[ChainHead]


class Collector:
    """The running collector: fetcher, channel, writer (see the module doc)."""

    def __init__(self, config: Config, *, say: Callable[[str], None] = _say) -> None:
        self.config = config
        self.cfg = config.collect
        self.say = say
        self.metrics = CollectMetrics()
        self.sanitiser = Sanitiser(
            self.cfg.subject_prefix,
            redactor=config.evidence.redactor(),
            never_store=self.cfg.never_store,
            max_bytes=self.cfg.max_record_bytes,
        )
        self.checks: dict[str, HostCheck] = {}
        self.keys = _verify_keys(self.cfg)
        self.stop = asyncio.Event()
        self.channel: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=self.cfg.channel_batches)
        self.pg: psycopg.AsyncConnection[Any] | None = None
        self._next_partitions = time.monotonic() + _PARTITIONS_EVERY_S
        self._next_sweep = 0.0
        self.nc: NatsClient | None = None

    async def start(self) -> None:
        """Database, schema, partitions, NATS, stream, consumer: RunError if any fails."""
        cfg = self.cfg
        if not cfg.dsn:
            raise RunError("collect.dsn: empty; expected a PostgreSQL DSN")
        self.pg = await connect_pg(cfg.dsn)
        self.nc = await connect_nats(cfg)  # both reachable before anything is changed
        try:
            applied = await migrate(self.pg)
        except SchemaTooNewError as err:
            raise RunError(f"collect.dsn: {err}") from None
        except psycopg.Error as err:
            raise RunError(
                f"collect.dsn: migrating the schema failed: {_first_line(err)}"
            ) from None
        if applied:
            self.say(f"schema migrated to version {applied[-1]}")
        await self._partitions()
        try:
            await self._ensure_stream()
        except (TimeoutError, nats.errors.Error) as err:
            raise RunError(
                f"collect.stream: cannot make stream {cfg.stream} or consumer {cfg.durable}: "
                f"{_first_line(err)}"
            ) from None

    async def _partitions(self) -> None:
        assert self.pg is not None
        try:
            _, dropped = await maintain(
                self.pg, datetime.datetime.now(datetime.UTC), self.cfg.retain_days
            )
        except psycopg.Error as err:
            self.say(f"partition upkeep failed (retried in an hour): {_first_line(err)}")
            return
        for name in dropped:
            self.say(f"retention: dropped partition {name}")

    async def _ensure_stream(self) -> None:
        assert self.nc is not None
        cfg = self.cfg
        js = self.nc.jetstream()
        subjects = [evidence_wildcard(cfg.subject_prefix), heads_wildcard(cfg.subject_prefix)]
        try:
            await js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    num_replicas=cfg.stream_replicas,
                    duplicate_window=cfg.duplicate_window_s,
                    max_age=cfg.stream_max_age_hours * 3600 if cfg.stream_max_age_hours else None,
                    max_bytes=int(cfg.stream_max_mb * 1024 * 1024) if cfg.stream_max_mb else None,
                )
            )
        try:
            await js.consumer_info(cfg.stream, cfg.durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(
                cfg.stream,
                ConsumerConfig(
                    durable_name=cfg.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=cfg.ack_wait_s,
                    max_ack_pending=cfg.batch_size * (cfg.channel_batches + 2),
                ),
            )

    async def run(self) -> None:
        """Fetch and write until :attr:`stop` is set; then drain as the module doc says."""
        assert self.nc is not None
        js = self.nc.jetstream()
        sub = await js.pull_subscribe_bind(durable=self.cfg.durable, stream=self.cfg.stream)
        fetcher = asyncio.create_task(self._fetch(sub))
        try:
            await self._write_loop()
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetcher
            while not self.channel.empty():
                for msg in self.channel.get_nowait().msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
            self.metrics.channel_depth.set(0)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await self.pg.close()

    async def _housekeeping(self) -> None:
        """Between batches (one connection, one task): partitions every hour,
        and the gap sweep: hosts whose watched gap came due with no batch of theirs."""
        now = time.monotonic()
        if now >= self._next_partitions:
            self._next_partitions = now + _PARTITIONS_EVERY_S
            await self._partitions()
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.cfg.gap_grace_s / 2, 0.5)
        try:
            if self.pg is None or self.pg.closed:
                return
            due = await gaps_due(self.pg, self.cfg.gap_grace_s)
            if not due:
                return
            result = await write_batch(
                self.pg, [], [], [], self.checks, self.keys,
                gap_grace_s=self.cfg.gap_grace_s, sweep=due,
            )  # fmt: skip
        except psycopg.Error as err:
            self.say(f"gap sweep failed (retried): {_first_line(err)}")
            return
        self.metrics.batch(result, 0.0, self.sanitiser.stats)
        for event in result.events:
            self._report(event)

    async def _fetch(self, sub: Any) -> None:
        timeout = self.cfg.batch_time_ms / 1000
        failing_since: float | None = None
        said = 0.0
        while not self.stop.is_set():
            try:
                msgs = await sub.fetch(self.cfg.batch_size, timeout=max(timeout, 0.01))
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as err:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - said >= _SAY_EVERY_S:  # one line, not one per retry
                    said = now
                    self.say(f"fetch failed, retrying: {_first_line(err)}")
                self.metrics.fetch_errors.inc()
                await asyncio.sleep(_RETRY_MIN_S)
                continue
            if failing_since is not None:
                self.say(f"fetching again after {time.monotonic() - failing_since:.1f} s")
                failing_since, said = None, 0.0
            if msgs:
                # Sanitised here, not by the writer: this CPU work then runs
                # while the writer waits on PostgreSQL with the batch before.
                rows, dead, heads = sanitise_batch(
                    self.sanitiser, self.cfg.subject_prefix, [(m.subject, m.data) for m in msgs]
                )
                await self.channel.put(_Batch(msgs, rows, dead, heads))
                self.metrics.channel_depth.set(self.channel.qsize())

    async def _write_loop(self) -> None:
        stop_wait = asyncio.create_task(self.stop.wait())
        try:
            while not self.stop.is_set():
                await self._housekeeping()
                get = asyncio.create_task(self.channel.get())
                done, _ = await asyncio.wait(
                    {get, stop_wait}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if get.done() and not get.cancelled():  # it came as it was cancelled
                        await self._write(get.result())
                    continue
                msgs = get.result()
                self.metrics.channel_depth.set(self.channel.qsize())
                await self._write(msgs)
        finally:
            stop_wait.cancel()

    async def _write(self, batch: _Batch) -> None:
        """Write one batch, retrying the database until it commits; then ack."""
        msgs, rows, dead, heads = batch
        delay = _RETRY_MIN_S
        started = time.monotonic()
        while True:
            try:
                if self.pg is None or self.pg.closed:
                    self.pg = await connect_pg(self.cfg.dsn)
                result = await write_batch(
                    self.pg, rows, dead, heads, self.checks, self.keys,
                    gap_grace_s=self.cfg.gap_grace_s,
                )  # fmt: skip
                break
            except (psycopg.Error, RunError, OSError) as err:
                self.metrics.write_errors.inc()
                self.say(f"database write failed, retrying in {delay:.1f} s: {_first_line(err)}")
                if self.pg is not None and self.pg.broken:
                    with contextlib.suppress(Exception):
                        await self.pg.close()
                    self.pg = None
                if self.stop.is_set():  # told to stop while the database is away
                    for msg in msgs:  # redelivered at once to whoever fetches next
                        with contextlib.suppress(Exception):
                            await msg.nak()
                    return
                for msg in msgs:  # keep them ours while the database is away
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay * (0.5 + random.random()))
                delay = min(delay * 2, _RETRY_MAX_S)
        unacked = 0
        for msg in msgs:
            try:
                await msg.ack()
            except (nats.errors.Error, OSError):
                unacked += 1  # NATS away: redelivered later, and dropped by the keys
        if unacked:
            self.say(f"{unacked} acks not sent (NATS away): those records come again")
        self.metrics.batch(result, time.monotonic() - started, self.sanitiser.stats)
        for event in result.events:
            self._report(event)

    def _report(self, event: ChainEvent) -> None:
        seq = f" seq {event.seq}" if event.seq is not None else ""
        self.say(f"chain event: host {shown(event.host)}{seq}: {event.kind}: {shown(event.detail)}")


async def run_collector(config: Config) -> int:
    """Start (RunError on a bad DSN/URL), serve until SIGTERM/SIGINT, exit 0."""
    collector = Collector(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, collector.stop.set)
    try:
        await collector.start()
        if config.collect.metrics_listen:
            collector.metrics.serve(config.collect.metrics_listen)
        collector.say("collecting")
        await collector.run()
    finally:
        await collector.close()
    return 0
