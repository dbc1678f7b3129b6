"""``tracehound fleet hosts|events|verify`` against a real PostgreSQL holding real logs.

Two hosts' logs are written by the real EvidenceStore (the golden capture's
generator, hostile text included) and stored as the collector stores them
(tests/fleet/stored.py). Every answer is compared with what was inserted,
and ``events`` with a brute-force filter of the same records through
:func:`agent.query.match.matches`.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from agent.cli import main
from agent.evidence.chain import ChainRecord
from agent.evidence.layout import CHECKPOINT
from agent.evidence.types import TYPE_PREFIX
from agent.query.match import event_time_ns, matches, record_paths
from agent.query.parse import parse_filter
from tests.fleet.stored import add_chain_event, log_lines, migrate, store_lines, write_log

ALPHA = "alpha"
HOSTILE = "db\x1b[31m\u202e"  # a host name is the host's to choose
UNSTORED = 10  # records of HOSTILE's log the collector has not stored yet


class Fleet(msgspec.Struct):
    dsn: str
    keys: dict[str, str]
    records: dict[str, list[ChainRecord]]
    heads: dict[str, ChainRecord]
    seen: dict[str, dt.datetime]


@pytest.fixture
def fleet(pg_dsn: str, tmp_path: Path) -> Fleet:
    migrate(pg_dsn)
    now = dt.datetime.now(dt.UTC)
    out = Fleet(dsn=pg_dsn, keys={}, records={}, heads={}, seen={})
    for n, (host, age_s) in enumerate(((ALPHA, 5), (HOSTILE, 100))):
        state = tmp_path / f"host{n}"
        out.keys[host] = write_log(state, host, seed=n + 1)
        lines = log_lines(state)
        head = msgspec.json.decode(lines[-1], type=ChainRecord)
        stored = lines[:-UNSTORED] if host == HOSTILE else lines
        out.seen[host] = now - dt.timedelta(seconds=age_s)
        out.records[host] = store_lines(pg_dsn, host, stored, last_seen=out.seen[host], head=head)
        out.heads[host] = head
    for seq in (7, 9):
        add_chain_event(pg_dsn, HOSTILE, seq, "gap")
    return out


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, bytes]:
    status = main(list(argv))
    captured = capsysbinary.readouterr()
    return status, captured.out, captured.err


# --- hosts -------------------------------------------------------------------------


def test_hosts_json_equals_what_was_inserted(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, _ = run(capsysbinary, "fleet", "hosts", "--dsn", fleet.dsn, "--format", "json")
    assert status == 0
    rows = {row["host"]: row for row in json.loads(out)["hosts"]}
    assert set(rows) == {ALPHA, HOSTILE}
    for host, row in rows.items():
        stored = fleet.records[host]
        head = fleet.heads[host]
        epochs = [r.body["epoch"] for r in stored if r.type == CHECKPOINT]
        assert epochs, "the log must hold seals for the epoch column to mean anything"
        assert (row["head_seq"], row["head_hash"]) == (head.seq, head.hash)
        assert (row["stored_seq"], row["stored_hash"]) == (stored[-1].seq, stored[-1].hash)
        assert row["seal_epoch"] == epochs[-1]
        assert row["lag_records"] == head.seq - stored[-1].seq
        age = (dt.datetime.now(dt.UTC) - fleet.seen[host]).total_seconds()
        assert age - 5 <= row["lag_seconds"] <= age + 1
    assert rows[ALPHA]["lag_records"] == 0
    assert rows[HOSTILE]["lag_records"] == UNSTORED
    assert (rows[ALPHA]["breaks"], rows[HOSTILE]["breaks"]) == (0, 2)


def test_hosts_text_is_one_safe_line_per_host(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, _ = run(capsysbinary, "fleet", "hosts", "--dsn", fleet.dsn)
    assert status == 0
    assert b"\x1b" not in out and "\u202e".encode() not in out
    lines = out.decode().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "HOST"
    alpha = lines[1].split()
    head = fleet.heads[ALPHA]
    assert alpha[0] == ALPHA
    assert alpha[2:4] == [str(head.seq), head.hash[:12]]
    hostile = lines[2].split()
    assert hostile[0] == "db\\033[31m\\342\\200\\256"
    assert hostile[6] == str(UNSTORED) and hostile[8] == "2"


# --- events ------------------------------------------------------------------------


def _all_events(fleet: Fleet) -> list[tuple[int, str, int, dict[str, Any]]]:
    out = []
    for host, records in fleet.records.items():
        for record in records:
            if record.type.startswith(TYPE_PREFIX) and isinstance(record.body, dict):
                out.append((event_time_ns(record.body) or 0, host, record.seq, record.body))
    out.sort(key=lambda item: item[:3])
    return out


def _expected(fleet: Fleet, values: dict[str, list[str]], hosts: tuple[str, ...]) -> list[str]:
    flt = parse_filter(values, now_ns=time.time_ns())
    return [
        body["id"]
        for _, host, _, body in _all_events(fleet)
        if (not hosts or host in hosts) and matches(flt, body, None)
    ]


def _first(fleet: Fleet, pick: Any) -> Any:
    for _, _, _, body in _all_events(fleet):
        found = pick(body["data"]) if isinstance(body.get("data"), dict) else None
        if found is not None:
            return found
    raise AssertionError("the logs hold no record to pick a value from")


def _filter_cases(fleet: Fleet) -> list[tuple[dict[str, list[str]], tuple[str, ...]]]:
    times = sorted(t for t, _, _, _ in _all_events(fleet))
    mid, late = times[len(times) // 3], times[2 * len(times) // 3]

    def at(ns: int) -> str:
        seconds, frac = divmod(ns, 10**9)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"

    pid = _first(fleet, lambda d: d.get("pid"))
    comm = _first(fleet, lambda d: d.get("comm") if "comm" in d.get("escaped", ()) else None)
    plain_comm = _first(fleet, lambda d: d.get("comm") if not d.get("escaped") else None)
    uid = _first(fleet, lambda d: d.get("uid") if d.get("uid") else None)
    container = _first(fleet, lambda d: (d.get("container") or {}).get("id"))
    renamed = _first(fleet, lambda d: d.get("abs_path2") or d.get("path2"))
    remote = _first(
        fleet,
        lambda d: (
            (d.get("endpoint") or {}).get("address")
            if (d.get("endpoint") or {}).get("family") == "ipv4"
            else None
        ),
    )
    from agent.safetext import unescape

    return [
        ({}, ()),
        ({}, (HOSTILE,)),
        ({"type": ["file"]}, ()),
        ({"type": ["process.exec,network"]}, (ALPHA,)),
        ({"since": [at(mid)]}, ()),
        ({"since": [at(mid)], "until": [at(late)]}, ()),
        ({"until": [at(mid)]}, (ALPHA, HOSTILE)),
        ({"pid": [str(pid)]}, ()),
        ({"comm": [plain_comm]}, ()),
        ({"comm": [unescape(comm)]}, ()),
        ({"uid": [str(uid)]}, ()),
        ({"container": [container[:12]]}, ()),
        ({"container": [container]}, (ALPHA,)),
        ({"path": ["/etc/*"]}, ()),
        ({"path": ["*"]}, ()),
        ({"path": [renamed[: len(renamed) // 2] + "*"]}, ()),
        ({"path": [renamed]}, ()),
        ({"remote": [remote]}, ()),
        ({"remote": ["0.0.0.0/0"]}, ()),
        ({"remote": ["::/0"]}, ()),
        ({"type": ["file"], "since": [at(mid)], "uid": [str(uid)]}, ()),
    ]


def _argv(values: dict[str, list[str]], hosts: tuple[str, ...]) -> list[str]:
    argv = [arg for host in hosts for arg in ("--host", host)]
    for name, given in values.items():
        argv += [f"--{name}", given[0]]
    return argv


def test_events_equal_a_brute_force_filter_of_the_same_records(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    nonempty = 0
    for values, hosts in _filter_cases(fleet):
        expected = _expected(fleet, values, hosts)
        status, out, err = run(
            capsysbinary, "fleet", "events", "--dsn", fleet.dsn, *_argv(values, hosts)
        )
        assert status == 0, err
        got = [json.loads(line)["id"] for line in out.splitlines()]
        assert got == expected, (values, hosts)
        nonempty += bool(expected)
        assert b"\x1b" not in out
    assert nonempty >= 18  # the cases pick values from the logs: nearly all find something


def test_the_path_filter_finds_a_rename_by_its_new_name(fleet: Fleet) -> None:
    renamed = _first(fleet, lambda d: d.get("abs_path2"))
    paths = [
        list(record_paths(body["data"])) for _, _, _, body in _all_events(fleet) if body["data"]
    ]
    assert any(p.index(renamed) > 0 for p in paths if renamed in p)  # found as a second path


def test_events_limit_and_compact(fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    expected = _expected(fleet, {"type": ["file"]}, ())
    status, out, _ = run(
        capsysbinary, "fleet", "events", "--dsn", fleet.dsn, "--type", "file", "--limit", "7"
    )
    assert status == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == expected[:7]
    status, out, _ = run(
        capsysbinary, "fleet", "events", "--dsn", fleet.dsn, "--format", "compact", "--limit", "40"
    )
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 40
    assert b"\x1b" not in out and "\u202e".encode() not in out
    hosts = {line.split(b"  ", 1)[0] for line in lines}
    assert hosts <= {ALPHA.encode(), b"db\\033[31m\\342\\200\\256"}


def test_events_refuses_filters_that_need_a_whole_log(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, err = run(capsysbinary, "fleet", "events", "--dsn", fleet.dsn, "--exe", "/bin/x")
    assert status == 2 and out == b""
    assert err.count(b"\n") == 1 and err.startswith(b"tracehound: --exe: ")


# --- verify ------------------------------------------------------------------------


def _verify(
    capsysbinary: pytest.CaptureFixture[bytes], fleet: Fleet, *extra: str
) -> tuple[int, str]:
    status, out, err = run(capsysbinary, "fleet", "verify", "--dsn", fleet.dsn, *extra)
    assert err == b"" or status == 2, err
    assert out.count(b"\n") <= 1
    return status, out.decode()


def test_verify_passes_on_an_intact_copy(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    for host, records in fleet.records.items():
        status, line = _verify(capsysbinary, fleet, "--host", host, "--key", fleet.keys[host])
        seals = sum(r.type == CHECKPOINT for r in records)
        assert status == 0, line
        assert line.startswith("OK: host ")
        assert f"{len(records)} records, seq 0 to {records[-1].seq}" in line
        assert f"{seals} seals checked" in line
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA)
    assert status == 0 and "seals NOT checked" in line


def _event_seq(fleet: Fleet, host: str, nth: int) -> int:
    return [r.seq for r in fleet.records[host] if r.type.startswith(TYPE_PREFIX)][nth]


def test_verify_fails_on_a_row_altered(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    seq = _event_seq(fleet, ALPHA, 30)
    with psycopg.connect(fleet.dsn) as conn:
        (line,) = conn.execute(
            "SELECT line FROM records WHERE host = %s AND seq = %s", (ALPHA, seq)
        ).fetchone()
        changed = bytes(line).replace(b'"uid":', b'"uid":1', 1)
        assert changed != bytes(line)
        conn.execute(
            "UPDATE records SET line = %s WHERE host = %s AND seq = %s", (changed, ALPHA, seq)
        )
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA)
    assert status == 1
    assert line.startswith(f"BROKEN: host {ALPHA} at seq {seq}: ")


def test_verify_fails_on_a_row_deleted(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    seq = _event_seq(fleet, ALPHA, 50)
    with psycopg.connect(fleet.dsn) as conn:
        for table in ("chain", "records"):
            conn.execute(f"DELETE FROM {table} WHERE host = %s AND seq = %s", (ALPHA, seq))
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA)
    assert status == 1
    assert line.startswith(f"BROKEN: host {ALPHA} at seq {seq}: gap: seq {seq} not in")


def test_verify_fails_with_a_wrong_key(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA, "--key", fleet.keys[HOSTILE])
    assert status == 1
    first_seal = next(r for r in fleet.records[ALPHA] if r.type == CHECKPOINT)
    assert line.startswith(f"BROKEN: host {ALPHA} at seq 0: checkpoint: seal epoch ")
    assert first_seal.seq > 0


def test_verify_takes_a_line_the_collector_altered_by_its_chain_row(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    seq = _event_seq(fleet, ALPHA, 10)
    with psycopg.connect(fleet.dsn) as conn:
        conn.execute(
            "UPDATE records SET line = %s, altered = 'never_store: data.comm'"
            " WHERE host = %s AND seq = %s",
            (b'{"stripped":true}', ALPHA, seq),
        )
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA, "--key", fleet.keys[ALPHA])
    assert status == 0, line
    assert "1 rows not re-hashed" in line
    with psycopg.connect(fleet.dsn) as conn:
        conn.execute(
            "UPDATE chain SET hash = %s WHERE host = %s AND seq = %s", ("0" * 64, ALPHA, seq)
        )
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA, "--key", fleet.keys[ALPHA])
    assert status == 1
    assert line.startswith(f"BROKEN: host {ALPHA} at seq {seq + 1}: link: ")


def test_verify_of_a_published_head_the_rows_contradict(
    fleet: Fleet, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    seq = fleet.records[ALPHA][-5].seq
    with psycopg.connect(fleet.dsn) as conn:
        conn.execute("UPDATE hosts SET head_seq = %s WHERE host = %s", (seq, ALPHA))
    status, line = _verify(capsysbinary, fleet, "--host", ALPHA)
    assert status == 1
    assert line.startswith(f"BROKEN: host {ALPHA} at seq {seq}: checkpoint: ")


# --- bad input ---------------------------------------------------------------------


def _one_line(status: int, err: bytes, want_status: int, start: bytes) -> None:
    assert status == want_status, err
    assert err.count(b"\n") == 1 and err.startswith(start), err
    assert b"Traceback" not in err


def test_bad_dsn_and_bad_arguments_are_one_line(
    pg_dsn: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    refused = "postgresql://postgres@127.0.0.1:1/nowhere"
    status, _, err = run(capsysbinary, "fleet", "hosts", "--dsn", refused)
    _one_line(status, err, 1, b"tracehound: fleet: cannot connect to PostgreSQL: ")
    status, _, err = run(capsysbinary, "fleet", "verify", "--host", "a", "--dsn", refused)
    _one_line(status, err, 2, b"tracehound: fleet: cannot connect to PostgreSQL: ")
    status, _, err = run(capsysbinary, "fleet", "events", "--dsn", "password=s3cret nonsense")
    _one_line(status, err, 1, b"tracehound: fleet: cannot connect to PostgreSQL: ")
    assert b"s3cret" not in err
    status, _, err = run(capsysbinary, "fleet", "events", "--dsn", refused, "--since", "soon")
    _one_line(status, err, 2, b"tracehound: --since: expected a duration")  # before connecting
    status, _, err = run(capsysbinary, "fleet", "hosts")
    _one_line(status, err, 2, b"tracehound: fleet: expected --dsn DSN or --config FILE")
    status, _, err = run(capsysbinary, "fleet", "hosts", "--dsn", pg_dsn)  # no schema
    _one_line(status, err, 1, b"tracehound: fleet: the database has no fleet schema")
    config = tmp_path / "tracehound.toml"
    config.write_text(f'[collect]\ndsn = "{pg_dsn}"\n')
    migrate(pg_dsn)
    status, _, err = run(capsysbinary, "fleet", "verify", "--config", str(config), "--host", "x")
    _one_line(status, err, 2, b"tracehound: --host: no host x in the database")
    status, _, err = run(capsysbinary, "fleet", "verify", "--host", "x", "--dsn", pg_dsn,
                         "--key", "thk1-00")  # fmt: skip
    _one_line(status, err, 2, b"tracehound: --key: ")
    status, out, err = run(capsysbinary, "fleet", "hosts", "--config", str(config))
    assert (status, err) == (0, b"") and out.decode().split() == ["HOST", "LAST", "SEEN", "HEAD",
        "SEQ", "HEAD", "HASH", "EPOCH", "STORED", "LAG", "REC", "LAG", "S", "BREAKS"]  # fmt: skip


def test_the_command_line_itself(fleet: Fleet) -> None:
    """Once through the real entry point: a process, its exit status and stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "agent", "fleet", "events", "--dsn", fleet.dsn, "--host", ALPHA,
         "--type", "process.exec", "--limit", "3"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = _expected(fleet, {"type": ["process.exec"]}, (ALPHA,))[:3]
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == expected
