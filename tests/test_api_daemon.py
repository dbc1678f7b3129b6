"""End to end: ``tracehound run`` with a temporary config and state directory,
asked over its UNIX socket with real curl.

One daemon serves the whole module (starting one costs seconds of BPF
compilation). No test depends on another having run, or not: a reload puts
the module's configuration back, counts are compared with their value
before, and the stop has a daemon of its own.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.evidence.log_reader import iter_events
from agent.evidence.types import TYPE_PREFIX
from agent.sinks.aggregating import EVICTION_KINDS, AggregatingSink
from tests import harness
from tests.conftest import TRACEHOUND, require_kernel
from tests.harness import wait_until

API_GROUP = 4242  # the socket's group: a peer must be in it to connect at all
ALLOWED_GID = 4243  # a primary gid the config lets in
NOBODY = 65534
WORKLOADS = Path(__file__).parent / "workloads"


class Daemon(harness.Daemon):
    """The module's daemon: a socket group, allowed gids and tight limits."""

    api_settings = f"""mode = "0660"
group = "{API_GROUP}"
allow_gids = [{ALLOWED_GID}]
max_clients = 8
idle_timeout_s = 2.0
max_request_bytes = 4096
max_headers = 20
sse_buffer = 4096"""


def sse_clients(daemon: Daemon) -> int:
    """How many SSE buffers the daemon holds (its ``sse_clients`` queue's
    capacity is the sum of theirs)."""
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    found = [q for q in stats["queues"] if q["queue"] == "sse_clients"]
    return int(found[0]["capacity"]) // 4096 if found else 0  # sse_buffer = 4096


def logged_argv(daemon: Daemon) -> list[list[str]]:
    """The argv of every exec record in the daemon's log so far."""
    return [
        e.event["data"]["argv"]
        for e in iter_events(daemon.state)
        if e.event["type"] == TYPE_PREFIX + "process.exec.v1"
    ]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_kernel()
    d = Daemon(tmp_path_factory.mktemp("daemon"))
    try:
        d.start()
        yield d
    finally:
        d.close()


def test_socket_mode_and_group_are_as_configured(kernel: None, daemon: Daemon) -> None:
    info = daemon.sock.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == API_GROUP
    assert daemon.get_json("/healthz") == {"status": "ok"}
    assert daemon.get_json("/readyz") == {"status": "ready"}


