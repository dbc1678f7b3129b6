"""The publisher against a real nats-server: every committed record once, in order, resumable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgspec

from agent.evidence.chain import ChainRecord
from agent.evidence.store import EvidenceStore
from agent.fleet.cursor import CURSOR_NAME
from tests.fleet.pubtools import (
    PublisherProcess,
    expected,
    fleet_config,
    log_lines,
    make_stream,
    stream_count,
    stream_heads,
    stream_messages,
    wait_for,
    write_log,
)
from tests.fleet.servers import NatsServer


def _publisher(tmp_path: Path, nats: NatsServer, state: Path, **kw: str) -> PublisherProcess:
    config = fleet_config(tmp_path / "tracehound.toml", nats.url, **kw)
    return PublisherProcess(config, state, tmp_path / "publisher.stderr")


def _caught_up(pub: PublisherProcess, state: Path) -> bool:
    head = msgspec.json.decode(log_lines(state)[-1], type=ChainRecord).seq
    last = pub.last()
    return last.get("cursor") == head and last.get("lag_records") == 0


def test_every_record_arrives_once_in_order_with_its_id_and_the_head(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 1200)
    make_stream(nats.url)
    pub = _publisher(tmp_path, nats, state)
    pub.start()
    try:
        wait_for(lambda: _caught_up(pub, state), "the publisher to catch up")
        want = expected(state)
        wait_for(lambda: len(stream_messages(nats.url)) >= len(want), "the messages")
        assert stream_messages(nats.url) == want
        last = msgspec.json.decode(log_lines(state)[-1], type=ChainRecord)
        wait_for(lambda: any(h["seq"] == last.seq for h in stream_heads(nats.url)), "a head")
        head = next(h for h in stream_heads(nats.url) if h["seq"] == last.seq)
        assert head["subject"] == "th.heads.host-a"
        assert head["hash"] == last.hash and head["host"] == "host-a"
        assert head["seal"] is None  # this log has no sealing key
        assert pub.last()["published"] == len(want)
        assert pub.last()["lag_seconds"] == 0
        # new records committed while it runs are followed
        write_log(state, 30, start=1200)
        wait_for(lambda: _caught_up(pub, state), "the publisher to follow new records")
        wait_for(lambda: len(stream_messages(nats.url)) >= len(expected(state)), "new ones")
        assert stream_messages(nats.url) == expected(state)
        assert pub.stop() == 0
    finally:
        pub.kill()
    saved = json.loads((state / CURSOR_NAME).read_bytes())
    last = msgspec.json.decode(log_lines(state)[-1], type=ChainRecord)
    assert saved == {"seq": last.seq, "hash": last.hash}
    assert stat.S_IMODE(os.stat(state / CURSOR_NAME).st_mode) == 0o600


def test_nats_killed_mid_stream_and_restarted_gives_one_message_per_record(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 20000)
    make_stream(nats.url)
    pub = _publisher(tmp_path, nats, state)
    pub.start()
    try:
        wait_for(lambda: stream_count(nats.url) > 2000, "part of the log in the stream")
        nats.kill()
        wait_for(lambda: pub.last().get("connected") is False, "the publisher to notice")
        assert pub.last()["lag_records"] > 0  # killed mid-stream, not after
        nats.start()
        wait_for(lambda: _caught_up(pub, state), "the publisher to catch up", timeout=60)
        want = expected(state)
        assert stream_messages(nats.url) == want
        assert pub.last()["reconnects"] >= 1 and pub.last()["errors"] >= 1
        outages = [line for line in pub.stderr().splitlines() if "trying again" in line]
        assert len(outages) == 1, pub.stderr()  # one outage, said once
        assert "acknowledges again" in pub.stderr()
    finally:
        pub.kill()


def test_publisher_killed_and_restarted_resumes_from_the_cursor(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 20000)
    make_stream(nats.url)
    pub = _publisher(tmp_path, nats, state)
    pub.start()
    try:
        wait_for(
            lambda: (state / CURSOR_NAME).exists() and stream_count(nats.url) > 3000, "a cursor"
        )
        pub.kill()
        saved = json.loads((state / CURSOR_NAME).read_bytes())["seq"]
        total = len(log_lines(state))
        before = len(stream_messages(nats.url))  # what the first one got stored
        assert 0 < saved < total - 1 and before >= saved + 1
        again = _publisher(tmp_path, nats, state)
        again.start()
        try:
            wait_for(lambda: _caught_up(again, state), "the second publisher to catch up")
            assert stream_messages(nats.url) == expected(state)
            # exactly the records after the cursor were sent again; those the
            # first one had stored past its last save were dropped as duplicates
            assert again.last()["published"] == total - 1 - saved
            assert again.last()["duplicates"] == before - (saved + 1)
        finally:
            again.kill()
    finally:
        pub.kill()


def test_nats_away_at_start_is_said_once_and_retried_until_it_comes(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 300)
    make_stream(nats.url)
    nats.stop()
    pub = _publisher(tmp_path, nats, state)
    pub.start()
    try:
        wait_for(lambda: pub.last().get("lag_seconds", 0) >= 2.0, "the lag to grow", timeout=30)
        status = pub.last()
        assert status["connected"] is False and status["published"] == 0
        assert status["lag_records"] == len(log_lines(state))  # nothing acknowledged yet
        assert pub.proc is not None and pub.proc.poll() is None  # retrying, not dead
        said = [line for line in pub.stderr().splitlines() if "cannot reach NATS" in line]
        assert len(said) == 1 and nats.url in said[0]  # once per outage, not per try
        nats.start()
        wait_for(lambda: _caught_up(pub, state), "the publisher once NATS is back")
        assert stream_messages(nats.url) == expected(state)
        said = [line for line in pub.stderr().splitlines() if "acknowledges again" in line]
        assert len(said) == 1 and "from seq 0" in said[0]
    finally:
        pub.kill()


def test_a_record_over_max_payload_is_passed_over_and_counted(
    tmp_path: Path, nats: NatsServer
) -> None:
    state = tmp_path / "state"
    write_log(state, 5)
    with EvidenceStore(state, fsync="never") as store:
        big = store.append("note", {"blob": "x" * (1 << 20)})  # over the 1 MiB default
        store.commit()
    write_log(state, 5, start=5)
    make_stream(nats.url)
    pub = _publisher(tmp_path, nats, state)
    pub.start()
    try:
        wait_for(lambda: _caught_up(pub, state), "the publisher to pass it over")
        want = [m for m in expected(state) if f'"seq":{big.seq},'.encode() not in m[2]]
        assert len(want) == len(log_lines(state)) - 1
        assert stream_messages(nats.url) == want
        assert pub.last()["oversize"] == 1
        said = [line for line in pub.stderr().splitlines() if "max_payload" in line]
        assert len(said) == 1 and f"record {big.seq} " in said[0]
    finally:
        pub.kill()
