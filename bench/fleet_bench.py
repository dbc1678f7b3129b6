"""Fleet bench: the real collector and publisher, measured side by side (issue 12's targets).

On a nats-server and a PostgreSQL of its own (``tests/fleet/servers.py``:
loopback ports, a directory under /var/tmp, removed at the end), in one run:

* **write rate into PostgreSQL**, the collector's own code on the same
  records and nothing else: :func:`agent.fleet.sanitise.sanitise_batch`
  (:meth:`~agent.fleet.sanitise.Sanitiser.record` for each message, then the
  batch sorted by host and seq, as the collector does) and
  :func:`agent.fleet.writer.write_batch` (one transaction a batch), on a
  collector built from the same ``[collect]`` TOML the end-to-end run uses:
  - *sanitise alone*: records/s of the sanitiser over every batch;
  - *write alone*: ``write_batch`` on pre-sanitised rows, batches of ``--batch``;
  - *batched*: sanitise + write, batches of ``--batch`` (default the
    collector's ``batch_size``): the figure the target is about;
  - *batched, all duplicates*: the same batches again (a republish after a
    fault): every row is a conflict, nothing new stored;
  - *unbatched*: sanitise + write of one record per batch (a transaction
    each), on the first ``--unbatched`` records.
  Each pass checks what it computed: rows written, duplicates and the
  tables' counts equal the records sent (none lost, none twice).
* **end-to-end lag** at 5,000 records/s and at ``--rate`` (default 10,000)
  for ``--seconds`` each: the real publisher (``python -m
  agent.fleet.publisher``) and collector (``python -m agent collect``) as
  processes (:func:`fleet_commands`), a writer appending to an
  :class:`EvidenceStore` at the rate (a commit every 10 ms), the rows'
  arrival seen by polling ``chain``; lag from commit to the row, p50/p99/max.
  Each rate runs on a fresh nats-server and database. The collector's own
  ``/metrics`` (batches, batch seconds) are read before it stops, the
  publisher's ``--status`` lines say how far behind its log it fell (which
  side a lag is on), and NATS's
  share is measured afterwards: a second durable on the same stream fetches
  and acks every message in batches of ``--batch`` (nats-py, as the
  collector calls it).

The records are real: ``--hosts`` logs written by the real
:class:`~agent.evidence.store.EvidenceStore` from the golden capture's
generator through the real mapper (hostile text included).

The PostgreSQL here runs with ``fsync=off`` and ``synchronous_commit=off``
(the test servers' settings): commits cost no disk flush, which flatters
the unbatched figure most. On a real database each commit waits for the
WAL flush, and batching matters more. The machine may be shared: the load
average is printed with the figures.

Run it from the repository root::

    .venv/bin/python bench/fleet_bench.py [--records N] [--unbatched N] [--batch B]
                                          [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import psycopg
from bench_args import positive_int, seconds
from prometheus_client.parser import text_string_to_metric_families

from agent.config.fleet import CollectConfig
from agent.config.load import parse_config
from agent.evidence.chain import ChainRecord
from agent.evidence.layout import segment_files
from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore
from agent.fleet.collector import Collector, connect_pg
from agent.fleet.migrate import migrate
from agent.fleet.partitions import create_sql, maintain
from agent.fleet.sanitise import Row, sanitise_batch
from agent.fleet.status import PublisherStatus, decode_status
from agent.fleet.wire import evidence_subject
from agent.fleet.writer import write_batch
from agent.redact import Redactor
from tests.evidence.golden_events import (
    ANCHOR,
    CGROUPS,
    CLOCK_NS,
    VERSION,
    golden_events,
)
from tests.fleet.servers import NATS_SERVER, PG_BIN, NatsServer, PostgresServer, free_port

# The collector's own defaults: the bench runs what a deployment would.
PREFIX: Final = CollectConfig().subject_prefix
STREAM: Final = CollectConfig().stream
DURABLE: Final = CollectConfig().durable
TARGET_RATE: Final = 50_000
TARGET_P99_S: Final = 2.0
DRAIN_S: Final = 60.0
"""How long after the run's end the rows may still arrive."""
LOW_RATE: Final = 5_000
"""The second end-to-end rate, printed beside the target's."""
HOST_RATE: Final = 100
"""Records/s of a busy host, for the hosts-per-collector figure."""