def test_snapshot_stream_events_and_resume(kernel: None, daemon: Daemon) -> None:
    subscribed = sse_clients(daemon) + 1
    tail = subprocess.Popen(
        ["curl", "-sSN", "--unix-socket", str(daemon.sock), "http://localhost/v1/stream"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tail.stdout is not None
    # Read from the start: a client that stops reading is let go by the daemon.
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()
    try:
        wait_until(lambda: sse_clients(daemon) >= subscribed, "the SSE client to subscribe")
        subprocess.run(["/bin/echo", "tracehound-e2e-first"], check=True, capture_output=True)
        exec_event = None
        last_id = None
        while True:
            line = lines.get(timeout=30)
            if line.startswith("id: "):
                last_id = line[4:].strip()
            if line.startswith("data: ") and "tracehound-e2e-first" in line:
                record = json.loads(line[6:])
                if record["type"] == TYPE_PREFIX + "process.exec.v1":
                    exec_event = record
                    break
        assert exec_event is not None and last_id == exec_event["id"]
    finally:
        tail.kill()
        tail.wait()

    # The snapshot shows the workload, and only what the filter asks for.
    snapshot = daemon.get_json("/v1/snapshot?comm=echo")
    assert isinstance(snapshot, dict)
    procs = snapshot["processes"]
    assert procs and all(p["comm"] == "echo" for p in procs)
    assert any("tracehound-e2e-first" in p["argv"] for p in procs)

    # The log answers for the same record, by query and by id.
    pid = exec_event["data"]["pid"]
    found = daemon.get_json(f"/v1/events?type=process.exec&pid={pid}&limit=10")
    assert isinstance(found, dict)
    assert [e["id"] for e in found["events"]] == [exec_event["id"]]
    assert daemon.get_json(f"/v1/events/{exec_event['id']}") == exec_event
    missing = daemon.curl("/v1/events/" + "0" * 32, "-w", "%{http_code}", "-o", "/dev/null")
    assert missing.stdout == "404"

    # Disconnected: these happen while no client listens.
    for n in range(3):
        subprocess.run(["/bin/echo", f"tracehound-e2e-missed-{n}"], check=True)
    wait_until(
        lambda: all(
            any(f"tracehound-e2e-missed-{n}" in argv for argv in logged_argv(daemon))
            for n in range(3)
        ),
        "the missed execs in the log",
    )
    resumed = daemon.curl(
        "/v1/stream", "-N", "-H", f"Last-Event-ID: {exec_event['id']}", "--max-time", "3"
    )
    ids = [line[4:] for line in resumed.stdout.splitlines() if line.startswith("id: ")]
    logged = [e.event["id"] for e in iter_events(daemon.state)]
    after = logged[logged.index(exec_event["id"]) + 1 :]
    # Exactly the records after it, in log order: no gap, no repeat.
    assert ids and ids == after[: len(ids)], (ids[:5], after[:5])
    assert len(set(ids)) == len(ids)
    data = resumed.stdout
    for n in range(3):
        assert f"tracehound-e2e-missed-{n}" in data


def test_metrics_parse_and_have_queue_depths(kernel: None, daemon: Daemon) -> None:
    import urllib.request

    assert daemon.get_json("/healthz") == {"status": "ok"}  # one response to count, at least
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10) as page:
        text = page.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = families["tracehound_queue_depth"]
    queues = {s.labels["queue"] for s in depth.samples}
    assert {"ring_bytes", "stream:evidence", "publisher", "sse_clients"} <= queues
    capacity = {s.labels["queue"]: s.value for s in families["tracehound_queue_capacity"].samples}
    assert capacity["stream:evidence"] > 0 and capacity["publisher"] > 0
    assert families["tracehound_evidence_records"].samples[0].value > 0
    assert "tracehound_evidence_checkpoint_age_seconds" in families
    answered = {s.labels["code"]: s.value for s in families["tracehound_api_responses"].samples}
    assert answered.get("200", 0) >= 1, answered  # counted by status
    # The same page is on the socket too.
    assert "tracehound_queue_depth" in daemon.curl("/metrics").stdout


def test_aggregate_caps_and_evictions_in_stats_and_metrics(kernel: None, daemon: Daemon) -> None:
    import urllib.request

    caps = AggregatingSink.for_daemon().status().caps
    aggregate = daemon.get_json("/v1/stats")["aggregate"]  # type: ignore[index]
    assert aggregate["caps"] == caps
    held = aggregate["held"]
    assert 0 < held["live"] <= held["processes"] <= caps["processes"]
    assert 0 < held["bytes"] <= caps["bytes"]
    assert set(aggregate["evictions"]) == set(EVICTION_KINDS)
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10) as page:
        families = {f.name: f for f in text_string_to_metric_families(page.read().decode())}
    capacity = {
        s.labels["what"]: s.value for s in families["tracehound_aggregate_capacity"].samples
    }
    assert capacity == caps
    evicted = {s.labels["what"] for s in families["tracehound_aggregate_evictions"].samples}
    assert evicted == set(EVICTION_KINDS)
    scraped = {s.labels["what"]: s.value for s in families["tracehound_aggregate_held"].samples}
    assert scraped["processes"] > 0 and scraped["bytes"] > 0


def test_verify_endpoint(kernel: None, daemon: Daemon) -> None:
    result = daemon.get_json("/v1/verify")
    assert isinstance(result, dict)
    assert result["ok"] is True and result["records"] > 0, result


def test_unprivileged_peers(kernel: None, daemon: Daemon) -> None:
    # In the socket's group but not allowed: the kernel lets it connect, we refuse.
    refused = daemon.curl("/v1/stats", "-w", "\n%{http_code}", user=(NOBODY, NOBODY, API_GROUP))
    assert refused.stdout.rstrip().endswith("403"), refused
    assert "may not use this API" in refused.stdout
    # Allowed by primary gid.
    allowed = daemon.curl("/healthz", "-w", "\n%{http_code}", user=(NOBODY, ALLOWED_GID, API_GROUP))
    assert allowed.stdout.rstrip().endswith("200"), allowed
    # Not in the group: the socket's mode keeps it out before any HTTP.
    outsider = daemon.curl("/healthz", user=(NOBODY, NOBODY, NOBODY))
    assert outsider.returncode == 7, outsider  # curl: could not connect
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    assert stats["api"]["forbidden"] >= 1


