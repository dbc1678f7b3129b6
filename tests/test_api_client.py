"""The CLI's side of the local API, pure: request bytes, response framing
and SSE parsing, with input split at every byte."""

from __future__ import annotations

import pytest

from agent.api.client import (
    ApiResponseError,
    ResponseParser,
    SseMessage,
    SseParser,
    request_bytes,
)
from agent.api.http import RequestParser
from agent.api.sse import sse_comment, sse_event


def test_request_bytes_parse_on_the_server_side() -> None:
    raw = request_bytes("/v1/snapshot", {"comm": "a b&c", "pid": 7}, {"Last-Event-ID": "x"})
    request = RequestParser().feed(raw)
    assert request is not None
    assert request.path == "/v1/snapshot"
    assert request.query == {"comm": ["a b&c"], "pid": ["7"]}
    assert request.header("last-event-id") == "x"


RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'
)


@pytest.mark.parametrize("cut", range(len(RESPONSE) + 1))
def test_response_framed_by_length_split_anywhere(cut: int) -> None:
    parser = ResponseParser()
    parser.feed(RESPONSE[:cut])
    parser.feed(RESPONSE[cut:] + b"trailing junk is not body")
    assert parser.complete and parser.response is not None
    assert parser.response.status == 200
    assert parser.response.body == b'{"a": true}'
    assert parser.response.headers["content-type"] == "application/json"


def test_response_without_length_streams() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: 1\n")
    assert parser.response is not None and not parser.framed and not parser.complete
    assert parser.take_body() == b"id: 1\n"
    parser.feed(b"data: x\n\n")
    assert parser.take_body() == b"data: x\n\n"


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_garbage_responses_are_refused(garbage: bytes) -> None:
    with pytest.raises(ApiResponseError):
        ResponseParser().feed(garbage)


STREAM = (
    sse_comment("hello")
    + sse_event('{"n": 1}', event="t.one", id="a" * 32)
    + sse_event("line1\nline2", event="t.two", id="b" * 32)
    + sse_event('{"dropped": 3}', event="overflow")
).replace(b"data: line2\n\n", b"data: line2\r\n\r\n")
EXPECTED = [
    SseMessage(id="a" * 32, event="t.one", data='{"n": 1}'),
    SseMessage(id="b" * 32, event="t.two", data="line1\nline2"),
    SseMessage(id="b" * 32, event="overflow", data='{"dropped": 3}'),
]


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_sse_split_anywhere(cut: int) -> None:
    parser = SseParser()
    got = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
    assert got == EXPECTED
    assert parser.last_event_id == "b" * 32


def test_sse_cr_line_ends_and_default_event() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\r\rdata: y\r") == [SseMessage(id=None, event="message", data="x")]
    assert parser.feed(b"\n\n") == [SseMessage(id=None, event="message", data="y")]