class Message(NamedTuple):
    """What the collector reads of a fetched NATS message (``subject``, ``data``)."""

    subject: str
    data: bytes


# --- the commands and the configuration --------------------------------------------------


def fleet_commands(config: Path, state_dir: Path) -> tuple[list[str], list[str]]:
    """The publisher's and the collector's argv: THE one place their command lines live."""
    collector = [sys.executable, "-m", "agent", "collect", "--config", str(config)]
    publisher = [sys.executable, "-m", "agent.fleet.publisher", "--config", str(config),
                 "--state-dir", str(state_dir), "--status"]  # fmt: skip
    return publisher, collector


def fleet_config_text(nats_url: str, dsn: str, host: str, batch: int, metrics: str) -> str:
    """The TOML both read: [fleet] for the publisher, [collect] for the collector."""
    return (
        f'[fleet]\nenabled = true\nnats_url = "{nats_url}"\nhost = "{host}"\n'
        f'subject_prefix = "{PREFIX}"\n\n'
        f'[collect]\nnats_url = "{nats_url}"\ndsn = "{dsn}"\nstream = "{STREAM}"\n'
        f'durable = "{DURABLE}"\nbatch_size = {batch}\nbatch_time_ms = 100\n'
        f'subject_prefix = "{PREFIX}"\nmetrics_listen = "{metrics}"\n'
    )


def bench_collector(batch: int) -> Collector:
    """A collector as ``tracehound collect`` builds it from the bench's TOML (not started:
    the write-rate passes call its sanitise step and :func:`write_batch` themselves)."""
    text = fleet_config_text("nats://127.0.0.1:4222", "postgresql://unused", "bench", batch, "")
    return Collector(parse_config(text, "fleet_bench"))


# --- records -------------------------------------------------------------------------------


def _mapped(count: int) -> list[Any]:
    mapper = Mapper(host="bench-host", anchor=ANCHOR, redactor=Redactor.builtin(),
                    version=VERSION, cgroups=CGROUPS.__getitem__)  # fmt: skip
    return [mapper.anchor_record()] + [mapper.map(e) for e in golden_events(count - 1, 7)]


def write_logs(root: Path, hosts: int, per_host: int) -> dict[str, list[bytes]]:
    """``hosts`` real logs of ``per_host`` records each; their lines by host."""
    bodies = _mapped(per_host)
    out: dict[str, list[bytes]] = {}
    for n in range(hosts):
        state = root / f"host-{n}"
        store = EvidenceStore(state, clock=lambda: CLOCK_NS, checkpoint_every_records=1000)
        for record in bodies:
            store.append_body(record.type, record.body)
        store.close()
        out[f"host-{n}"] = [
            line
            for _, p in segment_files(state / "segments")
            for line in p.read_bytes().splitlines()
        ]
    return out


def messages_of(lines: dict[str, list[bytes]]) -> list[Message]:
    """Every host's lines as the publisher sends them (subject by host and type),
    round-robin by host: the order many hosts arrive in."""
    hosts = sorted(lines)
    longest = max(len(v) for v in lines.values())
    out: list[Message] = []
    for i in range(longest):
        for host in hosts:
            if i < len(lines[host]):
                line = lines[host][i]
                kind = msgspec.json.decode(line, type=ChainRecord).type
                out.append(Message(evidence_subject(PREFIX, host, kind), line))
    return out


def batches_of(messages: Sequence[Message], size: int) -> list[list[Message]]:
    return [list(messages[i : i + size]) for i in range(0, len(messages), size)]


# --- write rate: the collector's sanitise step and write_batch --------------------------------

Sanitised = tuple[list[Row], list[Any], list[Any]]
"""One batch as the collector's sanitise step returns it: rows, dead letters, heads."""


class Pass(NamedTuple):
    """One timed pass over the batches."""

    records: int
    seconds: float
    written: int
    duplicates: int
    dead_letters: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def us_per_record(self) -> float:
        return self.seconds / self.records * 1e6


def _sanitise(collector: Collector, batch: list[Message]) -> Sanitised:
    """What the collector's fetcher does to a batch before the channel."""
    return sanitise_batch(
        collector.sanitiser, collector.cfg.subject_prefix, [(m.subject, m.data) for m in batch]
    )