def test_refused_peers_hold_no_client_slots(
    kernel: None, daemon: Daemon, system_python: str
) -> None:
    """70 silent and 10 talking connections from a refused uid, all kept open,
    against max_clients = 8: each is told 403 at once and closed, so root is
    still served."""
    before = daemon.get_json("/v1/stats")
    assert isinstance(before, dict)
    crowd = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={API_GROUP}",
         system_python, str(WORKLOADS / "refused_peers.py"), str(daemon.sock), "70", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert crowd.stdin is not None and crowd.stdout is not None
    try:
        assert crowd.stdout.readline() == "open\n"
        # All 80 are still connected on the crowd's side, well within idle_timeout_s.
        ready = daemon.curl("/readyz", "-w", "\n%{http_code}")
        assert ready.stdout.split() == ['{"status":"ready"}', "200"], ready
        out, _ = crowd.communicate("read\n", timeout=30)
    finally:
        if crowd.poll() is None:
            crowd.kill()
            crowd.wait()
    assert crowd.returncode == 0
    answers = json.loads(out)
    assert len(answers) == 80
    want = {"status": 403, "detail": f"uid {NOBODY} gid {NOBODY} may not use this API"
            " (api.allow_uids/gids; to append events, api.producer_uids/gids)"}  # fmt: skip
    assert [a for a in answers if a != want] == []
    after = daemon.get_json("/v1/stats")
    assert isinstance(after, dict)
    api, was = after["api"], before["api"]
    assert api["forbidden"] - was["forbidden"] == 80
    assert api["responses"].get("403", 0) - was["responses"].get("403", 0) == 80
    assert api["busy"] == was["busy"] and api["timeouts"] == was["timeouts"]


