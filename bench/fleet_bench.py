"""Fleet bench: records into PostgreSQL, batched vs unbatched, and end-to-end lag (issue 12's targets).

Side by side in one run, on a nats-server and a PostgreSQL of its own
(``tests/fleet/servers.py``: loopback ports, a temporary directory, the
schema from :data:`agent.fleet.schema.MIGRATIONS`, one partition for the
records' day):

* **write rate**, records/s committed into ``chain`` + ``records``:
  - *batched*: the collector's statement, one per ``--batch`` records: the
    batch as arrays, ``unnest``-ed once, ``INSERT INTO chain ... ON CONFLICT
    DO NOTHING RETURNING`` and only the returned rows on into ``records``,
    one round trip and one commit per batch (:data:`BATCH_SQL`);
  - *batched, all duplicates*: the same batches again (a republish after a
    fault): every row is a conflict, nothing reaches ``records``;
  - *unbatched*: one ``INSERT`` per table per record and a commit each,
    which is what acking each message after its commit costs without
    batching.
* **end-to-end lag** at ``--rate`` records/s (default 10,000) for
  ``--seconds``: from the moment a record is due (committed to the host's
  log) to the commit of its row, p50/p99/max. With ``tracehound collect``
  and ``agent.fleet.publisher`` present it runs them (the real thing: a
  writer appends to an :class:`EvidenceStore` at the rate, the publisher
  reads the log, the collector writes; arrival is seen by polling
  ``chain``); without them (on a branch before they landed) a stand-in pair
  runs the same path: a paced ``publish_async`` publisher with at most
  ``max_in_flight`` unacknowledged, and a pull consumer on a durable with a
  bounded channel to a writer using :data:`BATCH_SQL`, acking each message
  after its commit. The output says which ran.

The records are real: ``--hosts`` logs written by the real
:class:`~agent.evidence.store.EvidenceStore` from the golden capture's
generator through the real mapper (hostile text included), ``line`` the
log line's bytes, the query columns from :func:`agent.fleet.columns.columns_of`.

The PostgreSQL here runs with ``fsync=off`` and ``synchronous_commit=off``
(the test servers' settings): commits cost no disk flush, which flatters
the unbatched figure most. On a real database each commit waits for the
WAL flush, and batching matters more.

Run it from the repository root::

    .venv/bin/python bench/fleet_bench.py [--records N] [--batch B] [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import psycopg
from bench_args import positive_int, seconds

from agent.evidence.chain import ChainRecord
from agent.evidence.layout import segment_files
from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore
from agent.fleet.columns import columns_of
from agent.fleet.pushdown import ns_to_datetime
from agent.fleet.schema import MIGRATIONS
from agent.fleet.wire import (
    MSG_ID_HEADER,
    evidence_subject,
    evidence_wildcard,
    message_id,
    record_id,
)
from agent.redact import Redactor
from tests.evidence.golden_events import (
    ANCHOR,
    CGROUPS,
    CLOCK_NS,
    VERSION,
    golden_events,
)
from tests.fleet.servers import NATS_SERVER, PG_BIN, NatsServer, PostgresServer

PREFIX: Final = "tracehound"
STREAM: Final = "TRACEHOUND"
DURABLE: Final = "collector"
TARGET_RATE: Final = 50_000
TARGET_P99_S: Final = 2.0
HOST_RATE: Final = 100
"""Records/s of a busy host, for the hosts-per-collector figure."""

Row = tuple[Any, ...]
"""(host, seq, id, hash, prev, type, time, pid, comm, exe, path, uid, container, remote, line)."""

_ARRAY_TYPES: Final = ("text", "int8", "text", "text", "text", "text", "timestamptz",
                       "int8", "text", "text", "text", "int8", "text", "text", "bytea")  # fmt: skip
_COLUMNS: Final = (
    "host, seq, id, hash, prev, type, time, pid, comm, exe, path, uid, container, remote, line"
)
BATCH_SQL: Final = f"""
    WITH batch AS (
        SELECT * FROM unnest({", ".join(f"%b::{t}[]" for t in _ARRAY_TYPES)})
            AS b({_COLUMNS})
    ), new AS (
        INSERT INTO chain (host, seq, id, hash, prev, type, time)
        SELECT host, seq, id, hash, prev, type, time FROM batch
        ON CONFLICT DO NOTHING RETURNING host, seq
    )
    INSERT INTO records (host, seq, type, time, pid, comm, exe, path, uid, container, remote, line)
    SELECT b.host, b.seq, b.type, b.time, b.pid, b.comm, b.exe, b.path, b.uid, b.container,
           b.remote, b.line
    FROM batch b JOIN new USING (host, seq)