def sanitise_pass(batches: list[list[Message]], batch: int) -> tuple[Pass, list[Sanitised]]:
    """The sanitiser alone (records/s), and its output for :func:`write_pass`."""
    collector = bench_collector(batch)
    started = time.perf_counter()
    out = [_sanitise(collector, b) for b in batches]
    elapsed = time.perf_counter() - started
    dead = sum(len(d) for _, d, _ in out)
    return Pass(sum(len(b) for b in batches), elapsed, 0, 0, dead), out


async def _connect(dsn: str, days: set[dt.date]) -> psycopg.AsyncConnection[Any]:
    """A connection as the collector has it after start: schema migrated, partitions
    made (and the records' own days, as a live host's records would be today's)."""
    conn = await connect_pg(dsn)
    await migrate(conn)
    await maintain(conn, dt.datetime.now(dt.UTC), 0)
    for day in sorted(days):
        await conn.execute(create_sql(day).encode())
    return conn


async def _write_pass(
    conn: psycopg.AsyncConnection[Any],
    collector: Collector,
    batches: list[list[Message]] | None,
    sanitised: list[Sanitised] | None,
) -> Pass:
    """``write_batch`` per batch, sanitising each first when given messages."""
    written = duplicates = dead_letters = records = 0
    cfg = collector.cfg
    started = time.perf_counter()
    for n in range(len(batches if batches is not None else sanitised or [])):
        if batches is not None:
            rows, dead, heads = _sanitise(collector, batches[n])
            records += len(batches[n])
        else:
            assert sanitised is not None
            rows, dead, heads = sanitised[n]
            records += len(rows) + len(dead) + len(heads)
        result = await write_batch(
            conn, rows, dead, heads, collector.checks, collector.keys, gap_grace_s=cfg.gap_grace_s
        )
        written += result.written
        duplicates += result.duplicates
        dead_letters += result.dead_letters
    return Pass(records, time.perf_counter() - started, written, duplicates, dead_letters)


