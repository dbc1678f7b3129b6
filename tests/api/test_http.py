"""The strict HTTP/1.1 request parser and response framing (agent.api.http)."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.api.http import (
    HttpError,
    Request,
    RequestParser,
    error_response,
    reason_phrase,
    response_bytes,
    sse_response_head,
)

GOOD = b"GET /v1/snapshot?pid=42&comm=curl HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"


def parse_one(data: bytes, **limits: int) -> Request:
    request = RequestParser(**limits).feed(data)
    assert request is not None
    return request


def status_of(data: bytes, **limits: int) -> int:
    with pytest.raises(HttpError) as info:
        parser = RequestParser(**limits)
        while parser.feed(data) is not None:
            data = b""
    return info.value.status


def drain(parser: RequestParser, data: bytes) -> list[Request]:
    """Feed ``data`` and collect every request it completes (pipelining)."""
    requests: list[Request] = []
    request = parser.feed(data)
    while request is not None:
        requests.append(request)
        request = parser.feed(b"")
    return requests


# --- well-formed requests -------------------------------------------------


def test_curl_style_request() -> None:
    request = parse_one(GOOD)
    assert request.method == "GET"
    assert request.target == "/v1/snapshot?pid=42&comm=curl"
    assert request.path == "/v1/snapshot"
    assert request.query == {"pid": ["42"], "comm": ["curl"]}
    assert request.headers == [
        ("host", "localhost"),
        ("user-agent", "curl/8"),
        ("accept", "*/*"),
    ]
    assert request.http_version == "1.1"
    assert request.keep_alive is True
    assert request.header("HOST") == "localhost"
    assert request.header("missing") is None


def test_incomplete_head_returns_none_and_buffers() -> None:
    parser = RequestParser()
    assert parser.feed(GOOD[:-1]) is None
    assert parser.buffered == len(GOOD) - 1
    assert parser.feed(GOOD[-1:]) is not None
    assert parser.buffered == 0


def test_query_decoding() -> None:
    request = parse_one(
        b"GET /x?a=1&b=two+words&a=%32&empty=&flag&&c=%E2%9C%93 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert request.query == {
        "a": ["1", "2"],
        "b": ["two words"],
        "empty": [""],
        "flag": [""],
        "c": ["\u2713"],
    }


def test_path_percent_decoding_of_ordinary_bytes() -> None:
    assert (
        parse_one(b"GET /v1/a%20b/%E2%9C%93 HTTP/1.1\r\nHost: h\r\n\r\n").path == "/v1/a b/\u2713"
    )


def test_trailing_slash_is_kept_for_routing_to_refuse() -> None:
    assert parse_one(b"GET /v1/stats/ HTTP/1.1\r\nHost: h\r\n\r\n").path == "/v1/stats/"
    assert parse_one(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").path == "/"


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, Close", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"close", False),
    ],
)
def test_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    head = b"GET / HTTP/" + version + b"\r\nHost: h\r\n"
    if connection is not None:
        head += b"Connection: " + connection + b"\r\n"
    assert parse_one(head + b"\r\n").keep_alive is keep_alive


def test_http10_needs_no_host() -> None:
    assert parse_one(b"GET /healthz HTTP/1.0\r\n\r\n").http_version == "1.0"


def test_head_method_and_zero_content_length_accepted() -> None:
    request = parse_one(b"HEAD /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert request.method == "HEAD"


def test_leading_empty_lines_are_ignored() -> None:
    assert parse_one(b"\r\n\r\n" + GOOD).path == "/v1/snapshot"


def test_header_whitespace_trimmed_and_empty_value_allowed() -> None:
    request = parse_one(b"GET / HTTP/1.1\r\nHost:\t h \t\r\nX-Empty:\r\n\r\n")
    assert request.headers == [("host", "h"), ("x-empty", "")]


def test_pipelined_requests_fed_one_byte_at_a_time() -> None:
    second = b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    stream = GOOD + second
    parser = RequestParser()
    seen: list[tuple[int, Request]] = []
    for index in range(len(stream)):
        request = parser.feed(stream[index : index + 1])
        if request is not None:
            seen.append((index, request))
    assert [i for i, _ in seen] == [len(GOOD) - 1, len(stream) - 1]
    assert [r.path for _, r in seen] == ["/v1/snapshot", "/healthz"]
    assert seen[1][1].keep_alive is False
    assert parser.buffered == 0


def test_pipelined_requests_in_one_read() -> None:
    parser = RequestParser()
    requests = drain(parser, GOOD * 3 + GOOD[:10])
    assert len(requests) == 3
    assert parser.buffered == 10


PIPELINE = st.lists(
    st.sampled_from(
        [
            GOOD,
            b"GET /healthz HTTP/1.0\r\n\r\n",
            b"\r\nGET /v1/events?type=process.exec&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /v1/stats HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n",
        ]
    ),
    min_size=1,
    max_size=5,
)


@given(PIPELINE, st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_any_split_of_a_pipeline_gives_the_same_requests(
    requests: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(requests)
    expected = drain(RequestParser(), stream)
    assert len(expected) == len(requests)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    parser = RequestParser()
    got: list[Request] = []
    for start, stop in itertools.pairwise(bounds):
        got.extend(drain(parser, stream[start:stop]))
    assert got == expected
    assert parser.buffered == 0


# --- hostile and malformed requests ---------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        # request line
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
        (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (b"DELETE /v1/events HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        # target
        (b"GET http://localhost/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET v1/stats HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/\tx HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/stats#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/%4 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /v1/%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x?a=%00 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x?a=%0d%0a HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x?a=%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x?=1 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        # header fields
        (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x1bb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX\xff: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        # line endings
        (b"GET / HTTP/1.1\nHost: h\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 400),
        # bodies
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ],
)
def test_malformed_requests_are_refused(data: bytes, status: int) -> None:
    assert status_of(data) == status


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/../etc/passwd",
        b"/v1/..",
        b"/..",
        b"/v1/./snapshot",
        b"/v1/%2e%2e/x",
        b"/v1/%2E%2E/x",
        b"/v1/.%2e/x",
        b"/v1/%2e/x",
        b"//x",
        b"/v1//snapshot",
        b"/v1/snapshot%00",
        b"/v1/snapshot%00.json",
        b"/v1/a\\b",
        b"/v1/%5c..%5cetc",
        b"/v1/a%2fb",
        b"/v1/a%2F..%2Fb",
        b"/v1/%0d%0aSet-Cookie:x",
        b"/v1/%c0%ae%c0%ae/x",  # overlong UTF-8 for '..'
    ],
)
def test_path_traversal_and_odd_bytes_are_400(target: bytes) -> None:
    assert status_of(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 400


def test_header_flood_is_431() -> None:
    def head(count: int) -> bytes:
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
        return b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"

    assert len(parse_one(head(32)).headers) == 32
    assert status_of(head(33)) == 431
    assert status_of(head(5), max_headers=4) == 431


def test_head_over_the_size_limit_is_431() -> None:
    base = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
    exact = base + b"a" * (8192 - len(base) - 4) + b"\r\n\r\n"
    assert len(exact) == 8192
    assert parse_one(exact).header("x-pad") is not None
    over = base + b"a" * (8193 - len(base) - 4) + b"\r\n\r\n"
    assert status_of(over) == 431


def test_size_limit_applies_before_the_head_is_complete() -> None:
    # A client that never finishes its head cannot make us buffer past the limit.
    parser = RequestParser(max_request_bytes=1024)
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n") is None
    with pytest.raises(HttpError) as info:
        for _ in range(200):
            parser.feed(b"X-Slow: " + b"z" * 20 + b"\r\n")
    assert info.value.status == 431
    assert parser.buffered == 0


def test_overlong_request_line_is_414() -> None:
    assert status_of(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414
    assert status_of(b"GET /" + b"a" * 9000) == 414


def test_endless_empty_lines_hit_the_limit() -> None:
    assert status_of(b"\r\n" * 5000) in (414, 431)


def test_errors_are_sticky() -> None:
    parser = RequestParser()
    with pytest.raises(HttpError) as first:
        parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(HttpError) as again:
        parser.feed(GOOD)
    assert again.value is first.value
    assert first.value.headers == (("Allow", "GET, HEAD"),)


def test_a_bad_request_after_a_good_one_does_not_spoil_it() -> None:
    parser = RequestParser()
    request = parser.feed(GOOD + b"GET / HTTP/1.1\nHost: h\n\n")
    assert request is not None and request.path == "/v1/snapshot"
    with pytest.raises(HttpError) as info:
        parser.feed(b"")
    assert info.value.status == 400


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        RequestParser(max_request_bytes=0)
    with pytest.raises(ValueError):
        RequestParser(max_headers=0)


def _run_parser(data: bytes, chunk: int) -> None:
    parser = RequestParser(max_request_bytes=512, max_headers=8)
    for start in range(0, len(data), chunk):
        try:
            requests = drain(parser, data[start : start + chunk])
        except HttpError as exc:
            assert 400 <= exc.status <= 505
            return
        for request in requests:
            assert request.method in ("GET", "HEAD")
            assert request.path.startswith("/")
            assert ".." not in request.path.split("/")
            assert "\x00" not in request.path
            assert "\\" not in request.path
    assert parser.buffered <= 512


@settings(max_examples=400)
@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
def test_random_bytes_only_ever_raise_http_error(data: bytes, chunk: int) -> None:
    _run_parser(data, chunk)


@settings(max_examples=400)
@given(
    st.sampled_from([GOOD, b"GET /healthz HTTP/1.0\r\n\r\n"]),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),
            st.binary(min_size=0, max_size=4),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=6,
    ),
    st.integers(min_value=1, max_value=16),
)
def test_mutated_requests_only_ever_raise_http_error(
    base: bytes, edits: list[tuple[int, bytes, int]], chunk: int
) -> None:
    data = bytearray(base * 2)
    for position, insert, delete in edits:
        at = min(position, len(data))
        data[at : at + delete] = insert
    _run_parser(bytes(data), chunk)


# --- responses ------------------------------------------------------------


def parse_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_response_bytes() -> None:
    data = response_bytes(200, b'{"ok":true}', "application/json", [("X-Thing", "1")])
    status_line, headers, body = parse_response(data)
    assert status_line == "HTTP/1.1 200 OK"
    assert headers == {
        "Content-Type": "application/json",
        "Content-Length": "11",
        "Connection": "keep-alive",
        "X-Thing": "1",
    }
    assert body == b'{"ok":true}'
    assert "Date" not in headers
    assert data == response_bytes(200, b'{"ok":true}', "application/json", [("X-Thing", "1")])


def test_response_close_and_head_only() -> None:
    data = response_bytes(404, b"nope", "text/plain", keep_alive=False, head_only=True)
    status_line, headers, body = parse_response(data)
    assert status_line == "HTTP/1.1 404 Not Found"
    assert headers["Connection"] == "close"
    assert headers["Content-Length"] == "4"
    assert body == b""


@pytest.mark.parametrize(
    "header",
    [("X-A", "v\r\nSet-Cookie: x"), ("X-A", "v\nx"), ("X A", "v"), ("X-A:", "v"), ("X-A", "\x00")],
)
def test_response_headers_cannot_split_the_response(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        response_bytes(200, b"", "text/plain", [header])


@pytest.mark.parametrize("status", [100, 199, 204, 304, 600])
def test_response_refuses_statuses_it_cannot_frame(status: int) -> None:
    with pytest.raises(ValueError):
        response_bytes(status, b"", "text/plain")


def test_reason_phrases() -> None:
    assert reason_phrase(431) == "Request Header Fields Too Large"
    assert reason_phrase(505) == "HTTP Version Not Supported"
    assert reason_phrase(299) == ""
    assert response_bytes(299, b"", "text/plain").startswith(b"HTTP/1.1 299 \r\n")


def test_error_response_is_json_and_closes() -> None:
    error = HttpError(405, "method POST is not allowed", (("Allow", "GET"),))
    status_line, headers, body = parse_response(error_response(error))
    assert status_line == "HTTP/1.1 405 Method Not Allowed"
    assert headers["Connection"] == "close"
    assert headers["Allow"] == "GET"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert msgspec.json.decode(body) == {
        "status": 405,
        "error": "Method Not Allowed",
        "detail": "method POST is not allowed",
    }
    _, headers, _ = parse_response(error_response(HttpError(404, "x"), keep_alive=True))
    assert headers["Connection"] == "keep-alive"


def test_sse_response_head() -> None:
    data = sse_response_head([("X-Accel-Buffering", "no")])
    assert data.endswith(b"\r\n\r\n")
    status_line, headers, body = parse_response(data)
    assert status_line == "HTTP/1.1 200 OK"
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-store"
    assert headers["Connection"] == "close"
    assert headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in headers
    assert body == b""
