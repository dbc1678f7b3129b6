"""End to end: local producers write into the record (``POST /v1/events`` and
``tracehound mark``), against a real daemon, with real curl as real peers.

One daemon serves the module. Each test posts as a uid of its own (the
rate limit is per uid), so none depends on another having run; counts
are compared with their value before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.log_reader import find_event, iter_events
from agent.evidence.record_types import TYPE_APP, TYPE_EXEC
from tests import harness
from tests.conftest import TRACEHOUND, require_kernel
from tests.harness import wait_until

IDENTIFIED = 4300  # a producer uid, for the identity test
FLOODER = 4301  # a producer uid, for the rate test
SENDER = 4302  # a producer uid, for the refused bodies
READER = 4303  # may read (allow_uids), not append
STRANGER = 4399  # neither
BURST = 30
RATE = 0.5
TOKEN = "ghp_" + "Pr0duc3rEndToEnd0123456789abcdefXYZW"[:36]
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")


class Daemon(harness.Daemon):
    api_settings = f"""mode = "0666"
idle_timeout_s = 5.0
allow_uids = [{READER}]
producer_uids = [{IDENTIFIED}, {FLOODER}, {SENDER}]
producer_burst = {BURST}
producer_rate = {RATE}"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_kernel()
    d = Daemon(tmp_path_factory.mktemp("producers"))
    try:
        d.start()
        yield d
    finally:
        d.close()


def as_uid(uid: int, *command: str) -> list[str]:
    """``command`` run as ``uid`` (its gid the same, no other groups)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]


def post(
    daemon: Daemon, body: bytes | str, *, uid: int = 0, args: tuple[str, ...] = ()
) -> tuple[int, dict[str, Any], int]:
    """POST ``body`` with curl as ``uid``: the status, the JSON answer and
    curl's pid (a shell prints its pid, then becomes curl)."""
    data = body if isinstance(body, str) else body.decode()
    script = 'echo $$; exec "$@"'
    curl = ["curl", "-sS", "--unix-socket", str(daemon.sock), "-H", "Content-Type: application/json",
            "--data-binary", data, *args, "-w", "\n%{http_code}", "http://localhost/v1/events"]  # fmt: skip
    command = ["sh", "-c", script, "sh", *curl]
    result = subprocess.run(
        as_uid(uid, *command) if uid else command, capture_output=True, text=True, timeout=30
    )
    pid, _, rest = result.stdout.partition("\n")
    answer, _, code = rest.rpartition("\n")
    assert code.isdigit(), result
    return int(code), json.loads(answer) if answer else {}, int(pid)


def logged(daemon: Daemon, record_id: str) -> dict[str, Any]:
    """The record with ``record_id``, once the log has it."""
    found: list[dict[str, Any]] = []

    def in_log() -> bool:
        event = find_event(daemon.state, record_id)
        if event is not None:
            found.append(event.event)
        return event is not None

    wait_until(in_log, f"record {record_id} in the log", timeout=20)
    return found[0]


def app_records(daemon: Daemon, uid: int) -> list[dict[str, Any]]:
    return [
        e.event
        for e in iter_events(daemon.state)
        if e.event["type"] == TYPE_APP and e.event["data"]["uid"] == uid
    ]


def producers(daemon: Daemon) -> dict[str, int]:
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    return dict(stats["api"]["producers"])


