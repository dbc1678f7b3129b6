"""The batch writer against a real PostgreSQL, without NATS: keys, forks, order, gaps."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import psycopg

from agent.config.schema import Config
from agent.fleet.chaincheck import HostCheck
from agent.fleet.migrate import migrate
from agent.fleet.partitions import maintain, partition_name
from agent.fleet.sanitise import Row, Sanitiser
from agent.fleet.wire import evidence_subject
from agent.fleet.writer import BatchResult, gaps_due, write_batch
from tests.fleet.collect_proc import query
from tests.fleet.publish_log import record_of, write_log


def rows_of(lines: list[bytes], host: str) -> list[Row]:
    sanitiser = Sanitiser("tracehound", redactor=Config().evidence.redactor())
    out = []
    for line in lines:
        row = sanitiser.record(evidence_subject("tracehound", host, record_of(line).type), line)
        assert isinstance(row, Row)
        out.append(row)
    return out


async def _batches(dsn: str, batches: list[list[Row]], grace: float) -> list[BatchResult]:
    conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await migrate(conn)
        assert await migrate(conn) == []  # applied once
        await maintain(conn, datetime.datetime.now(datetime.UTC), 30)
        checks: dict[str, HostCheck] = {}
        results = [
            await write_batch(
                conn, sorted(b, key=lambda r: r.seq), [], [], checks, {}, gap_grace_s=grace
            )
            for b in batches
        ]
        due = await gaps_due(conn, grace)
        if due:
            results.append(
                await write_batch(conn, [], [], [], checks, {}, gap_grace_s=grace, sweep=due)
            )
        return results
    finally:
        await conn.close()


def test_out_of_order_batches_check_clean_and_a_fork_in_one_batch(
    tmp_path: Path, pg_dsn: str
) -> None:
    rows = rows_of(write_log(tmp_path / "a", "h", 30), "h")
    other = rows_of(write_log(tmp_path / "b", "h", 30, salt="x"), "h")
    # Later records first (as a second collector would commit them), then the
    # first ones, then the same again, then a batch with seq 31 twice.
    results = asyncio.run(
        _batches(pg_dsn, [rows[20:], rows[:20], rows, [other[30], other[30]]], grace=3600)
    )
    assert query(pg_dsn, "SELECT version FROM schema_migrations") == [(1,)]
    assert [r.written for r in results] == [11, 20, 0, 0]
    assert results[2].duplicates == 31
    assert [(e.seq, e.kind) for r in results[:3] for e in r.events] == []
    assert [(e.seq, e.kind) for e in results[3].events] == [(30, "fork")]
    assert query(pg_dsn, "SELECT stored_seq, checked_seq, gap_seq FROM hosts") == [(30, 30, None)]
    stored = query(pg_dsn, "SELECT hash FROM chain WHERE seq = 30")
    assert stored == [(rows[30].hash,)]
    today = partition_name(datetime.datetime.now(datetime.UTC).date())
    tables = {r[0] for r in query(pg_dsn, "SELECT tablename FROM pg_tables")}
    assert today in tables


def test_a_gap_is_reported_by_the_sweep_once_due(tmp_path: Path, pg_dsn: str) -> None:
    rows = rows_of(write_log(tmp_path / "a", "h", 30), "h")
    results = asyncio.run(_batches(pg_dsn, [rows[:10], rows[15:]], grace=0))
    events = [(e.seq, e.kind, e.detail) for r in results for e in r.events]
    assert len(events) == 1 and events[0][:2] == (10, "gap")
    assert "seq 10 to 14" in events[0][2]
    assert query(pg_dsn, "SELECT stored_seq, breaks FROM hosts") == [(9, 1)]
    # Filled later: the tip moves on, no new event.
    results = asyncio.run(_batches(pg_dsn, [rows[10:15]], grace=0))
    assert [e for r in results for e in r.events] == []
    assert query(pg_dsn, "SELECT stored_seq, breaks FROM hosts") == [(30, 1)]


def test_a_record_twice_in_one_batch_is_stored_once(tmp_path: Path, pg_dsn: str) -> None:
    """A message redelivered beside its re-send lands in one batch twice:
    one chain row and one records row (the end-to-end test found two)."""
    rows = rows_of(write_log(tmp_path / "a", "h", 8), "h")
    batch = [*rows[:4], rows[3], *rows[4:]]
    results = asyncio.run(_batches(pg_dsn, [batch], grace=3600))
    assert results[0].written == len(rows)
    assert [(e.seq, e.kind) for e in results[0].events] == []
    assert query(pg_dsn, "SELECT count(*) FROM chain") == [(len(rows),)]
    assert query(pg_dsn, "SELECT count(*) FROM records") == [(len(rows),)]