"""
"""The collector's write: one statement per batch, deduplicated by chain's keys."""

CHAIN_ONE: Final = (
    "INSERT INTO chain (host, seq, id, hash, prev, type, time) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING RETURNING seq"
)
RECORD_ONE: Final = (
    "INSERT INTO records (host, seq, type, time, pid, comm, exe, path, uid, container, remote,"
    " line) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
RECEIVED: Final = dt.datetime(2025, 11, 24, 12, tzinfo=dt.UTC)


# --- the commands the lead adjusts -----------------------------------------------------


def fleet_commands(config: Path, state_dir: Path) -> tuple[list[str], list[str]] | None:
    """The publisher's and the collector's argv, or None when this checkout has
    neither (then the stand-in runs). THE one place their command lines live."""
    collector = [sys.executable, "-m", "agent", "collect", "--config", str(config)]
    publisher = [sys.executable, "-m", "agent.fleet.publisher", "--config", str(config),
                 "--state-dir", str(state_dir)]  # fmt: skip
    try:
        import agent.fleet.publisher  # noqa: F401
    except ImportError:
        return None
    done = subprocess.run([*collector[:3], "collect", "--help"], capture_output=True, check=False)
    return (publisher, collector) if done.returncode == 0 else None


def fleet_config(path: Path, nats_url: str, dsn: str, host: str, batch: int) -> None:
    """The TOML both read: [fleet] for the publisher, [collect] for the collector."""
    path.write_text(
        f'[fleet]\nenabled = true\nnats_url = "{nats_url}"\nhost = "{host}"\n'
        f'subject_prefix = "{PREFIX}"\n\n'
        f'[collect]\nnats_url = "{nats_url}"\ndsn = "{dsn}"\nstream = "{STREAM}"\n'
        f'durable = "{DURABLE}"\nbatch_size = {batch}\nbatch_time_ms = 100\n'
        f'subject_prefix = "{PREFIX}"\nmetrics_listen = ""\n'
    )


# --- records ------------------------------------------------------------------------


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


def row_of(host: str, line: bytes) -> Row:
    """The row the collector writes for one received line."""
    record = msgspec.json.decode(line, type=ChainRecord)
    body = record.body
    columns = columns_of(body) if isinstance(body, dict) else None
    when = RECEIVED
    if columns is not None and columns.time_ns is not None:
        when = ns_to_datetime(columns.time_ns)
    c = columns
    return (host, record.seq, record_id(record), record.hash, record.prev, record.type, when,
            c and c.pid, c and c.comm, c and c.exe, c and c.path, c and c.uid,
            c and c.container, c and c.remote, line)  # fmt: skip


def interleaved(lines: dict[str, list[bytes]]) -> list[tuple[str, bytes]]:
    """Every host's lines, round-robin: the order many hosts send in."""
    hosts = sorted(lines)
    longest = max(len(v) for v in lines.values())
    return [(h, lines[h][i]) for i in range(longest) for h in hosts if i < len(lines[h])]


# --- the database ------------------------------------------------------------------------


def prepare_database(server: PostgresServer, name: str, days: set[dt.date]) -> str:
    dsn = server.create_database(name)
    with psycopg.connect(dsn) as conn:
        for _, sql in MIGRATIONS:
            conn.execute(sql)
        for day in sorted(days):
            nxt = day + dt.timedelta(days=1)
            conn.execute(
                f"CREATE TABLE records_{day:%Y%m%d} PARTITION OF records"
                f" FOR VALUES FROM ('{day.isoformat()}') TO ('{nxt.isoformat()}')"
            )
    return dsn