def test_an_event_from_another_uid_is_in_the_chain_with_its_identity(
    kernel: None, daemon: Daemon
) -> None:
    body = {"message": "deploy v1.2 started", "kind": "deploy.start", "data": {"version": "1.2"}}
    before = time.time_ns()
    status, answer, pid = post(daemon, json.dumps(body), uid=IDENTIFIED)
    assert status == 202, answer
    assert answer["type"] == TYPE_APP and len(answer["id"]) == 32
    record = logged(daemon, answer["id"])
    data = record["data"]
    # Who: the kernel's SO_PEERCRED, and the program read from /proc.
    assert (data["pid"], data["uid"], data["gid"]) == (pid, IDENTIFIED, IDENTIFIED)
    assert (data["exe"], data["comm"], data["peer_gone"]) == (CURL, "curl", False)
    # What, in its words; when, on the records' clock.
    assert (data["kind"], data["message"], data["data"]) == (
        "deploy.start", "deploy v1.2 started", {"version": "1.2"},
    )  # fmt: skip
    assert record["time"] == answer["time"] and record["subject"] == f"pid/{pid}"
    when = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
    assert before / 1e9 - 1 <= when <= time.time() + 1

    # Beside the kernel's records: the exec of that same process.
    def curl_exec() -> bool:
        return any(
            e.event["type"] == TYPE_EXEC
            and e.event["data"]["pid"] == pid
            and e.event["data"]["filename"].endswith("curl")
            for e in iter_events(daemon.state)
        )

    wait_until(curl_exec, "the exec record of the producer's process")
    # In the chain: a record of its own type, and the chain verifies.
    chained = [r for r in harness.records(daemon.state) if r["body"].get("id") == answer["id"]]
    assert len(chained) == 1 and chained[0]["type"] == TYPE_APP
    verified = daemon.get_json("/v1/verify")
    assert verified["ok"] is True, verified


def test_a_peer_that_exited_is_marked_not_guessed(
    kernel: None, daemon: Daemon, system_python: str
) -> None:
    """The connecting process exits before its request is sent (its child
    holds the socket): the record has its pid, marked gone, and no program."""
    script = f"""
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect({str(daemon.sock)!r})
parent = os.getpid()
if os.fork():
    os._exit(0)
while os.getppid() == parent:
    time.sleep(0.01)
time.sleep(0.2)
body = b'{{"message": "orphaned"}}'
s.sendall(b"POST /v1/events HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n"
          b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
answer = b""
while chunk := s.recv(65536):
    answer += chunk
print(parent)
print(answer.decode().rpartition("\\r\\n\\r\\n")[2])
"""
    result = subprocess.run(
        [system_python, "-c", script], capture_output=True, text=True, timeout=30
    )
    parent, answer = result.stdout.strip().split("\n", 1)
    reply = json.loads(answer)
    data = logged(daemon, reply["id"])["data"]
    assert data["pid"] == int(parent)
    assert (data["peer_gone"], data["exe"], data["comm"]) == (True, "", "")
    assert data["message"] == "orphaned"


def test_who_may_append_and_who_may_read(kernel: None, daemon: Daemon) -> None:
    before = producers(daemon)
    body = '{"message": "not mine to say"}'
    # Neither: refused at connect, told which settings would let it in.
    status, answer, _ = post(daemon, body, uid=STRANGER)
    assert (status, answer["detail"]) == (
        403,
        f"uid {STRANGER} gid {STRANGER} may not use this API"
        " (api.allow_uids/gids; to append events, api.producer_uids/gids)",
    )
    # A reader may read, not append.
    status, answer, _ = post(daemon, body, uid=READER)
    assert (status, answer["detail"]) == (
        403,
        f"uid {READER} gid {READER} may not append events (api.producer_uids/gids)",
    )
    # A producer may append, not read.
    read = subprocess.run(
        as_uid(IDENTIFIED, "curl", "-sS", "--unix-socket", str(daemon.sock),
               "-w", "\n%{http_code}", "http://localhost/v1/stats"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    answer, _, code = read.stdout.rpartition("\n")
    assert code == "403" and "may only append events here" in json.loads(answer)["detail"]
    after = producers(daemon)
    assert after.get("forbidden", 0) - before.get("forbidden", 0) == 1
    assert not app_records(daemon, STRANGER) and not app_records(daemon, READER)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ("deploy v1.2 started", 400, "body: not JSON"),
        ('{"message": 12}', 400, "Expected `str`, got `int` - at `$.message`"),
        ('{"message": "x", "level": "info"}', 400, "unknown field `level`"),
        ('{"message": "x", "data": {"load": 0.5}}', 400, "$.data.load: numbers with a fraction"),
        ('{"message": "x", "kind": "Not A Name"}', 400, "$.kind: expected a name"),
        ('{"message": "' + "x" * 5000 + '"}', 400, "$.message: expected at most 4096"),
        ('{"message": "' + "x" * 17000 + '"}', 413, "over the 16384-byte limit"),
        ("", 400, "got nothing"),
    ],
)
def test_bad_bodies_are_4xx_with_a_one_line_reason(
    kernel: None, daemon: Daemon, body: str, status: int, says: str
) -> None:
    before = len(app_records(daemon, SENDER))
    got, answer, _ = post(daemon, body, uid=SENDER)
    assert got == status, answer
    assert says in answer["detail"] and "\n" not in answer["detail"]
    assert len(app_records(daemon, SENDER)) == before