def _raw(daemon: Daemon, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes, return everything until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        sock.connect(str(daemon.sock))
        if data:
            sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_hostile_clients(kernel: None, daemon: Daemon) -> None:
    big = b"GET /healthz?x=" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _status(_raw(daemon, big)) == 414
    flood = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(50)) + b"\r\n"
    assert _status(_raw(daemon, flood)) == 431
    for path in (b"/v1/../etc/passwd", b"/v1/%2e%2e/x", b"/v1/snapshot%00", b"/\xff\xfe"):
        response = _raw(daemon, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(response) == 400, (path, response[:200])
    assert _status(_raw(daemon, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")) == 400

    # A client that says nothing is closed after the idle timeout (2 s).
    started = time.monotonic()
    assert _raw(daemon, b"", wait=10) == b""
    assert 1.5 < time.monotonic() - started < 8

    # More clients than max_clients (8) at once: the extra one is told 503.
    holders = []
    for _ in range(8):
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.connect(str(daemon.sock))
        holders.append(holder)
    try:
        # Once the server has taken all eight (it accepts asynchronously).
        wait_until(
            lambda: _status(_raw(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == 503,
            "the ninth client to be told 503",
            10,
        )
    finally:
        for holder in holders:
            holder.close()

    # A thousand connects in a row, half of them sending garbage.
    for n in range(1000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.sock))
            if n % 2:
                sock.sendall(b"\x00garbage\r\n\r\n")
    # The slots they held are free again.
    wait_until(lambda: daemon.status("/healthz")[0] == 200, "the API to serve again", 15)

    # Capture never stalled, and the daemon still serves.
    subprocess.run(["/bin/echo", "tracehound-e2e-after-hostile"], check=True, capture_output=True)

    def seen() -> bool:
        snap = daemon.get_json("/v1/snapshot?comm=echo")
        assert isinstance(snap, dict)
        return any("tracehound-e2e-after-hostile" in p["argv"] for p in snap["processes"])

    wait_until(seen, "the exec after the hostile clients", 15)
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    kinds = stats["capture"]["kinds"]
    assert kinds["exec"]["delivered"] > 0
    assert all(k["lost_kernel"] == 0 for k in kinds.values()), kinds  # the drain kept up
    assert stats["api"]["timeouts"] >= 1 and stats["api"]["busy"] >= 1


def _cli(daemon: Daemon, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEHOUND, *args, "--socket", str(daemon.sock)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_cli_snapshot_stats_tail(kernel: None, daemon: Daemon) -> None:
    subprocess.run(["/bin/echo", "tracehound-e2e-cli"], check=True, capture_output=True)

    def in_snapshot() -> bool:
        snap = _cli(daemon, "snapshot", "--comm", "echo")
        assert snap.returncode == 0, snap.stderr
        return any("tracehound-e2e-cli" in p["argv"] for p in json.loads(snap.stdout)["processes"])

    wait_until(in_snapshot, "the exec in the CLI's snapshot", 15)
    text = _cli(daemon, "snapshot", "--comm", "echo", "--text")
    assert text.returncode == 0 and "tracehound-e2e-cli" in text.stdout, text.stderr
    stats = _cli(daemon, "stats")
    assert stats.returncode == 0 and json.loads(stats.stdout)["capture"]["kinds"]["exec"]

    found = daemon.get_json("/v1/events?type=process.exec&limit=3")
    assert isinstance(found, dict)
    first = found["events"][0]["id"]
    # Resume from the log: the two records after `first`, as NDJSON, in order.
    tail = _cli(daemon, "tail", "--last-event-id", first, "--count", "2")
    assert tail.returncode == 0, tail.stderr
    logged = [e.event["id"] for e in iter_events(daemon.state)]
    ids = [json.loads(line)["id"] for line in tail.stdout.splitlines()]
    assert ids == logged[logged.index(first) + 1 :][:2]
    # Live, filtered client side.
    live = subprocess.Popen(
        [*TRACEHOUND, "tail", "--type", "process.exec", "--count", "1", "--socket", str(daemon.sock)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def tail_saw_one() -> bool:  # execs until the live tail (subscribed by then) took one
        subprocess.run(["/bin/echo", "tracehound-e2e-tail"], check=True, capture_output=True)
        return live.poll() is not None

    wait_until(tail_saw_one, "the live tail to print an exec", 30)
    out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    record = json.loads(out)
    assert record["type"] == TYPE_PREFIX + "process.exec.v1"

    missing = subprocess.run(
        [*TRACEHOUND, "stats", "--socket", str(daemon.root / "nope.sock")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "Traceback" not in missing.stderr
    assert "cannot connect to" in missing.stderr and "is tracehound run running?" in missing.stderr
    refused = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={API_GROUP}",
         *TRACEHOUND, "stats", "--socket", str(daemon.sock)],
        capture_output=True, text=True, env={**os.environ, "HOME": "/"},
    )  # fmt: skip
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith("tracehound: stats: 403: uid 65534"), refused.stderr


def _reload(daemon: Daemon, text: str) -> dict[str, object]:
    daemon.config.write_text(text)
    before = daemon.log().count("SIGHUP:")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("SIGHUP:") > before, "the reload to be said")
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    config = stats["config"]
    assert isinstance(config, dict)
    return config


def _nobody_status(daemon: Daemon) -> str:
    return daemon.curl("/healthz", "-w", "\n%{http_code}", user=(NOBODY, NOBODY, API_GROUP)).stdout


def _config_info(daemon: Daemon) -> dict[str, Any]:
    stats = daemon.get_json("/v1/stats")
    assert isinstance(stats, dict)
    return dict(stats["config"])


def test_bad_reloads_keep_the_running_configuration(kernel: None, daemon: Daemon) -> None:
    good = daemon.config.read_text()
    before = _config_info(daemon)
    nobody = _nobody_status(daemon).rstrip()[-3:]
    try:
        config = _reload(
            daemon, good.replace("stats_interval = 0", "stats_interval = 0\nring_pages = 8")
        )
        applied, refused = before["reloads"]["applied"], before["reloads"]["refused"]
        assert config["generation"] == before["generation"]
        assert config["reloads"] == {"applied": applied, "refused": refused + 1}
        assert "ring_pages" in str(config["last_reload_error"])
        config = _reload(
            daemon, good.replace("stats_interval = 0", "stats_interval = 0\nargv_max = 4")
        )
        assert config["reloads"] == {"applied": applied, "refused": refused + 2}
        assert "capture.argv_max changed: that takes a restart" in str(config["last_reload_error"])
        assert "reload refused, the running configuration stays" in daemon.log()
        # Still the running rules: the nobody peer is answered as before.
        assert _nobody_status(daemon).rstrip().endswith(nobody)
    finally:
        daemon.config.write_text(good)


def test_reload_applies_api_and_redaction(kernel: None, daemon: Daemon) -> None:
    rule = (
        'redact_rules = [{name = "e2e-secret", privacy = "sensitive",'
        ' pattern = "hushhush-(\\\\w+)", group = 1, replacement = "[GONE]"}]\n'
    )
    text = daemon.config_text(extra_api=f"allow_uids = [{NOBODY}]\n", extra=rule)
    generation = _config_info(daemon)["generation"]
    try:
        config = _reload(daemon, text)
        assert config["generation"] == generation + 1, (config, daemon.log()[-2000:])
        assert _nobody_status(daemon).rstrip().endswith("200")
        subprocess.run(["/bin/echo", "hushhush-topsecret"], check=True, capture_output=True)

        def redacted() -> bool:
            found = daemon.get_json("/v1/events?type=process.exec&last=50")
            assert isinstance(found, dict)
            argvs = [e["data"].get("argv", []) for e in found["events"]]
            return any("hushhush-[GONE]" in argv for argv in argvs)

        wait_until(redacted, "the exec redacted by the reloaded rule", 15)
    finally:
        # The module's configuration again, for whichever test runs next.
        config = _reload(daemon, daemon.config_text())
    assert config["generation"] == generation + 2
    assert _nobody_status(daemon).rstrip().endswith("403")


def test_sigterm_exits_zero_and_the_log_verifies(tmp_path: Path) -> None:
    """A daemon of its own (the module's keeps serving): reloads refused
    twice and applied once are on record, then SIGTERM."""
    require_kernel()
    daemon = Daemon(tmp_path)
    try:
        daemon.start()
        _stop_after_reloads(daemon)
    finally:
        daemon.close()


def _stop_after_reloads(daemon: Daemon) -> None:
    good = daemon.config.read_text()
    _reload(daemon, good.replace("stats_interval = 0", "stats_interval = 0\nring_pages = 8"))
    _reload(daemon, good.replace("stats_interval = 0", "stats_interval = 0\nargv_max = 4"))
    rule = (
        'redact_rules = [{name = "e2e-secret", privacy = "sensitive",'
        ' pattern = "hushhush-(\\\\w+)", group = 1, replacement = "[GONE]"}]\n'
    )
    assert _reload(daemon, daemon.config_text(extra=rule))["generation"] == 2
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=60) == 0, daemon.log()[-3000:]
    assert "Traceback" not in daemon.log()
    assert not daemon.sock.exists()  # removed on the way out
    verify = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(daemon.state)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK:")
    types = [e.event["type"] for e in iter_events(daemon.state)]
    assert types[-1] == TYPE_PREFIX + "capture.stop.v1"
    configs = [
        e.event["data"]["config"]
        for e in iter_events(daemon.state)
        if e.event["type"] == TYPE_PREFIX + "capture.config.v1"
    ]
    assert [c["reload"] for c in configs] == ["refused", "refused", "applied"]
    # A refusal names the keys, never the values given.
    assert configs[0]["keys"] == ["capture.ring_pages"] and configs[0]["why"] == "invalid"
    assert configs[1]["keys"] == ["capture.argv_max"] and configs[1]["why"] == "needs a restart"
    assert "evidence.redact_rules" in configs[-1]["changed"]
    # The rules that now apply are on record by name and digest, the pattern nowhere.
    names = [r["name"] for r in configs[-1]["redaction"]["configured"]]
    assert names == ["e2e-secret"]
    log = b"".join(p.read_bytes() for p in (daemon.state / "segments").glob("*.ndjson"))
    assert b"hushhush-(" not in log


def test_events_served_from_the_log_bytes_are_redacted_and_terminal_safe(
    kernel: None, daemon: Daemon
) -> None:
    """/v1/events and /v1/events/{id} serve the log's own bytes (not encoded
    again): those are redacted, hold raw bytes in escape form, and reach a
    terminal with no control or bidi character it would act on."""
    token = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8"
    hostile = b"tracehound-e2e-raw\xff\x1b[31m\xe2\x80\xa8\xe2\x80\xae\nfake line"
    subprocess.run([b"/bin/echo", hostile, f"--token={token}".encode()], check=True)

    def served() -> bytes:
        """The listing's raw bytes, once the record is in it (else empty)."""
        raw = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(daemon.sock),
             "http://localhost/v1/events?type=process.exec&last=200"],
            capture_output=True, timeout=20,
        ).stdout  # fmt: skip
        return raw if b"tracehound-e2e-raw" in raw else b""

    wait_until(served, "the hostile exec in the log")
    listing = served()
    body, _, rest = listing.partition(b"\n")
    assert rest == b""  # one line: nothing in a field can break it
    for unsafe in (b"\x1b", b"\xe2\x80\xa8", b"\xe2\x80\xae", b"\xff"):
        assert unsafe not in listing
    assert token.encode() not in listing
    [record] = [e for e in json.loads(body)["events"] if "tracehound-e2e-raw" in str(e)]
    data = record["data"]
    assert "argv" in data["escaped"]
    assert data["argv"][1].startswith("tracehound-e2e-raw\\xff\x1b[31m\u2028\u202e\n")
    assert token not in json.dumps(data)
    single = daemon.curl(f"/v1/events/{record['id']}")
    assert json.loads(single.stdout) == record
    assert "\x1b" not in single.stdout and "\u2028" not in single.stdout