def batch_params(rows: Sequence[Row]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def write_batched(dsn: str, rows: list[Row], batch: int) -> float:
    """Records/s through :data:`BATCH_SQL`, a commit per batch."""
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.execute(BATCH_SQL, batch_params(rows[i : i + batch]))
            conn.commit()
        return len(rows) / (time.perf_counter() - start)


def write_unbatched(dsn: str, rows: list[Row]) -> float:
    """Records/s one record at a time: two statements and a commit each."""
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for row in rows:
            if conn.execute(CHAIN_ONE, row[:7]).fetchone() is not None:
                conn.execute(RECORD_ONE, (*row[:2], *row[5:]))
            conn.commit()
        return len(rows) / (time.perf_counter() - start)


def count_rows(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        chain = conn.execute("SELECT count(*) FROM chain").fetchone()
        records = conn.execute("SELECT count(*) FROM records").fetchone()
        assert chain is not None and records is not None
        return int(chain[0]), int(records[0])


# --- end to end: the stand-in pair ----------------------------------------------------------


Send = tuple[str, bytes, dict[str, str]]
"""What the publisher sends for one record: subject, line, headers."""


def sends_of(records: list[tuple[str, bytes]]) -> list[Send]:
    """Subjects and message ids made ahead, so the paced loop only sends."""
    out: list[Send] = []
    for host, line in records:
        record = msgspec.json.decode(line, type=ChainRecord)
        subject = evidence_subject(PREFIX, host, record.type)
        out.append((subject, line, {MSG_ID_HEADER: message_id(host, record)}))
    return out


async def _standin_publish(
    url: str, sends: list[Send], rate: int, t0: float, in_flight: int
) -> None:
    import nats

    conn = await nats.connect(url)
    js = conn.jetstream(publish_async_max_pending=in_flight)
    for i, (subject, line, headers) in enumerate(sends):
        due = t0 + i / rate
        ahead = due - time.monotonic()
        if ahead > 0.001:
            await asyncio.sleep(ahead)
        await js.publish_async(subject, line, headers=headers)
    await js.publish_async_completed()
    await conn.close()


def standin_publisher(url: str, sends: list[Send], rate: int, t0: float) -> None:
    asyncio.run(_standin_publish(url, sends, rate, t0, 1024))


async def _standin_collect(
    url: str, dsn: str, due: dict[tuple[str, int], float], batch: int, out: Any, stored: Any
) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    conn = await nats.connect(url)
    js = conn.jetstream()
    sub = await js.pull_subscribe(
        evidence_wildcard(PREFIX), durable=DURABLE, stream=STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=8 * batch,
                              ack_wait=30),
    )  # fmt: skip
    channel: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=4)
    lags: list[float] = []
    idle = 0.0

    async def fetch() -> None:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=0.1)
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # nothing yet
            except nats.errors.ConnectionClosedError:
                return  # the run is over
            except Exception as err:  # a bench: say it, go on
                print(f"fleet_bench: stand-in fetch: {err!r}", file=sys.stderr)
                await asyncio.sleep(0.1)
                continue
            await channel.put(msgs)

    fetcher = asyncio.create_task(fetch())
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        while stored.value < len(due):
            try:
                msgs = await asyncio.wait_for(channel.get(), timeout=1.0)
            except TimeoutError:
                idle += 1.0
                if idle >= 60:
                    missing = len(due) - stored.value
                    print(f"fleet_bench: stand-in collector: nothing for 60 s, {missing} rows"
                          " missing", file=sys.stderr)  # fmt: skip
                    raise
                continue
            idle = 0.0
            if not msgs:
                continue
            rows = []
            for msg in msgs:
                host = msg.subject.split(".")[2]
                rows.append(row_of(host, msg.data))
            await db.execute(BATCH_SQL, batch_params(rows))
            await db.commit()
            done = time.monotonic()
            for msg in msgs:
                await msg.ack()
            for row in rows:
                lags.append(done - due[(row[0], row[1])])
            with stored.get_lock():
                stored.value += len(rows)
    fetcher.cancel()
    await conn.close()
    out.send(lags)


def standin_collector(url: str, dsn: str, due: dict[tuple[str, int], float], batch: int,
                      out: Any, stored: Any) -> None:  # fmt: skip
    asyncio.run(_standin_collect(url, dsn, due, batch, out, stored))