def test_a_large_body_is_taken_at_once_after_100_continue(kernel: None, daemon: Daemon) -> None:
    """curl asks ``Expect: 100-continue`` for bodies over 1 KiB and would wait
    a second for an answer; the server says go on at once."""
    fields = {f"f{i}": "v" * 40 for i in range(200)}
    body = json.dumps({"message": "a large one", "data": fields})
    assert 1024 < len(body) < 16384
    started = time.monotonic()
    status, answer, _ = post(daemon, body, uid=SENDER)
    assert status == 202, answer
    assert time.monotonic() - started < 0.9
    assert logged(daemon, answer["id"])["data"]["data"] == fields


def test_the_rate_limit_holds_while_capture_goes_on(
    kernel: None, daemon: Daemon, tmp_path: Path
) -> None:
    before = producers(daemon)
    tries = BURST + 20
    marker = f"capture-goes-on-{os.getpid()}-{time.monotonic_ns()}"
    flood = subprocess.Popen(
        as_uid(FLOODER, "curl", "-s", "-w", "%{http_code}\n", "--unix-socket", str(daemon.sock),
               "--data-binary", '{"message": "flood"}',
               *["-o", "/dev/null", "http://localhost/v1/events"] * tries),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Meanwhile the kernel's records go on being written.
    for _ in range(5):
        subprocess.run(["/bin/sh", "-c", ":", marker], check=True)
    out, _ = flood.communicate(timeout=60)
    codes = out.split()
    accepted, limited = codes.count("202"), codes.count("429")
    assert accepted + limited == tries, codes
    # The burst, and at most the few tokens the rate gave back meanwhile.
    assert BURST <= accepted <= BURST + 3, codes
    assert codes[:BURST] == ["202"] * BURST
    # The 429 says when to come back.
    head = subprocess.run(
        as_uid(FLOODER, "curl", "-sS", "-i", "--unix-socket", str(daemon.sock),
               "--data-binary", '{"message": "again"}', "http://localhost/v1/events"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert head.stdout.startswith("HTTP/1.1 429"), head.stdout
    # A token every 2 s: back in 1 or 2 s, by how much of one is there.
    assert re.search(r"\nRetry-After: [12]\n", head.stdout), head.stdout
    limited += 1
    # Nothing lost silently: every accepted event is in the log, every refusal counted.
    wait_until(lambda: len(app_records(daemon, FLOODER)) >= accepted, "the accepted events")
    assert len(app_records(daemon, FLOODER)) == accepted
    after = producers(daemon)
    assert after["rate_limited"] - before["rate_limited"] == limited
    assert after["accepted"] - before.get("accepted", 0) == accepted
    # The same counts in the metrics.
    metrics = daemon.metrics()
    for outcome in ("accepted", "rate_limited"):
        line = f'tracehound_api_produced_total{{outcome="{outcome}"}} {float(after[outcome])}'
        assert line in metrics.splitlines(), metrics

    def marker_logged() -> bool:
        return any(
            e.event["type"] == TYPE_EXEC and marker in e.event["data"]["argv"]
            for e in iter_events(daemon.state)
        )

    wait_until(marker_logged, "the capture's exec records")
    execs = sum(
        1
        for e in iter_events(daemon.state)
        if e.event["type"] == TYPE_EXEC and marker in e.event["data"]["argv"]
    )
    assert execs == 5


def test_a_secret_in_the_event_is_redacted(kernel: None, daemon: Daemon) -> None:
    body = {"message": f"rotated the token to {TOKEN}", "data": {"auth": TOKEN, TOKEN: "key"}}
    status, answer, _ = post(daemon, json.dumps(body))
    assert status == 202, answer
    assert TOKEN not in json.dumps(answer)
    data = logged(daemon, answer["id"])["data"]
    assert "github-token" in data["redacted"]
    assert TOKEN not in json.dumps(data)
    assert data["data"]["auth"].startswith("[REDACTED")
    served = daemon.curl(f"/v1/events/{answer['id']}").stdout
    assert json.loads(served)["id"] == answer["id"] and TOKEN not in served
    for segment in (daemon.state / "segments").glob("*"):
        assert TOKEN.encode() not in segment.read_bytes()


def test_mark_appends_and_tail_shows_it(kernel: None, daemon: Daemon) -> None:
    tail = subprocess.Popen(
        [*TRACEHOUND, "tail", "--type", "app.event", "--count", "1", "--socket", str(daemon.sock)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _tail_clients(daemon) >= 1, "the tail to subscribe")
        marked = subprocess.run(
            [*TRACEHOUND, "mark", "deploy v1.3 started", "--kind", "deploy.start",
             "--data", '{"version": "1.3", "canary": true}', "--socket", str(daemon.sock)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert marked.returncode == 0, marked.stderr
        answer = json.loads(marked.stdout)
        out, err = tail.communicate(timeout=30)
        assert tail.returncode == 0, err
    finally:
        tail.kill()
    shown = json.loads(out)
    assert shown["id"] == answer["id"] and shown["type"] == TYPE_APP
    record = logged(daemon, answer["id"])
    assert record["data"]["message"] == "deploy v1.3 started"
    assert record["data"]["data"] == {"version": "1.3", "canary": True}
    assert record["data"]["uid"] == 0
    assert record["data"]["exe"] == os.path.realpath(sys.executable)


def _tail_clients(daemon: Daemon) -> int:
    stats = daemon.get_json("/v1/stats")
    found = [q for q in stats["queues"] if q["queue"] == "sse_clients"]
    return int(found[0]["capacity"]) if found else 0


def test_mark_refused_is_one_line(kernel: None, daemon: Daemon) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    refused = subprocess.run(
        as_uid(STRANGER, *TRACEHOUND, "mark", "hello", "--socket", str(daemon.sock)),
        capture_output=True, text=True, timeout=30, env=env, cwd="/",
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr == (
        f"tracehound: mark: 403: uid {STRANGER} gid {STRANGER} may not use this API"
        " (api.allow_uids/gids; to append events, api.producer_uids/gids)\n"
    )
    bad = subprocess.run(
        [*TRACEHOUND, "mark", "x", "--data", "[1, 2]", "--socket", str(daemon.sock)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == (
        "tracehound: mark: argument --data: expected a JSON object, got a JSON list: '[1, 2]'\n"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('producer_uids = ["deploy"]', "api.producer_uids[0]: expected an integer, got a string"),
        ("producer_uids = [-1]", "api.producer_uids: expected 0 to 4294967294, got -1"),
        ("producer_gids = 5", "api.producer_gids: expected an array, got an integer"),
        ("producer_rate = 0", "api.producer_rate: expected events per second above 0"),
        ("producer_burst = 0", "api.producer_burst: expected 1 to 100000, got 0"),
    ],
)
def test_bad_producer_settings_are_one_line(tmp_path: Path, text: str, says: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[api]\n{text}\n")
    result = subprocess.run(
        [*TRACEHOUND, "config", "check", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