async def _counts(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    cur = await conn.execute(b"SELECT (SELECT count(*) FROM chain), (SELECT count(*) FROM records)")
    got = await cur.fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


def write_passes(
    server: PostgresServer,
    every: list[Message],
    records: int,
    batch: int,
    unbatched: int,
) -> dict[str, Pass]:
    """Sanitise alone, write alone, batched, batched again (duplicates) on the first
    ``records`` messages; unbatched on the first ``unbatched``: each checked against
    what it stored."""
    messages = every[:records]
    batches = batches_of(messages, batch)
    sanitise, sanitised = sanitise_pass(batches, batch)
    assert sanitise.dead_letters == 0, f"{sanitise.dead_letters} records dead-lettered"
    days = {
        dt.datetime.fromtimestamp(r.time_ns / 1e9, dt.UTC).date()
        for rows, _, _ in sanitised
        for r in rows
        if r.time_ns is not None
    }
    n = len(messages)

    async def run() -> dict[str, Pass]:
        out = {"sanitise": sanitise}
        conn = await _connect(server.create_database("write_alone"), days)
        try:
            out["write"] = await _write_pass(conn, bench_collector(batch), None, sanitised)
            assert (out["write"].written, await _counts(conn)) == (n, (n, n)), out["write"]
        finally:
            await conn.close()
        conn = await _connect(server.create_database("batched"), days)
        try:
            collector = bench_collector(batch)
            out["batched"] = await _write_pass(conn, collector, batches, None)
            assert (out["batched"].written, await _counts(conn)) == (n, (n, n)), out["batched"]
            out["again"] = await _write_pass(conn, collector, batches, None)
            assert (out["again"].duplicates, out["again"].written) == (n, 0), out["again"]
            assert await _counts(conn) == (n, n)  # none twice
        finally:
            await conn.close()
        conn = await _connect(server.create_database("unbatched"), days)
        try:
            ones = batches_of(every[:unbatched], 1)
            out["unbatched"] = await _write_pass(conn, bench_collector(batch), ones, None)
            m = len(ones)
            assert (out["unbatched"].written, await _counts(conn)) == (m, (m, m)), out
        finally:
            await conn.close()
        return out

    return asyncio.run(run())


# --- end to end: the real publisher and collector -------------------------------------------


class Lag(NamedTuple):
    """One end-to-end run: every record's lag, and what the collector's /metrics said."""

    rate: int
    lags: list[float]
    #: Records not in ``chain`` within DRAIN_S after the run (their lag: inf).
    missing: int
    metrics: dict[str, float]
    fetch_ack: Pass | None
    #: The publisher's status lines over the run (``--status``, one a second).
    published: list[PublisherStatus]


def publisher_status(path: Path) -> list[PublisherStatus]:
    """The publisher's ``--status`` lines (a line that does not decode is skipped)."""
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [s for s in (decode_status(line) for line in lines) if s is not None]


def scrape(url: str, *, quiet: bool = False) -> dict[str, float]:
    """The collector's /metrics samples by name ({} if it cannot be read)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as err:
        if not quiet:
            print(f"fleet_bench: collector metrics not read: {err}", file=sys.stderr)
        return {}
    return {
        sample.name: float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def real_lag(
    commands: tuple[list[str], list[str]],
    state: Path,
    dsn: str,
    rate: int,
    duration_s: float,
    metrics_url: str,
) -> tuple[list[float], int, dict[str, float]]:
    """The publisher and collector as processes; a writer appends at ``rate``
    (commit every 10 ms) and the rows' arrival is seen by polling ``chain``.
    Every committed seq's lag (checkpoints included), the seqs not seen within
    :data:`DRAIN_S` of the end, and the collector's /metrics."""
    publisher_argv, collector_argv = commands
    bodies = _mapped(int(rate * duration_s))
    store = EvidenceStore(state, checkpoint_every_records=10_000)
    procs = [subprocess.Popen(collector_argv)]
    ready_by = time.monotonic() + 60
    while not scrape(
        metrics_url, quiet=True
    ):  # /metrics is up once schema, stream and consumer are
        if procs[0].poll() is not None or time.monotonic() > ready_by:
            store.close()
            procs[0].kill()
            raise RuntimeError(f"end to end at {rate}/s: the collector did not start")
        time.sleep(0.1)
    with (state.parent / "publisher-status.jsonl").open("wb") as status_out:
        procs.append(subprocess.Popen(publisher_argv, stdout=status_out))
    committed: dict[int, float] = {}
    lags: list[float] = []
    metrics: dict[str, float] = {}
    missing = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # A first record through the whole path before the clock starts: the
            # lag measured is the steady state's, not the processes' start-up.
            store.append_body(bodies[0].type, bodies[0].body)
            store.commit()
            while conn.execute("SELECT 1 FROM chain LIMIT 1").fetchone() is None:
                if time.monotonic() > ready_by + 60:
                    raise RuntimeError(f"end to end at {rate}/s: the first record never arrived")
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"end to end at {rate}/s: the publisher or collector exited")
                time.sleep(0.05)
            t0 = time.monotonic()
            seen = last = 0
            written = 1
            while written < len(bodies) or seen < last:
                now = time.monotonic()
                due = min(len(bodies), 1 + int((now - t0) * rate))
                for record in bodies[written:due]:
                    store.append_body(record.type, record.body)
                if due > written:
                    store.commit()
                    head = store.head
                    assert head is not None
                    at = time.monotonic()
                    for seq in range(last + 1, head[0] + 1):
                        committed[seq] = at
                    last, written = head[0], due
                found = conn.execute("SELECT max(seq) FROM chain").fetchone()
                top = -1 if found is None or found[0] is None else int(found[0])
                arrived = time.monotonic()
                lags += [arrived - committed[s] for s in range(seen + 1, top + 1) if s in committed]
                seen = max(seen, top)
                if now > t0 + duration_s + DRAIN_S:
                    break  # the rest are counted as missing (an infinite lag), not waited for
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"end to end at {rate}/s: the publisher or collector exited")
                time.sleep(0.01)
        missing = sum(1 for s in committed if s > seen)
        metrics = scrape(metrics_url)
    finally:
        store.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return lags, missing, metrics


