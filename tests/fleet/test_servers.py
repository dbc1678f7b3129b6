"""The fleet tests' servers start, answer, and come back after a kill or a stop."""

from __future__ import annotations

import asyncio

import nats as nats_client
import psycopg

from tests.fleet.servers import NatsServer, PostgresServer


def test_postgres_answers_and_keeps_data_across_a_restart(pg_own: PostgresServer) -> None:
    dsn = pg_own.create_database("survives")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (41), (1)")
    pg_own.stop()
    pg_own.start()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT sum(x) FROM t").fetchone()
    assert row == (42,)


def test_jetstream_keeps_messages_across_a_kill(nats: NatsServer) -> None:
    async def publish() -> int:
        nc = await nats_client.connect(nats.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.x", b"hello", headers={"Nats-Msg-Id": "one"})
        await nc.close()
        return ack.seq

    async def fetch() -> list[bytes]:
        nc = await nats_client.connect(nats.url)
        js = nc.jetstream()
        sub = await js.pull_subscribe("t.>", durable="d")
        msgs = await sub.fetch(1, timeout=5)
        await nc.close()
        return [m.data for m in msgs]

    assert asyncio.run(publish()) == 1
    nats.kill()
    nats.start()
    assert asyncio.run(fetch()) == [b"hello"]
