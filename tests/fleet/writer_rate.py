"""How fast :func:`agent.fleet.writer.write_batch` stores records: batched and one by one.

For the fleet bench (``bench/fleet_bench.py`` can import :func:`rates`) and
for a person: ``python -m tests.fleet.writer_rate DSN [N]`` prints records/s
into PostgreSQL with batches of 2000 and unbatched (one record per
transaction), on the same records, sanitised once beforehand (the
sanitiser's own rate is printed too: it is the collector's other cost).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from agent.config.schema import Config
from agent.fleet.chaincheck import HostCheck
from agent.fleet.migrate import migrate
from agent.fleet.partitions import maintain
from agent.fleet.sanitise import Row, Sanitiser
from agent.fleet.wire import evidence_subject
from agent.fleet.writer import write_batch
from tests.fleet.publish_log import record_of, write_log


def rows_of(lines: list[bytes], host: str) -> tuple[list[Row], float]:
    sanitiser = Sanitiser("tracehound", redactor=Config().evidence.redactor())
    subjects = [evidence_subject("tracehound", host, record_of(line).type) for line in lines]
    started = time.perf_counter()
    rows = [sanitiser.record(s, line) for s, line in zip(subjects, lines, strict=True)]
    rate = len(lines) / (time.perf_counter() - started)
    return [r for r in rows if isinstance(r, Row)], rate


async def _write(dsn: str, rows: list[Row], batch: int) -> float:
    import datetime

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await migrate(conn)
        await maintain(conn, datetime.datetime.now(datetime.UTC), 0)
        checks: dict[str, HostCheck] = {}
        started = time.perf_counter()
        for at in range(0, len(rows), batch):
            await write_batch(conn, rows[at : at + batch], [], [], checks, {}, gap_grace_s=60)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


def rates(dsn_batched: str, dsn_single: str, count: int, single: int = 2000) -> dict[str, float]:
    """records/s: sanitiser, batched (2000) and unbatched (1) writes, into two empty databases."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = write_log(Path(tmp) / "log", "bench", count)
    rows, sanitise_rate = rows_of(lines, "bench")
    batched = asyncio.run(_write(dsn_batched, rows, 2000))
    unbatched = asyncio.run(_write(dsn_single, rows[:single], 1))
    return {"sanitise": sanitise_rate, "batched": batched, "unbatched": unbatched}


if __name__ == "__main__":
    base = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    with psycopg.connect(base, autocommit=True) as c:
        for name in ("rate_batched", "rate_single"):
            c.execute(f"DROP DATABASE IF EXISTS {name}".encode())
            c.execute(f"CREATE DATABASE {name}".encode())
    root = base.rsplit("/", 1)[0]
    got = rates(f"{root}/rate_batched", f"{root}/rate_single", n)
    print(" ".join(f"{k} {v:,.0f} records/s" for k, v in got.items()))
