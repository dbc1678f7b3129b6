"""End to end: a real daemon's log asked by /v1/events (real curl), ``tracehound
events``, ``tail`` and ``report``, each compared with a brute-force scan of
the same log (tests/query/brute.py).

The log grows all the time (the capture sees the whole host), so every
comparison of a live answer carries ``until`` = a time the workload ended
before: once a marker exec run after it is in the log, and the fold window
has passed, every record timed before it is written and the answer cannot
change.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from agent.evidence.types import TYPE_PREFIX
from agent.query.parse import parse_filter
from agent.safetext import escape_text
from tests import harness
from tests.concurrent_cli import run_all
from tests.conftest import TRACEHOUND, require_kernel
from tests.harness import wait_until
from tests.query.brute import brute_events, logged

HOSTILE = "evil\x1b[31m\nfake  ok"
SSE_BUFFER = 4096


class Daemon(harness.Daemon):
    """A known SSE buffer, so its queue's capacity counts the tail's clients."""

    api_settings = f'mode = "0666"\nidle_timeout_s = 5.0\nsse_buffer = {SSE_BUFFER}'


class Workload:
    """What the module's workload did: its tree's root pid, its directory,
    the closed port it tried, and the window it ran in."""

    def __init__(self, root: Path) -> None:
        self.dir = root / f"thq-{uuid.uuid4().hex[:8]}"
        self.port = harness.free_port()
        self.pid = 0
        self.t0 = 0
        self.t1 = ""  # RFC 3339, for until=
        self.t1_ns = 0
        #: The log's records once every one timed before t1 is in it.
        self.log: list[tuple[int, dict[str, Any]]] = []


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Daemon]:
    require_kernel()
    d = Daemon(tmp_path_factory.mktemp("query"))
    try:
        # Small segments: a time window skips most of a busy host's log.
        d.start(config=d.config_text(extra="segment_mb = 1\nretain_mb = 8192"))
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def work(daemon: harness.Daemon, tmp_path_factory: pytest.TempPathFactory) -> Workload:
    w = Workload(tmp_path_factory.mktemp("work"))
    script = f"""
set -e
mkdir -p {w.dir}
for i in $(seq 1 1100); do echo x > {w.dir}/f$i; done
mv {w.dir}/f1 {w.dir}/g1
rm {w.dir}/f2
cat /nonexistent-thq 2>/dev/null || true
touch "{w.dir}/$(printf 'evil\\033[31m\\nfake  ok')"
(cd {w.dir} && /bin/ls > /dev/null)
curl -s --max-time 2 http://127.0.0.1:{w.port}/ || true
"""
    w.t0 = time.time_ns()
    proc = subprocess.Popen(["/bin/sh", "-c", script])
    w.pid = proc.pid
    assert proc.wait(timeout=60) == 0
    end = time.time_ns()
    w.t1, w.t1_ns = _rfc3339(end), end
    marker = f"thq-marker-{uuid.uuid4().hex}"
    subprocess.run(["/bin/echo", marker], check=True, capture_output=True)

    def marked() -> bool:
        return any(
            marker in (e.get("data") or {}).get("argv", [])
            for _, e in logged(daemon.state)
            if e["type"] == TYPE_PREFIX + "process.exec.v1"
        )

    wait_until(marked, "the marker exec in the log", 30)
    time.sleep(1.0)  # the fold window (100 ms) and the pipeline, with room
    w.log = logged(daemon.state)
    return w


def _expected(work: Workload, values: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The brute-force answer (every filter used here ends at work.t1)."""
    assert values["until"] == [work.t1]
    flt = parse_filter(values, now_ns=time.time_ns())
    return [event for _, event in brute_events(work.log, flt)]