async def _make_stream(url: str) -> None:
    import nats
    from nats.js.api import StreamConfig

    conn = await nats.connect(url)
    await conn.jetstream().add_stream(
        StreamConfig(name=STREAM, subjects=[evidence_wildcard(PREFIX)], duplicate_window=120)
    )
    await conn.close()


def standin_lag(
    url: str, dsn: str, sends: list[tuple[str, bytes]], rate: int, batch: int, collectors: int
) -> list[float]:
    """Lag of every record, due time to row commit, through the stand-in
    publisher and ``collectors`` collectors sharing one durable."""
    asyncio.run(_make_stream(url))
    keys = [(host, msgspec.json.decode(line, type=ChainRecord).seq) for host, line in sends]
    messages = sends_of(sends)
    t0 = time.monotonic() + 2.0 + collectors
    due = {key: t0 + i / rate for i, key in enumerate(keys)}
    fork = multiprocessing.get_context("fork")
    stored = fork.Value("q", 0)
    pipes = [fork.Pipe(duplex=False) for _ in range(collectors)]
    procs = [
        fork.Process(target=standin_collector, args=(url, dsn, due, batch, send, stored))
        for _, send in pipes
    ]
    publisher = fork.Process(target=standin_publisher, args=(url, messages, rate, t0))
    for proc in procs:
        proc.start()
    publisher.start()
    lags: list[float] = []
    try:
        for receive, _ in pipes:
            while not receive.poll(1.0):
                if any(not p.is_alive() for p in procs) or publisher.exitcode not in (None, 0):
                    raise RuntimeError("end to end: a stand-in publisher or collector failed")
            lags += receive.recv()
    finally:
        for proc in [publisher, *procs]:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return lags


# --- end to end: the real pair ----------------------------------------------------------------


def real_lag(
    commands: tuple[list[str], list[str]], root: Path, dsn: str, rate: int, duration_s: float
) -> list[float]:
    """The publisher and collector as processes; a writer appends at ``rate``
    (commit every 10 ms) and the rows' arrival is seen by polling ``chain``."""
    publisher_argv, collector_argv = commands
    state = root / "e2e-host"
    bodies = _mapped(int(rate * duration_s))
    store = EvidenceStore(state, checkpoint_every_records=10_000)
    procs = [subprocess.Popen(collector_argv), subprocess.Popen(publisher_argv)]
    committed: dict[int, float] = {}
    lags: list[float] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.monotonic() + 1.0
            seen = -1
            written = 0
            while written < len(bodies) or seen < written - 1:
                now = time.monotonic()
                due = min(len(bodies), int((now - t0) * rate)) if now > t0 else 0
                for record in bodies[written:due]:
                    store.append_body(record.type, record.body)
                if due > written:
                    store.commit()
                    head = store.head
                    assert head is not None
                    for seq in range(
                        seen + 1 if not committed else max(committed) + 1, head[0] + 1
                    ):
                        committed[seq] = time.monotonic()
                    written = due
                found = conn.execute("SELECT max(seq) FROM chain").fetchone()
                top = -1 if found is None or found[0] is None else int(found[0])
                arrived = time.monotonic()
                lags += [arrived - committed[s] for s in range(seen + 1, top + 1) if s in committed]
                seen = max(seen, top)
                if now > t0 + duration_s + 60:
                    raise RuntimeError(f"end to end: rows stopped at seq {seen}")
                time.sleep(0.01)
    finally:
        store.close()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return lags


