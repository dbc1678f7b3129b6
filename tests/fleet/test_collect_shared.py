"""Two collectors on one durable consumer; seals checked with the host's key."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.evidence.keys import create_key
from agent.evidence.seal import encode_key, keygen
from tests.fleet.collect_proc import Collector, chain_rows, query, wait_for, write_config
from tests.fleet.publish_log import publish_lines, write_log
from tests.fleet.servers import NatsServer
from tests.fleet.test_collect import count, expected


def test_two_collectors_share_the_work_and_write_each_row_once(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    logs = {host: write_log(tmp_path / host, host, 3000) for host in ("a", "b")}
    config = write_config(tmp_path / "c.toml", nats.url, pg_dsn, batch_size=100)
    first = Collector(config)
    first.wait_ready()
    second = Collector(config)
    try:
        second.wait_ready()

        async def both() -> None:
            await asyncio.gather(*(publish_lines(nats.url, h, lines) for h, lines in logs.items()))

        asyncio.run(both())
        for host, lines in logs.items():
            size = len(lines)
            wait_for(lambda h=host, n=size: count(pg_dsn, h) == n, why=f"{host} rows")
            assert chain_rows(pg_dsn, host) == expected(lines)
        records = query(pg_dsn, "SELECT count(*), count(DISTINCT (host, seq)) FROM records")
        assert records == [(6002, 6002)]
        # The chain check saw each other's rows: no false gap or link under sharing.
        assert query(pg_dsn, "SELECT kind, count(*) FROM chain_events GROUP BY kind") == []
    finally:
        assert first.stop() == 0, first.lines
        assert second.stop() == 0, second.lines
    # Both did some of it (batches of 100 at most, 60 of them).
    assert all(any("collecting" in line for line in c.lines) for c in (first, second))


def test_seals_checked_with_the_key(tmp_path: Path, nats: NatsServer, pg_dsn: str) -> None:
    key = create_key(tmp_path / "good")
    good = write_log(tmp_path / "good", "good", 200, checkpoint_every=50)
    create_key(tmp_path / "forged")
    forged = write_log(tmp_path / "forged", "forged", 200, checkpoint_every=50)
    assert sum(b'"type":"checkpoint"' in line for line in good) >= 4
    wrong = encode_key(keygen())  # "forged" is checked with a key that is not its own
    extra = f'[collect.verify_keys]\ngood = "{key}"\nforged = "{wrong}"'
    config = write_config(tmp_path / "c.toml", nats.url, pg_dsn, extra=extra)
    collector = Collector(config)
    try:
        collector.wait_ready()
        asyncio.run(publish_lines(nats.url, "good", good))
        asyncio.run(publish_lines(nats.url, "forged", forged))
        wait_for(lambda: count(pg_dsn, "forged") == len(forged), why="rows")
        events = query(pg_dsn, "SELECT host, kind FROM chain_events ORDER BY id")
        assert ("forged", "seal") in events
        assert all(host == "forged" for host, _ in events)
        sealed = query(pg_dsn, "SELECT seal_epoch FROM hosts WHERE host = 'good'")[0][0]
        assert isinstance(sealed, int) and sealed >= 3
    finally:
        assert collector.stop() == 0, collector.lines