def _pages(daemon: harness.Daemon, query: list[tuple[str, str]], limit: int) -> list[Any]:
    """Every page's events, following ``next`` with real curl."""
    out: list[Any] = []
    cursor: str | None = None
    for _ in range(10_000):
        params = [*query, ("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        page = daemon.get_json("/v1/events?" + urlencode(params))
        assert set(page) == {"events", "next"}
        out += page["events"]
        cursor = page["next"]
        if cursor is None:
            return out
        assert len(page["events"]) == limit
    raise AssertionError("the pages never ended")


def _filters(w: Workload) -> list[dict[str, list[str]]]:
    # Each starts at t0 as well: then no record of the answer can be in a
    # segment pruned meanwhile (but the scan still reads from the start
    # for the tree and exe filters).
    until = {"until": [w.t1], "since": [_rfc3339(w.t0)]}
    since = {"since": [_rfc3339(w.t0)]}
    return [
        until,
        {**until, "type": ["process.exec"]},
        {**until, "since": [_rfc3339((w.t0 + w.t1_ns) // 2)]},
        {**until, "pid": [str(w.pid)]},
        {**until, "pid": [str(w.pid)], "tree": ["true"]},
        {**until, "comm": ["mv"]},
        {**until, "exe": ["/usr/bin/curl"]},
        {**until, "path": [f"{w.dir}/*"]},
        {**until, "path": [f"{w.dir}/f1*"], "type": ["file.rename"]},
        {**until, "remote": [str(w.port)]},
        {**until, "remote": [f"127.0.0.1:{w.port}"]},
        {**until, "remote": ["10.0.0.0/8"]},
        {**until, "container": ["0123456789ab"]},
        {**until, "uid": ["0"], **since},
        {**until, **since, "type": ["file", "process.exec"], "path": [f"{w.dir}/*"]},
        {**until, "pid": [str(w.pid)], "tree": ["1"], "type": ["process.exec"]},
    ]


def _ids(events: list[Any]) -> list[str]:
    return [e["id"] for e in events]


def test_the_api_answers_each_filter_as_the_brute_force_scan(
    kernel: None, daemon: harness.Daemon, work: Workload
) -> None:
    nonempty = 0
    for values in _filters(work):
        query = [(k, v) for k, vs in values.items() for v in vs]
        expected = _expected(work, values)
        one = _pages(daemon, query, 10_000)
        assert _ids(one) == _ids(expected), values
        assert one == expected  # the records as logged
        # Small pages add up to the same, with no gap and no repeat.
        size = 7 if len(expected) < 100 else 300
        assert _ids(_pages(daemon, query, size)) == _ids(expected), values
        nonempty += bool(expected)
    assert nonempty >= len(_filters(work)) - 2  # the table is not vacuous
    tree = _expected(work, {"until": [work.t1], "pid": [str(work.pid)], "tree": ["1"]})
    assert len({e["data"]["pid"] for e in tree}) >= 4  # sh, and the children it forked
    renamed = _expected(work, _filters(work)[8])
    assert [e["data"]["abs_path2"] for e in renamed] == [f"{work.dir}/g1"]


def test_last_answers_the_newest(kernel: None, daemon: harness.Daemon, work: Workload) -> None:
    values = {"until": [work.t1], "path": [f"{work.dir}/*"]}
    query = [(k, v[0]) for k, v in values.items()] + [("last", "3")]
    newest = daemon.get_json("/v1/events?" + urlencode(query))
    assert _ids(newest["events"]) == _ids(_expected(work, values))[-3:]


def _sse_clients(daemon: harness.Daemon) -> int:
    """How many live-tail clients the daemon holds (by its sse_clients queue)."""
    stats = daemon.get_json("/v1/stats")
    found = [q for q in stats["queues"] if q["queue"] == "sse_clients"]
    return int(found[0]["capacity"]) // SSE_BUFFER if found else 0


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRACEHOUND, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_events_follows_the_pages(kernel: None, daemon: harness.Daemon, work: Workload) -> None:
    sock = ["--socket", str(daemon.sock)]
    since = _rfc3339(work.t0)
    everything = _expected(work, {"until": [work.t1], "since": [since]})
    assert len(everything) > 1000  # more than one of the CLI's pages
    got = _cli("events", *sock, "--until", work.t1, "--since", since)
    assert got.returncode == 0, got.stderr
    assert [json.loads(line)["id"] for line in got.stdout.splitlines()] == _ids(everything)
    limited = _cli("events", *sock, "--until", work.t1, "--since", since, "--limit", "1003")
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == _ids(
        everything[:1003]
    )
    # The same answer from the log itself, without the daemon.
    local = _cli("events", "--state-dir", str(daemon.state), "--until", work.t1, "--since", since,
                 "--type", "file")  # fmt: skip
    expected = _expected(work, {"until": [work.t1], "since": [since], "type": ["file"]})
    assert [json.loads(line)["id"] for line in local.stdout.splitlines()] == _ids(expected)
    ocsf = _cli("events", *sock, "--until", work.t1, "--path", f"{work.dir}/*", "--format", "ocsf")
    assert ocsf.returncode == 0, ocsf.stderr
    uids = [json.loads(line)["metadata"]["uid"] for line in ocsf.stdout.splitlines()]
    assert uids == _ids(_expected(work, {"until": [work.t1], "path": [f"{work.dir}/*"]}))


def test_cli_compact_shows_the_hostile_name_on_one_line(
    kernel: None, daemon: harness.Daemon, work: Workload
) -> None:
    values = {"until": [work.t1], "path": [f"{work.dir}/evil*"]}
    got = _cli("events", "--socket", str(daemon.sock), "--format", "compact",
               "--until", work.t1, "--path", f"{work.dir}/evil*")  # fmt: skip
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    expected = _expected(work, values)
    assert expected and len(lines) == len(expected)
    assert "\x1b" not in got.stdout and all(line.isprintable() for line in lines)
    assert all(escape_text(f"{work.dir}/{HOSTILE}") in line for line in lines)
    assert all(line.split()[3] == "touch" for line in lines)


def test_tail_filters_live_records(kernel: None, daemon: harness.Daemon, tmp_path: Path) -> None:
    marker = f"thq-tail-{uuid.uuid4().hex[:6]}"
    # The tree's root waits for a line on stdin: its children exec only
    # once the tail has subscribed.
    root = subprocess.Popen(
        ["/bin/sh", "-c", f"read x; /bin/echo {marker}-1; /bin/echo {marker}-2"],
        stdin=subprocess.PIPE,
    )
    assert root.stdin is not None
    subscribed = _sse_clients(daemon) + 1
    tail = subprocess.Popen(
        [*TRACEHOUND, "tail", "--socket", str(daemon.sock), "--pid", str(root.pid), "--tree",
         "--type", "process.exec", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _sse_clients(daemon) >= subscribed, "the tail to subscribe")
        root.stdin.write(b"go\n")
        root.stdin.close()
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        root.wait(timeout=30)
    assert tail.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["data"]["argv"] for r in records] == [
        ["/bin/echo", f"{marker}-1"], ["/bin/echo", f"{marker}-2"]
    ]  # fmt: skip
    assert all(r["data"]["pid"] != root.pid for r in records)  # children: the tree

    # --comm and --format compact: only that program's records, as lines.
    program = tmp_path / "thq-compact"
    program.write_bytes(Path("/bin/true").read_bytes())
    program.chmod(0o755)
    compact = subprocess.Popen(
        [*TRACEHOUND, "tail", "--socket", str(daemon.sock), "--comm", "thq-compact",
         "--type", "process.exit", "--format", "compact", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def printed() -> bool:
        subprocess.run([str(program)], check=True)
        return compact.poll() is not None

    wait_until(printed, "the compact tail to print the program's exit", 30)
    out, err = compact.communicate(timeout=30)
    assert compact.returncode == 0, err
    [line] = out.splitlines()
    assert line.split()[3:] == ["thq-compact", "exit", "code", "0", "-"]


def test_bad_filters_are_one_line_and_400(kernel: None, daemon: harness.Daemon) -> None:
    cases = [("--type", "bogus"), ("--since", "5x"), ("--remote", "1.2.3.4:99999"),
             ("--pid", "0"), ("--container", "abc"), ("--until", "2025-02-30T00:00:00Z")]  # fmt: skip
    # One real process per case (its exit status and stderr are the point),
    # a few at a time.
    runs = [(option, value, verb) for option, value in cases
            for verb in ("events", "tail", "report")]  # fmt: skip
    finished = run_all(
        [[*TRACEHOUND, verb, option, value, "--socket" if verb != "report" else "--state-dir",
          str(daemon.sock) if verb != "report" else str(daemon.state)]
         for option, value, verb in runs],
        timeout=20,
    )  # fmt: skip
    for (option, value, verb), done in zip(runs, finished, strict=True):
        got = done.result
        assert got.returncode == 2, (verb, option, value, got)
        assert got.stderr.startswith(f"tracehound: {option}: expected"), got.stderr
        assert got.stderr.count("\n") == 1 and got.stdout == ""
        assert done.seconds < 15  # at once: tail does not wait
    for option, value in cases:
        status, body = daemon.status(f"/v1/events?{urlencode({option[2:]: value})}")
        assert status == 400, body
        assert f"parameter '{option[2:]}'" in json.loads(body)["detail"]
    status, body = daemon.status("/v1/events?cursor=nope")
    assert status == 400 and "cursor" in body


def test_report_counts_match_the_brute_force(
    kernel: None, daemon: harness.Daemon, work: Workload
) -> None:
    window = {"since": [_rfc3339(work.t0)], "until": [work.t1]}
    got = _cli("report", "--state-dir", str(daemon.state), "--since", _rfc3339(work.t0),
               "--until", work.t1, "--format", "json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    events = _expected(work, window)
    assert report["records"] == len(events)
    programs: dict[str, int] = {}
    for e in events:
        if e["type"] == TYPE_PREFIX + "process.exec.v1" and e["data"]["ret"] == 0:
            exe = e["data"]["exe"] or e["data"]["filename"]
            programs[exe] = programs.get(exe, 0) + 1
    assert {entry["what"][0]: entry["count"] for entry in report["programs"]["entries"]} == programs
    assert programs.get("/usr/bin/curl") == 1 and programs.get("/usr/bin/mv") == 1
    written = {e["what"][0]: e["count"] for e in report["files_written"]["entries"]}
    for i in range(3, 1101):
        assert written.get(f"{work.dir}/f{i}", 0) >= 1, i
    assert written.get(f"{work.dir}/g1") == 1 and written.get(f"{work.dir}/f2", 0) >= 2
    failed = sum(e["count"] for e in report["failed"]["entries"])
    brute_failed = sum(
        (e["data"].get("count") or 1)
        for e in events
        if isinstance(e["data"].get("ret"), int)
        and e["data"]["ret"] < 0
        and not (e["data"].get("op") == "connect" and e["data"]["ret"] == -115)
    )
    assert failed == brute_failed and failed >= 1
    peers = {e["what"][0]: e["count"] for e in report["peers"]["entries"]}
    assert peers.get(f"127.0.0.1:{work.port}", 0) >= 1
    text = _cli("report", "--state-dir", str(daemon.state), "--since", _rfc3339(work.t0),
                "--until", work.t1)  # fmt: skip
    assert text.returncode == 0 and f"Records: {len(events)}" in text.stdout
    assert "\x1b" not in text.stdout
