"""The CLI's side of the local API (agent.api.client, agent.commands.client).

The framing is tested pure, with input split at every byte. The socket edge
and the commands are tested for real: a small AF_UNIX server in a thread
answers canned bytes (made with the server's own framing helpers) and
records what it was sent, and ``tracehound`` runs as a subprocess against it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.api.client import (
    ApiError,
    ConnectError,
    Response,
    ResponseError,
    SseMessage,
    SseParser,
    check_headers,
    fetch,
    request_target,
    stream,
)
from agent.api.http import HttpError, RequestParser, error_response, response_bytes
from agent.api.http import sse_response_head as sse_head
from agent.api.routes import route
from agent.api.sse import sse_comment, sse_event
from agent.evidence.types import TYPE_PREFIX
from agent.sinks.profile import ProcessProfile, Profile, encode_profile, render_text
from tests.conftest import REPO, TRACEHOUND

# --- the request -----------------------------------------------------------------------


def test_request_is_what_the_server_parses_and_routes(
    serve: Callable[[Answer], CannedServer],
) -> None:
    server = serve(FRAMED)
    fetch(str(server.path), "/v1/snapshot", {"comm": "a b+c&d=/%", "pid": 7})
    request = RequestParser().feed(server.requests[-1])
    assert request is not None and request.path == "/v1/snapshot"
    assert request.query == {"comm": ["a b+c&d=/%"], "pid": ["7"]}
    assert not request.keep_alive and request.header("host") == "localhost"
    assert route(request).params == {"comm": "a b+c&d=/%", "pid": 7}
    live = serve(sse_head())
    list(stream(str(live.path), "/v1/stream", [("Last-Event-ID", "a" * 32)]))
    resume = RequestParser().feed(live.requests[-1])
    assert resume is not None and route(resume).params == {"last_event_id": "a" * 32}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/stream", [("Last-Event-ID", "x\r\nInjected: 1")]),
        ("/v1/stream", [("Bad Name", "x")]),
        ("/v1/snapshot?pid=1", []),
        ("v1/stats", []),
        ("/v1/st ats", []),
    ],
)
def test_request_refuses_injection_and_bad_paths(
    path: str, headers: list[tuple[str, str]], serve: Callable[[Answer], CannedServer]
) -> None:
    server = serve(FRAMED)
    with pytest.raises(ValueError):
        request_target(path)
        check_headers(headers)
    with pytest.raises(ValueError):
        next(stream(str(server.path), path, headers))
    assert not server.requests  # refused before anything was sent


# --- responses, read by http.client over the socket ----------------------------------

BODY = b'{"status": "ok", "n": [1, 2, 3]}\n'
FRAMED = response_bytes(200, BODY, "application/json")


def test_framed_unframed_and_chunked_bodies(serve: Callable[[Answer], CannedServer]) -> None:
    response = fetch(str(serve(FRAMED).path), "/v1/stats")
    assert (response.status, response.reason, response.body) == (200, "OK", BODY)
    assert response.header("Content-Type") == "application/json"
    unframed = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY)
    assert fetch(str(unframed.path), "/v1/stats").body == BODY  # read to the close
    chunked = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n")  # fmt: skip
    assert fetch(str(chunked.path), "/v1/stats").body == BODY


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_garbage_is_refused(garbage: bytes, serve: Callable[[Answer], CannedServer]) -> None:
    server = serve(garbage)
    with pytest.raises(ResponseError):
        fetch(str(server.path), "/v1/stats", timeout=5)
    with pytest.raises(ResponseError):
        next(stream(str(server.path), timeout=5))


def test_a_body_over_the_limit_is_refused(
    serve: Callable[[Answer], CannedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.api.client as client

    monkeypatch.setattr(client, "MAX_BODY_BYTES", 10)  # a real limit, made small
    unframed = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 11)
    with pytest.raises(ResponseError, match="larger than 10"):
        fetch(str(unframed.path), "/v1/stats")
    exact = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 10)
    assert fetch(str(exact.path), "/v1/stats").body == b"x" * 10


def test_api_error_reads_the_json_body_and_keeps_one_line(
    serve: Callable[[Answer], CannedServer],
) -> None:
    server = serve(error_response(HttpError(403, "uid 65534 is not allowed")))
    refused = fetch(str(server.path), "/v1/stats")
    err = ApiError.from_response(refused)
    assert (str(err), err.reason, err.status) == ("403: uid 65534 is not allowed", "Forbidden", 403)
    odd = ApiError.from_response(Response(502, "Bad Gateway", (), b"upstream\r\nfailed\n"))
    assert str(odd) == "502: upstream failed"


# --- SseParser --------------------------------------------------------------------------

ID1, ID2 = "1" * 32, "2" * 32
SSE = (
    "\ufeff: tracehound live tail\n"
    f'id: {ID1}\nevent: t.one\ndata: {{"n": 1}}\n\n'
    ":\r\n"
    f"id: {ID2}\r\nevent: t.two\r\ndata: line1\r\ndata:line2 é🐕\r\ndata\r\n\r\n"
    "retry: 1500\r"
    'event: overflow\rdata: {"dropped": 3, "total_dropped": 5}\r\r'
    "data: unfinished\n"
).encode()
EXPECTED = [
    SseMessage(id=ID1, event="t.one", data='{"n": 1}'),
    SseMessage(id=ID2, event="t.two", data="line1\nline2 é🐕\n"),
    SseMessage(id=None, event="overflow", data='{"dropped": 3, "total_dropped": 5}'),
]


@pytest.mark.parametrize("cut", range(len(SSE) + 1))
def test_sse_split_anywhere(cut: int) -> None:
    parser = SseParser()
    assert parser.feed(SSE[:cut]) + parser.feed(SSE[cut:]) == EXPECTED
    assert (parser.last_event_id, parser.retry_ms) == (ID2, 1500)


def test_sse_byte_by_byte_dispatches_each_event_when_its_blank_line_ends() -> None:
    parser = SseParser()
    seen: list[tuple[int, SseMessage]] = []
    for i in range(len(SSE)):
        seen += [(i, m) for m in parser.feed(SSE[i : i + 1])]
    assert [m for _, m in seen] == EXPECTED
    # The CR-only event went out on its last CR, not on a later byte.
    assert seen[-1][0] == SSE.index(b"\r\r", SSE.index(b"overflow")) + 1


def test_sse_id_rules() -> None:
    parser = SseParser(last_event_id="0" * 32)
    assert parser.feed(b"id: bad\x00id\ndata: a\n\n") == [SseMessage(None, "message", "a")]
    assert parser.last_event_id == "0" * 32  # an id with NUL is ignored
    assert parser.feed(b"id: 7\n\n") == []  # no data: nothing dispatched, but the id counts
    assert parser.last_event_id == "7"
    assert parser.feed(b"data: b\n\n") == [SseMessage(None, "message", "b")]
    assert parser.feed(b"id\ndata: c\n\n") == [SseMessage("", "message", "c")]
    assert parser.last_event_id == ""


def test_sse_bounds_an_endless_line() -> None:
    parser = SseParser(max_chars=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(ResponseError):
        parser.feed(b"x" * 20)


@given(st.text(), st.text(alphabet="abc._-0123456789", min_size=1), st.integers(0, 200))
def test_sse_reads_what_the_server_writes(data: str, event: str, cut: int) -> None:
    wire = sse_comment("x\ny") + sse_event(data, event=event, id=ID1) + sse_event("z")
    parser = SseParser()
    got = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert got == [SseMessage(ID1, event, expected), SseMessage(None, "message", "z")]


# --- a real socket: the server side of the tests ------------------------------------------

Answer = bytes | Callable[[socket.socket], None]


class CannedServer:
    """Answers each connection with ``answer`` (bytes, or a function writing them)
    and keeps the request heads it received."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path, self.answer = path, answer
        self.requests: list[bytes] = []
        self.connected = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head and (data := conn.recv(4096)):
                    head += data
                self.requests.append(head)
                self.connected.set()
                with contextlib.suppress(OSError):  # the client left: some tests do that
                    if isinstance(self.answer, bytes):
                        conn.sendall(self.answer)
                    else:
                        self.answer(conn)

    def request(self) -> RequestParser:
        assert self.requests, "the server saw no request"
        parser = RequestParser()
        assert parser.feed(self.requests[-1]) is not None
        return parser

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Answer], CannedServer]]:
    servers: list[CannedServer] = []

    def start(answer: Answer) -> CannedServer:
        servers.append(CannedServer(tmp_path / f"api{len(servers)}.sock", answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def parsed(server: CannedServer) -> tuple[str, dict[str, list[str]], list[tuple[str, str]]]:
    request = RequestParser().feed(server.requests[-1])
    assert request is not None
    return request.path, request.query, request.headers


def cli(server: CannedServer | Path, *args: str) -> subprocess.CompletedProcess[str]:
    where = server.path if isinstance(server, CannedServer) else server
    return subprocess.run(
        [*TRACEHOUND, *args, "--socket", str(where)],
        capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracehound: "), result.stderr
    return lines[0]


def record(n: int, short_type: str, pid: int | None) -> tuple[str, bytes]:
    """An SSE event as the daemon sends a CloudEvent; its id and its bytes."""
    event_id = f"{n:032x}"
    data = {"pid": pid} if pid is not None else {"stage": "x"}
    body = {"specversion": "1.0", "id": event_id, "type": TYPE_PREFIX + short_type, "data": data}
    return event_id, sse_event(json.dumps(body), event=TYPE_PREFIX + short_type, id=event_id)


# --- the I/O edge -------------------------------------------------------------------------


def test_fetch_and_stream_over_a_real_socket(serve: Callable[[Answer], CannedServer]) -> None:
    server = serve(FRAMED)
    response = fetch(str(server.path), "/v1/stats", {"x": "a b"})
    assert (response.status, response.body) == (200, BODY)
    assert parsed(server)[:2] == ("/v1/stats", {"x": ["a b"]})
    unframed = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY)
    assert fetch(str(unframed.path), "/v1/stats").body == BODY  # read to the close
    ids, events = zip(*(record(n, "file.open.v1", n) for n in range(3)), strict=True)
    live = serve(sse_head() + sse_comment() + b"".join(events))
    got = list(stream(str(live.path), headers=[("Last-Event-ID", ID1)]))
    assert [m.id for m in got] == list(ids)
    assert ("last-event-id", ID1) in parsed(live)[2]


def test_edge_errors(serve: Callable[[Answer], CannedServer], tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as missing:
        fetch(str(tmp_path / "nope.sock"), "/v1/stats")
    assert isinstance(missing.value.cause, FileNotFoundError)
    refused = serve(error_response(HttpError(503, "the evidence log is off")))
    with pytest.raises(ApiError, match="503: the evidence log is off"):
        next(stream(str(refused.path)))
    framed = serve(FRAMED)
    with pytest.raises(ResponseError, match="event stream"):
        next(stream(str(framed.path)))
    silent = serve(lambda conn: time.sleep(2))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fetch(str(silent.path), "/v1/stats", timeout=0.3)
    assert time.monotonic() - started < 1.5


def trickle(conn: socket.socket) -> None:
    for i in range(len(FRAMED)):
        conn.sendall(FRAMED[i : i + 1])
        time.sleep(0.05)


def test_fetch_timeout_bounds_the_whole_exchange(serve: Callable[[Answer], CannedServer]) -> None:
    slow = serve(trickle)  # a byte every 50 ms: each read is quick, the whole takes ~6 s
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fetch(str(slow.path), "/v1/stats", timeout=0.5)
    assert time.monotonic() - started < 1.5


# --- the commands -------------------------------------------------------------------------


def a_profile() -> Profile:
    proc = ProcessProfile(
        pid=42, ppid=1, comm="sh", exe="/bin/sh", argv=["sh", "-c", "echo hound-7"], uid=0,
        gid=0, cgroup_id=9, started_ns=1, exited_ns=2, exit_code=0, exit_signal=None,
        preexisting=False, execs=[], files=[], failed_files=[], network=[], failed_network=[],
        syscalls={"read": 3}, evicted={},
    )  # fmt: skip
    return Profile(version=1, command=[], root_pid=None, exit_status=None, processes=[proc],
                   evictions={}, probes=[], accounting={}, notes=[], complete=False)  # fmt: skip


def test_snapshot_json_and_text(serve: Callable[[Answer], CannedServer]) -> None:
    body = encode_profile(a_profile())
    server = serve(response_bytes(200, body, "application/json"))
    result = cli(server, "snapshot", "--pid", "42", "--comm", "my sh", "--cgroup", "9")
    assert (result.returncode, result.stdout, result.stderr) == (0, body.decode(), "")
    assert parsed(server)[:2] == (
        "/v1/snapshot",
        {"pid": ["42"], "comm": ["my sh"], "cgroup": ["9"]},
    )
    text = cli(server, "snapshot", "--text")
    assert text.returncode == 0 and text.stdout == render_text(a_profile())
    assert "echo hound-7" in text.stdout and parsed(server)[1] == {}


def test_stats_is_pretty_and_sorted(
    serve: Callable[[Answer], CannedServer], tmp_path: Path
) -> None:
    stats = {"queues": {"ring": 3, "api": 1}, "capture": {"kinds": {"exec": 5}}}
    server = serve(response_bytes(200, json.dumps(stats).encode(), "application/json"))
    config = tmp_path / "th.toml"
    config.write_text(f'[api]\nsocket = "{server.path}"\n')
    result = subprocess.run([*TRACEHOUND, "stats", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == stats and parsed(server)[0] == "/v1/stats"
    lines = result.stdout.splitlines()
    assert lines[1] == '  "capture": {' and lines.index('    "api": 1,') < lines.index(
        '    "ring": 3'
    )


def test_tail_filters_counts_and_reports_overflow(serve: Callable[[Answer], CannedServer]) -> None:
    events = [
        record(1, "process.exec.v1", 7),
        record(2, "process.exec.v1", 8),  # another pid
        record(3, "file.open.v1", 7),  # another type
        record(4, "process.exec.v1", 7),
        record(5, "process.exit.v1", 7),  # "process.exec" is not a prefix of it
        record(6, "process.exec.v1", 7),
        record(7, "process.exec.v1", 7),  # after --count: never printed
    ]
    overflow = sse_event('{"dropped": 12, "total_dropped": 30}', event="overflow")
    wire = [e for _, e in events]
    wire.insert(4, sse_comment() + overflow)
    server = serve(sse_head() + b"".join(wire))
    result = cli(server, "tail", "--type", "process.exec", "--pid", "7", "--count", "3",
                 "--last-event-id", ID2)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert printed == [events[0][0], events[3][0], events[5][0]]
    assert result.stderr == (
        f"tracehound: tail: 12 events dropped by the daemon for this slow client;"
        f" reconnect with --last-event-id {events[3][0]} to fetch them\n"
    )
    assert ("last-event-id", ID2) in parsed(server)[2]
    files = cli(server, "tail", "--type", "file", "--count", "1")
    assert [json.loads(line)["id"] for line in files.stdout.splitlines()] == [events[2][0]]
    assert all(h != ("last-event-id", ID2) for h in parsed(server)[2])


def test_tail_when_the_stream_ends(serve: Callable[[Answer], CannedServer]) -> None:
    last, event = record(9, "process.fork.v1", 3)
    result = cli(serve(sse_head() + event), "tail", "--count", "5")
    line = one_line_error(result)
    assert json.loads(result.stdout)["id"] == last
    assert (
        line
        == f"tracehound: tail: the daemon closed the stream; resume with --last-event-id {last}"
    )


def test_connect_errors_are_one_line(
    serve: Callable[[Answer], CannedServer], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.sock"
    for command in ("snapshot", "stats", "tail"):
        line = one_line_error(cli(missing, command))
        assert line == (
            f"tracehound: cannot connect to {missing}: No such file or directory"
            " (is tracehound run running?)"
        )
    stale = tmp_path / "stale.sock"
    socket.socket(socket.AF_UNIX).bind(str(stale))  # bound, never listening: a dead daemon's
    assert "Connection refused (is tracehound run running?)" in one_line_error(cli(stale, "stats"))


def test_permission_denied_names_the_group(serve: Callable[[Answer], CannedServer]) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("dropping to another user needs root and setpriv")
    server = serve(FRAMED)
    os.chmod(server.path, 0o600)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         *TRACEHOUND, "stats", "--socket", str(server.path)],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "HOME": "/"},
    )  # fmt: skip
    line = one_line_error(result)
    assert "Permission denied" in line and "api.group" in line and not server.requests


def test_http_errors_and_garbage_are_one_line(serve: Callable[[Answer], CannedServer]) -> None:
    forbidden = serve(error_response(HttpError(403, "uid 1000 is not in api.allow_uids")))
    for command in ("snapshot", "stats", "tail"):
        line = one_line_error(cli(forbidden, command))
        assert line == f"tracehound: {command}: 403: uid 1000 is not in api.allow_uids"
    ssh = serve(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    assert "stats: garbled answer from" in one_line_error(cli(ssh, "stats"))
    not_json = serve(response_bytes(200, b"<html>hi</html>", "text/html"))
    assert "not JSON" in one_line_error(cli(not_json, "stats"))
    assert "not a profile" in one_line_error(cli(serve(FRAMED), "snapshot", "--text"))
    bad_event = serve(sse_head() + sse_event("not json", event=TYPE_PREFIX + "x.v1", id=ID1))
    assert "not a CloudEvent" in one_line_error(cli(bad_event, "tail"))
    usage = one_line_error(cli(forbidden, "tail", "--last-event-id", "nope"), status=2)
    assert "--last-event-id" in usage and len(forbidden.requests) == 3


def hold_stream(
    first: bytes, then: bytes = b"", every: float = 0.0
) -> Callable[[socket.socket], None]:
    """Send ``first``, then ``then`` every ``every`` s (or nothing), until the client leaves."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(sse_head() + first)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if then:
                conn.sendall(then)
            time.sleep(every or 0.05)

    return answer


def test_ctrl_c_ends_tail_quietly(serve: Callable[[Answer], CannedServer]) -> None:
    server = serve(hold_stream(record(1, "process.exec.v1", 1)[1], sse_comment(), 0.2))
    tail = subprocess.Popen([*TRACEHOUND, "tail", "--socket", str(server.path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert tail.stdout is not None
    assert json.loads(tail.stdout.readline())["id"] == f"{1:032x}"  # it is streaming now
    tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=30)
    assert (tail.returncode, out, err) == (130, "", "")


def test_a_closed_stdout_ends_tail_quietly(serve: Callable[[Answer], CannedServer]) -> None:
    flood = b"".join(record(n, "file.open.v1", n)[1] for n in range(50))
    server = serve(hold_stream(b"", flood, 0.01))
    tail = subprocess.Popen([*TRACEHOUND, "tail", "--socket", str(server.path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert tail.stdout is not None and tail.stderr is not None
    assert msgspec.json.decode(tail.stdout.readline())["type"] == TYPE_PREFIX + "file.open.v1"
    tail.stdout.close()  # like `tracehound tail | head -1`
    assert tail.wait(timeout=30) == 1
    assert tail.stderr.read() == b""