async def fetch_ack(url: str, batch: int) -> Pass:
    """NATS's share of the collector's time: a second durable on the run's stream
    fetches every message in batches of ``batch`` and acks each, as the collector does."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(STREAM)).state.messages
        await js.add_consumer(STREAM, ConsumerConfig(
            durable_name="bench-probe", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, max_ack_pending=batch * 6))  # fmt: skip
        sub = await js.pull_subscribe_bind(durable="bench-probe", stream=STREAM)
        got = 0
        started = time.perf_counter()
        while got < total:
            try:
                msgs = await sub.fetch(batch, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                break  # fewer than the stream said: the figure is over what came
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        await nc.flush()
        return Pass(max(got, 1), time.perf_counter() - started, got, 0, 0)
    finally:
        await nc.close()


def end_to_end(postgres: PostgresServer, root: Path, rate: int, duration_s: float,
               batch: int) -> Lag:  # fmt: skip
    """One rate on a fresh nats-server and a fresh database."""
    run = root / f"e2e-{rate}"
    run.mkdir()
    nats_server = NatsServer(run / "nats")
    try:
        nats_server.start()
        dsn = postgres.create_database(f"e2e_{rate}")
        metrics = f"127.0.0.1:{free_port()}"
        config = run / "fleet.toml"
        host = f"e2e-{rate}"
        config.write_text(fleet_config_text(nats_server.url, dsn, host, batch, metrics))
        lags, missing, seen = real_lag(fleet_commands(config, run / host), run / host, dsn, rate,
                              duration_s, f"http://{metrics}/metrics")  # fmt: skip
        lags += [float("inf")] * missing
        published = publisher_status(run / "publisher-status.jsonl")
        probe = asyncio.run(fetch_ack(nats_server.url, batch))
    finally:
        nats_server.stop()
    return Lag(rate, lags, missing, seen, probe, published)


# --- the run ---------------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def build_parser() -> argparse.ArgumentParser:
    default_batch = CollectConfig().batch_size
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--records", type=positive_int, default=100_000,
                        help="records for the batched passes (default 100,000)")  # fmt: skip
    parser.add_argument("--unbatched", type=positive_int, default=5_000,
                        help="records for the unbatched pass (default 5,000)")  # fmt: skip
    parser.add_argument("--hosts", type=positive_int, default=10, help="logs (default 10)")
    parser.add_argument("--batch", type=positive_int, default=default_batch,
                        help=f"records per batch ([collect] batch_size; default {default_batch})")  # fmt: skip
    parser.add_argument("--rate", type=positive_int, default=10_000,
                        help="end-to-end records/s (default 10,000; 5,000 runs too)")  # fmt: skip
    parser.add_argument("--seconds", type=seconds, default=10.0,
                        help="end-to-end duration of each rate (default 10 s)")  # fmt: skip
    return parser


def report(args: argparse.Namespace, passes: dict[str, Pass], runs: list[Lag], load: str) -> bool:
    """Print the figures; True when both targets hold."""
    batched, unbatched = passes["batched"], passes["unbatched"]
    sanitise, write = passes["sanitise"], passes["write"]
    print(f"\nwrite rate into PostgreSQL (the collector's sanitise step + write_batch; batch"
          f" {args.batch}; {batched.records:,} records):")  # fmt: skip
    ok_rate = batched.rate >= TARGET_RATE
    print(f"  batched                  {batched.rate:>10,.0f} records/s   target >= {TARGET_RATE:,}:"
          f" {'PASS' if ok_rate else 'FAIL'}")  # fmt: skip
    print(f"  unbatched (batch of 1)   {unbatched.rate:>10,.0f} records/s   (a transaction a record;"
          f" {unbatched.records:,} records)")  # fmt: skip
    print(f"  batched / unbatched      {batched.rate / unbatched.rate:>10.1f} x")
    print(f"  sanitise alone           {sanitise.rate:>10,.0f} records/s")
    print(f"  write alone (sanitised)  {write.rate:>10,.0f} records/s")
    print(f"  batched, all duplicates  {passes['again'].rate:>10,.0f} records/s   (a republish:"
          " every row a conflict)")  # fmt: skip
    probe = next((r.fetch_ack for r in runs if r.rate == args.rate), None)
    nats_part = f", NATS fetch+ack {probe.us_per_record:.1f}" if probe else ""
    print(f"  where the time goes      sanitise {sanitise.us_per_record:.1f}, write"
          f" {write.us_per_record:.1f} µs/record (each alone; {batched.us_per_record:.1f}"
          f" together){nats_part}")  # fmt: skip
    ok_lag = True
    for run in runs:
        p50, p99 = _quantile(run.lags, 0.5), _quantile(run.lags, 0.99)
        target = run.rate == args.rate
        verdict = ""
        if target:
            ok_lag = p99 <= TARGET_P99_S
            verdict = f"   target p99 <= {TARGET_P99_S:g} s: {'PASS' if ok_lag else 'FAIL'}"
        print(f"\nend to end at {run.rate:,} records/s for {args.seconds:g} s (agent.fleet.publisher"
              f" + tracehound collect, {len(run.lags):,} records):")  # fmt: skip
        print(f"  lag p50 {p50:.3f} s   p99 {p99:.3f} s   max {max(run.lags):.3f} s{verdict}")
        if run.missing:
            print(f"  {run.missing:,} records not stored {DRAIN_S:g} s after the run (lag inf)")
        m = run.metrics
        count = m.get("tracehound_collect_batches_total", 0.0)
        records = m.get("tracehound_collect_records_total", 0.0)
        if count and records:
            spent = m.get("tracehound_collect_batch_seconds_sum", 0.0)
            print(f"  collector: {count:,.0f} batches of {records / count:,.0f} records on average,"
                  f" {spent / records * 1e6:.1f} µs/record sanitising to commit")  # fmt: skip
        if run.published:
            # lag_records, not lag_seconds: the golden records carry their capture's
            # old times, so the publisher's age of the oldest unacked one is not a lag.
            worst = max(st.lag_records for st in run.published)
            last = run.published[-1]
            print(f"  publisher: at most {worst:,} records behind its log (a status line a"
                  f" second); published {last.published:,}, errors {last.errors}, reconnects"
                  f" {last.reconnects}")  # fmt: skip
        if run.fetch_ack is not None:
            f = run.fetch_ack
            print(f"  NATS fetch+ack           {f.us_per_record:>10.1f} µs/record ({f.written:,}"
                  f" messages, batch {args.batch}, a second durable on the stream)")  # fmt: skip
    per_record = batched.us_per_record + (probe.us_per_record if probe else 0.0)
    hosts = 1e6 / per_record / HOST_RATE
    print(f"\n  hosts per collector      {hosts:>10,.0f} at {HOST_RATE} records/s a host"
          f" (1 / (sanitise + write{' + NATS' if probe else ''}) per record)")  # fmt: skip
    held = [r.rate for r in runs if _quantile(r.lags, 0.99) <= TARGET_P99_S]
    if held:
        print(f"  hosts per collector      {max(held) / HOST_RATE:>10,.0f} end to end (the highest"
              f" rate run here whose p99 held, {max(held):,}/s, / {HOST_RATE})")  # fmt: skip
    else:
        print(
            f"  hosts per collector      end to end: no rate run here held p99 <= {TARGET_P99_S:g} s"
        )
    print(f"  {load}")
    return ok_rate and ok_lag


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in (Path(NATS_SERVER), PG_BIN / "initdb") if not p.exists()]
    if missing:
        print(f"fleet_bench: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    load_before = _load()
    postgres = PostgresServer(root / "postgres")
    try:
        postgres.start()
        t = time.perf_counter()
        per_host = -(-max(args.records, args.unbatched) // args.hosts)
        messages = messages_of(write_logs(root / "logs", args.hosts, per_host))
        size = sum(len(m.data) for m in messages) / len(messages)
        print(f"fleet_bench: {len(messages):,} records from {args.hosts} real logs ({size:.0f}"
              f" bytes a line), made in {time.perf_counter() - t:.1f} s; {load_before}",
              flush=True)  # fmt: skip
        passes = write_passes(postgres, messages, args.records, args.batch, args.unbatched)
        runs = [
            end_to_end(postgres, root, rate, args.seconds, args.batch)
            for rate in sorted({LOW_RATE, args.rate})
        ]
    finally:
        postgres.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
    ok = report(args, passes, runs, f"{_load()} at the end; {load_before} at the start")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
