"""The whole fleet path with real parts: two capture daemons (two state dirs,
two host names) publishing through a real nats-server, one real
``tracehound collect`` into a real PostgreSQL, and ``tracehound fleet``
reading it back. Faults on the way: nats-server killed mid-stream and
started again, the collector killed (SIGKILL) and started again, one agent
restarted. Afterwards, for each host, the rows equal the log's records one
for one (seq, id, hash, and the line's bytes), with no duplicate and no
chain event; and ``fleet events`` gives what a brute force over the logs
gives, so the collector's columns and the reader's pushdown agree.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import msgspec

from agent.evidence.chain import ChainRecord
from agent.fleet.cursor import CURSOR_NAME
from agent.fleet.wire import record_id
from tests.conftest import TRACEHOUND, require_kernel
from tests.fleet.collect_proc import Collector, query, wait_for, write_config
from tests.fleet.pubtools import log_lines
from tests.fleet.servers import NatsServer
from tests.harness import Daemon
from tests.query.brute import brute_events

PREFIX = "tracehound"  # the default, as the collector's config leaves it
HOSTS = ("alpha", "beta")


def _fleet(url: str, host: str) -> str:
    return f"""
[fleet]
enabled = true
nats_url = "{url}"
host = "{host}"
heads_interval_s = 0.5
"""


def _work(times: int) -> None:
    for _ in range(times):
        subprocess.run(["/bin/true"], check=True)


def _log(state: Path) -> list[tuple[int, str, str, bytes]]:
    out = []
    for line in log_lines(state):
        record = msgspec.json.decode(line, type=ChainRecord)
        out.append((record.seq, record_id(record), record.hash, line))
    return out


def _stored(dsn: str, host: str) -> list[tuple[int, str, str, bytes]]:
    rows = query(
        dsn,
        "SELECT c.seq, c.id, c.hash, r.line FROM chain c JOIN records r"
        " ON r.host = c.host AND r.seq = c.seq WHERE c.host = %s ORDER BY c.seq",
        host,
    )
    return [(int(s), str(i), str(h), bytes(line)) for s, i, h, line in rows]  # type: ignore[call-overload]


def _publish_rest(config: Path, state: Path) -> None:
    """What a stopped daemon committed last (its stop records): the
    standalone publisher sends it, from the cursor the daemon's left."""
    last = _log(state)[-1][0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.fleet.publisher", "--config", str(config),
         "--state-dir", str(state)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: json.loads((state / CURSOR_NAME).read_bytes())["seq"] >= last,
            timeout=60,
            why=f"the publisher to reach seq {last} of {state}",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_two_agents_one_collector_through_faults_rows_equal_the_logs(
    tmp_path: Path, nats: NatsServer, pg_dsn: str
) -> None:
    require_kernel()
    # A grace well above the wait for a killed collector's messages to come
    # back (ack_wait_s, 2 s here for speed): no false gap is allowed below.
    collect_config = write_config(
        tmp_path / "collect.toml", nats.url, pg_dsn, gap_grace_s=30, ack_wait_s=2
    )
    collector = Collector(collect_config)
    collector.wait_ready()  # it made the stream and the durable consumer
    for host in HOSTS:
        (tmp_path / host).mkdir()
    daemons = {host: Daemon(tmp_path / host) for host in HOSTS}
    try:
        for host, daemon in daemons.items():
            daemon.start(config=daemon.config_text() + _fleet(nats.url, host))
        _work(10)
        wait_for(lambda: all(_stored(pg_dsn, h) for h in HOSTS), why="both hosts stored")

        nats.kill()  # mid-stream: both agents keep committing meanwhile
        _work(10)
        nats.start()
        _work(5)

        assert collector.stop(signal.SIGKILL) != 0  # mid-batch, no goodbye
        _work(5)
        collector = Collector(collect_config)
        collector.wait_ready()

        alpha = daemons["alpha"]
        assert alpha.stop() == 0  # the agent restarted: its publisher resumes
        alpha.start(config=alpha.config_text() + _fleet(nats.url, "alpha"))
        _work(5)

        for host, daemon in daemons.items():
            assert daemon.stop() == 0
            daemon.config.write_text(daemon.config_text() + _fleet(nats.url, host))
            _publish_rest(daemon.config, daemon.state)
        for host, daemon in daemons.items():
            want = _log(daemon.state)
            wait_for(
                lambda: len(_stored(pg_dsn, host)) >= len(want),  # noqa: B023
                timeout=90,
                why=f"{host}: {len(want)} records stored",
            )
            assert _stored(pg_dsn, host) == want, host
        assert query(pg_dsn, "SELECT count(*) FROM chain") == [
            (sum(len(_log(d.state)) for d in daemons.values()),)
        ]
        assert query(pg_dsn, "SELECT host, seq, kind, detail FROM chain_events") == []
        assert query(pg_dsn, "SELECT count(*) FROM dead_letters") == [(0,)]
    finally:
        collector.stop()
        for daemon in daemons.values():
            daemon.close()

    # The reader agrees with the writer: fleet events over the stored rows
    # is the brute force over the two logs.
    got = subprocess.run(
        [*TRACEHOUND, "fleet", "events", "--dsn", pg_dsn, "--type", "process.exec",
         "--path", "/usr/bin/*", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    found = sorted(json.loads(line)["id"] for line in got.stdout.splitlines())
    from agent.query.parse import parse_filter

    flt = parse_filter({"type": ["process.exec"], "path": ["/usr/bin/*"]}, now_ns=0)
    expected = sorted(
        event["id"] for daemon in daemons.values() for _, event in brute_events(daemon.state, flt)
    )
    assert len(expected) >= 2 * 35  # every /bin/true of the workload, on both hosts
    assert found == expected
