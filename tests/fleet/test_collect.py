"""``tracehound collect`` end to end: real nats-server, real PostgreSQL, real logs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec

from agent.fleet.wire import ChainHead, heads_subject, record_id
from tests.fleet.collect_proc import ROOT, Collector, chain_rows, query, wait_for, write_config
from tests.fleet.publish_log import publish_lines, publish_raw, record_of, write_log
from tests.fleet.servers import NatsServer, PostgresServer, free_port


def expected(lines: list[bytes]) -> list[tuple[object, ...]]:
    out = []
    for line in lines:
        record = record_of(line)
        out.append((record.seq, record_id(record), record.hash))
    return out


def count(dsn: str, host: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM chain WHERE host = %s", host)[0][0])  # type: ignore[arg-type]


def test_two_hosts_stored_one_for_one_and_republishing_adds_nothing(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    logs = {
        "web-1": write_log(tmp_path / "a", "web-1", 1500),
        "db.2": write_log(tmp_path / "b", "db.2", 1200),
    }
    collector = Collector(write_config(tmp_path / "c.toml", nats.url, pg_dsn))
    try:
        collector.wait_ready()
        for host, lines in logs.items():
            assert asyncio.run(publish_lines(nats.url, host, lines)) == len(lines)
        for host, lines in logs.items():
            size = len(lines)
            wait_for(lambda h=host, n=size: count(pg_dsn, h) == n, why=f"{host} rows")
            assert chain_rows(pg_dsn, host) == expected(lines)
        records = query(pg_dsn, "SELECT host, count(*) FROM records GROUP BY host ORDER BY host")
        assert records == [("db.2", 1200 + 1), ("web-1", 1500 + 1)]  # + segment.start
        # The stored line is the received one, byte for byte.
        stored = query(pg_dsn, "SELECT line FROM records WHERE host = 'web-1' ORDER BY seq")
        assert [bytes(r[0]) for r in stored] == logs["web-1"]  # type: ignore[arg-type]
        # Query columns from the CloudEvent data.
        row = query(
            pg_dsn, "SELECT pid, comm, path, uid FROM records WHERE host = 'web-1' AND seq = 2"
        )
        assert row == [(1001, "proc1", "/srv/web-1/1", 1)]
        # Everything again, with other message ids (past the duplicate window).
        asyncio.run(publish_lines(nats.url, "web-1", logs["web-1"], id_suffix=":again"))
        asyncio.run(publish_raw(nats.url, "tracehound.heads.web-1", b"{}"))  # a marker behind them
        wait_for(lambda: query(pg_dsn, "SELECT count(*) FROM dead_letters")[0][0] == 1)
        assert chain_rows(pg_dsn, "web-1") == expected(logs["web-1"])
        assert query(pg_dsn, "SELECT count(*) FROM chain_events") == [(0,)]
        hosts = query(pg_dsn, "SELECT host, stored_seq, breaks FROM hosts ORDER BY host")
        assert hosts == [("db.2", 1200, 0), ("web-1", 1500, 0)]
    finally:
        status = collector.stop()
        assert status == 0, collector.lines


def test_killed_mid_batch_and_restarted_loses_nothing(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    lines = write_log(tmp_path / "a", "h1", 6000)
    # Small batches: the kill lands while most of the log is still to write.
    config = write_config(tmp_path / "c.toml", nats.url, pg_dsn, batch_size=100)
    collector = Collector(config)
    collector.wait_ready()
    asyncio.run(publish_lines(nats.url, "h1", lines))
    wait_for(lambda: count(pg_dsn, "h1") > 0, why="first rows")
    collector.stop(signal.SIGKILL)
    assert count(pg_dsn, "h1") < len(lines)  # killed while there was work left
    collector = Collector(config)
    try:
        collector.wait_ready()
        wait_for(lambda: count(pg_dsn, "h1") == len(lines), timeout=120, why="all rows")
        assert chain_rows(pg_dsn, "h1") == expected(lines)
    finally:
        status = collector.stop()
        assert status == 0, collector.lines


def test_postgres_away_for_20_s_loses_nothing(
    tmp_path: Path, nats: NatsServer, pg_own: PostgresServer
) -> None:
    dsn = pg_own.create_database("fleet")
    first = write_log(tmp_path / "a", "h1", 500)
    collector = Collector(write_config(tmp_path / "c.toml", nats.url, dsn))
    try:
        collector.wait_ready()
        asyncio.run(publish_lines(nats.url, "h1", first))
        wait_for(lambda: count(dsn, "h1") == len(first), why="before the stop")
        pg_own.stop("fast")
        lines = write_log(tmp_path / "a", "h1", 2000, start=500)
        asyncio.run(publish_lines(nats.url, "h1", lines[len(first) :]))
        time.sleep(20)
        assert collector.proc.poll() is None  # it waits, it does not exit
        pg_own.start()
        wait_for(lambda: count(dsn, "h1") == len(lines), timeout=90, why="after the restart")
        assert chain_rows(dsn, "h1") == expected(lines)
        assert any("database write failed, retrying" in line for line in collector.lines)
    finally:
        status = collector.stop()
        assert status == 0, collector.lines


def test_tampering_lands_in_chain_events(tmp_path: Path, nats: NatsServer, pg_dsn: str) -> None:
    lines = write_log(tmp_path / "a", "h1", 300)
    port = free_port()
    config = write_config(tmp_path / "c.toml", nats.url, pg_dsn)
    config.write_text(
        config.read_text().replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{port}"')
    )
    collector = Collector(config)
    try:
        collector.wait_ready()

        def alter(record: object, line: bytes) -> bytes:
            if record_of(line).seq == 100:  # one byte of the body changed on its way
                return line.replace(b'"proc', b'"prod', 1)
            return line

        asyncio.run(publish_lines(nats.url, "h1", lines[:150], alter=alter))
        # seq 200 never sent: a gap.
        asyncio.run(publish_lines(nats.url, "h1", lines[150:200] + lines[201:]))
        wait_for(lambda: count(pg_dsn, "h1") == len(lines) - 2, why="rows")
        # The gaps (seq 200 never sent, seq 100 not stored) once the grace (1 s) is over.
        gaps = "SELECT seq FROM chain_events WHERE kind = 'gap' ORDER BY seq"
        wait_for(lambda: len(query(pg_dsn, gaps)) == 2, why="gaps")
        assert query(pg_dsn, gaps) == [(100,), (200,)]
        events = query(pg_dsn, "SELECT seq, kind FROM chain_events ORDER BY id")
        assert (100, "hash") in events
        assert query(pg_dsn, "SELECT count(*) FROM dead_letters WHERE reason LIKE 'hash%%'") == [
            (1,)
        ]
        # The host's log truncated and restarted: a new log from seq 0, other records.
        restarted = write_log(tmp_path / "b", "h1", 50, salt="again")
        asyncio.run(publish_lines(nats.url, "h1", restarted))
        wait_for(
            lambda: any(
                k == "rollback" for _, k in query(pg_dsn, "SELECT seq, kind FROM chain_events")
            ),
            why="rollback",
        )
        rollbacks = query(pg_dsn, "SELECT seq FROM chain_events WHERE kind = 'rollback'")
        assert rollbacks == [(0,)]  # one event for the whole run, at its first seq
        assert any(": rollback: " in line for line in collector.lines)
        # Heads: one that names the stored tip is fine; one moving back is a rollback.
        tip = record_of(lines[-1])
        for seq, digest in ((tip.seq, tip.hash), (10, record_of(lines[10]).hash)):
            head = ChainHead(host="h1", seq=seq, hash=digest, seal=None, time_ns=time.time_ns())
            asyncio.run(publish_raw(nats.url, heads_subject("tracehound", "h1"), head.encode()))
        wait_for(lambda: (10, "rollback") in query(pg_dsn, "SELECT seq, kind FROM chain_events"))
        assert query(pg_dsn, "SELECT head_seq FROM hosts WHERE host = 'h1'") == [(10,)]  # as said
        breaks = query(pg_dsn, "SELECT breaks FROM hosts WHERE host = 'h1'")[0][0]
        assert breaks == len(query(pg_dsn, "SELECT 1 FROM chain_events"))
        # The same counts on /metrics.
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        text = page.decode()
        assert 'tracehound_collect_chain_events_total{kind="rollback"} 2.0' in text
        assert 'tracehound_collect_chain_events_total{kind="gap"} 2.0' in text
        assert 'tracehound_collect_chain_events_total{kind="hash"} 1.0' in text
        assert 'tracehound_collect_dead_letters_total{reason="hash"} 1.0' in text
        assert f"tracehound_collect_records_total {len(lines) - 2}.0" in text
    finally:
        status = collector.stop()
        assert status == 0, collector.lines


def test_bad_input_is_dead_lettered_stripped_or_redacted(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    lines = write_log(tmp_path / "a", "h1", 4, argv=["mysql", "--password=hunter2", "-u", "root"])
    config = write_config(tmp_path / "c.toml", nats.url, pg_dsn, extra='never_store = ["data.uid"]')
    collector = Collector(config)
    try:
        collector.wait_ready()
        # The agent would have redacted it; this host did not: stored redacted anyway.
        raw = b"".join(lines)
        assert b"hunter2" in raw

        def extra_field(record: object, line: bytes) -> bytes:
            if record_of(line).seq == 3:
                return line[:-1] + b',"zz_extra":1}'
            return line

        asyncio.run(publish_lines(nats.url, "h1", lines, alter=extra_field))
        asyncio.run(publish_raw(nats.url, "tracehound.evidence.h1.process.exec.v1", b"\x00garbage"))
        wait_for(lambda: count(pg_dsn, "h1") == len(lines), why="rows")
        wait_for(lambda: query(pg_dsn, "SELECT count(*) FROM dead_letters")[0][0] == 1)
        reason, data = query(pg_dsn, "SELECT reason, data FROM dead_letters")[0]
        assert str(reason).startswith("malformed: not JSON")
        assert bytes(data) == b"\x00garbage"  # type: ignore[arg-type]
        stored = query(
            pg_dsn, "SELECT seq, altered, line FROM records WHERE host = 'h1' ORDER BY seq"
        )
        for seq, altered, line in stored:
            body = msgspec.json.decode(bytes(line))["body"]  # type: ignore[arg-type]
            assert b"hunter2" not in bytes(line)  # type: ignore[arg-type]
            assert b"zz_extra" not in bytes(line)  # type: ignore[arg-type]
            if seq == 0:
                assert altered is None
                continue
            assert "uid" not in body["data"]
            assert "never-store:1" in str(altered)
            if body["type"].endswith("exec.v1"):
                assert body["data"]["argv"] == ["mysql", "--password=***", "-u", "root"]
                assert "redacted:secret-flag" in str(altered)
            if seq == 3:
                assert "unknown-fields:1" in str(altered)
        # The chain keeps the hashes as received (checked before any change).
        assert chain_rows(pg_dsn, "h1") == [(s, i, h) for s, i, h in (expected(lines))]
        assert query(pg_dsn, "SELECT count(*) FROM chain_events") == [(0,)]
    finally:
        status = collector.stop()
        assert status == 0, collector.lines


def run_collect(tmp_path: Path, nats_url: str, dsn: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "bad.toml", nats_url, dsn)
    return subprocess.run(
        [sys.executable, "-m", "agent", "collect", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wrong_dsn_or_nats_url_is_one_line(tmp_path: Path, nats: NatsServer, pg_dsn: str) -> None:
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    for nats_url, dsn, key in (
        (nats.url, dead_pg, "collect.dsn"),
        (nats.url, "not a dsn ===", "collect.dsn"),
        (f"nats://127.0.0.1:{free_port()}", pg_dsn, "collect.nats_url"),
    ):
        result = run_collect(tmp_path, nats_url, dsn)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"tracehound: {key}: "), lines
        assert "Traceback" not in result.stderr


def test_nats_killed_mid_stream_and_restarted_loses_nothing(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    lines = write_log(tmp_path / "a", "h1", 3000)
    collector = Collector(write_config(tmp_path / "c.toml", nats.url, pg_dsn))
    try:
        collector.wait_ready()
        asyncio.run(publish_lines(nats.url, "h1", lines[:1500]))
        wait_for(lambda: count(pg_dsn, "h1") > 0, why="first rows")
        nats.kill()
        time.sleep(2)
        nats.start()
        asyncio.run(publish_lines(nats.url, "h1", lines[1500:]))
        wait_for(lambda: count(pg_dsn, "h1") == len(lines), timeout=120, why="all rows")
        assert chain_rows(pg_dsn, "h1") == expected(lines)
        assert query(pg_dsn, "SELECT count(*) FROM chain_events") == [(0,)]
    finally:
        status = collector.stop()
        assert status == 0, collector.lines