# --- the run ---------------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=positive_int, default=200_000,
                        help="records for the batched write (default 200,000)")  # fmt: skip
    parser.add_argument("--unbatched", type=positive_int, default=20_000,
                        help="records for the unbatched write (default 20,000)")  # fmt: skip
    parser.add_argument("--hosts", type=positive_int, default=10, help="logs (default 10)")
    parser.add_argument("--batch", type=positive_int, default=2000,
                        help="records per batch ([collect] batch_size; default 2000)")  # fmt: skip
    parser.add_argument("--rate", type=positive_int, default=10_000,
                        help="end-to-end records/s (default 10,000)")  # fmt: skip
    parser.add_argument("--collectors", type=positive_int, default=2,
                        help="stand-in collectors sharing the durable (default 2, as"
                             " deploy/collector.yaml)")  # fmt: skip
    parser.add_argument("--seconds", type=seconds, default=15.0,
                        help="end-to-end duration (default 15 s)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in (Path(NATS_SERVER), PG_BIN / "initdb") if not p.exists()]
    if missing:
        print(f"fleet_bench: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    postgres = PostgresServer(root / "postgres")
    nats_server = NatsServer(root / "nats")
    try:
        postgres.start()
        nats_server.start()
        per_host = -(-max(args.records, args.unbatched) // args.hosts)
        t = time.perf_counter()
        lines = write_logs(root / "logs", args.hosts, per_host)
        sends = interleaved(lines)
        rows = [row_of(host, line) for host, line in sends]
        days = {row[6].date() for row in rows}
        print(f"fleet_bench: {len(rows):,} records from {args.hosts} real logs"
              f" ({sum(len(r[-1]) for r in rows) / len(rows):.0f} bytes a line),"
              f" made in {time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip

        batched_dsn = prepare_database(postgres, "batched", days)
        batched = write_batched(batched_dsn, rows[: args.records], args.batch)
        again = write_batched(batched_dsn, rows[: args.records], args.batch)
        stored = count_rows(batched_dsn)
        assert stored == (args.records, args.records), stored  # none twice, none lost
        unbatched_dsn = prepare_database(postgres, "unbatched", days)
        unbatched = write_unbatched(unbatched_dsn, rows[: args.unbatched])
        assert count_rows(unbatched_dsn) == (args.unbatched, args.unbatched)

        e2e_dsn = prepare_database(postgres, "e2e", days)
        e2e_count = int(args.rate * args.seconds)
        commands = fleet_commands(root / "fleet.toml", root / "e2e-host")
        if commands is not None:
            fleet_config(root / "fleet.toml", nats_server.url, e2e_dsn, "e2e-host", args.batch)
            which = "tracehound collect + agent.fleet.publisher"
            lags = real_lag(commands, root, e2e_dsn, args.rate, args.seconds)
        else:
            which = (f"stand-in publisher and {args.collectors} collectors on one durable; the"
                     " real ones are not on this checkout")  # fmt: skip
            if e2e_count > len(sends):
                more = write_logs(root / "more", args.hosts, -(-e2e_count // args.hosts))
                sends = interleaved(more)
            lags = standin_lag(nats_server.url, e2e_dsn, sends[:e2e_count], args.rate, args.batch,
                               args.collectors)  # fmt: skip
        assert len(lags) >= e2e_count * 0.99, (len(lags), e2e_count)
    finally:
        nats_server.stop()
        postgres.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)

    p50, p99, worst = _quantile(lags, 0.5), _quantile(lags, 0.99), max(lags)
    print(f"\nwrite rate into PostgreSQL (chain + records, commit per batch; batch {args.batch}):")
    print(f"  batched                  {batched:>10,.0f} records/s   target >= {TARGET_RATE:,}:"
          f" {'PASS' if batched >= TARGET_RATE else 'FAIL'}")  # fmt: skip
    print(
        f"  batched, all duplicates  {again:>10,.0f} records/s   (a republish: every row a conflict)"
    )
    print(f"  unbatched                {unbatched:>10,.0f} records/s   (a statement per table and a"
          " commit per record)")  # fmt: skip
    print(f"  batched / unbatched      {batched / unbatched:>10.1f} x")
    print(f"\nend to end at {args.rate:,} records/s for {args.seconds:g} s ({which}):")
    print(f"  lag p50 {p50:.3f} s   p99 {p99:.3f} s   max {worst:.3f} s   target p99 <="
          f" {TARGET_P99_S:g} s: {'PASS' if p99 <= TARGET_P99_S else 'FAIL'}")  # fmt: skip
    print(f"  p99 / target             {p99 / TARGET_P99_S:>10.2f}")
    print(f"  hosts per collector      {batched / HOST_RATE:>10,.0f} at {HOST_RATE} records/s a host"
          f" (the batched rate / a host's rate)")  # fmt: skip
    return 0 if batched >= TARGET_RATE and p99 <= TARGET_P99_S else 1


if __name__ == "__main__":
    sys.exit(main())
