"""A producer's event, sans-I/O: the POST body framing (agent.api.http), its
shape (agent.api.produce.parse_produced), the per-uid token bucket
(RateLimiter) and the record the mapper makes of it (Mapper.app_event)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from agent.api.http import HttpError, RequestParser
from agent.api.produce import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_MESSAGE_CHARS,
    ProducedEvent,
    RateLimiter,
    parse_produced,
)
from agent.api.routes import route
from agent.evidence.app_event import AppEvent
from agent.evidence.mapper import Mapper
from agent.evidence.record_types import TYPE_APP, decode_payload
from agent.evidence.types import Anchor
from agent.redact import Redactor

TOKEN = "ghp_" + "Pr0duc3rT0kenForTests0123456789abcdef"[:36]


def post(body: bytes, *extra: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    head = b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % size
    return head + b"".join(extra) + b"\r\n" + body


def parser() -> RequestParser:
    return RequestParser(max_body_bytes=MAX_BODY_BYTES)


# -- framing -----------------------------------------------------------------
def test_a_post_body_comes_whole_however_it_arrives() -> None:
    body = b'{"message": "deploy v1.2 started"}'
    data = post(body) + b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
    p = parser()
    got = []
    for i in range(len(data)):  # one byte at a time
        request = p.feed(data[i : i + 1])
        while request is not None:
            got.append(request)
            request = p.feed(b"")
    assert [(r.method, r.path, r.body) for r in got] == [
        ("POST", "/v1/events", body),
        ("GET", "/healthz", b""),
    ]
    assert route(got[0]).name == "produce" and route(got[0]).body == body


def test_a_body_half_sent_counts_as_mid_request() -> None:
    p = parser()
    assert p.feed(post(b'{"message": "x"}')[:-3]) is None
    assert p.buffered > 0  # the server answers 408 on its idle timeout, not silence


def test_a_body_over_the_limit_is_refused_from_the_head() -> None:
    p = parser()
    with pytest.raises(HttpError) as info:
        p.feed(post(b"", length=MAX_BODY_BYTES + 1))  # not a byte of the body sent
    assert info.value.status == 413
    assert f"over the {MAX_BODY_BYTES}-byte limit" in info.value.reason
    with pytest.raises(HttpError) as huge:
        parser().feed(
            b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
        )
    assert huge.value.status == 413


def test_only_a_post_takes_a_body_and_only_where_bodies_are_on() -> None:
    with pytest.raises(HttpError) as get:
        parser().feed(b"GET /v1/stats HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
    assert get.value.status == 413
    with pytest.raises(HttpError) as off:  # the metrics server's parser: no POST at all
        RequestParser().feed(post(b"{}"))
    assert off.value.status == 405 and off.value.headers == (("Allow", "GET, HEAD"),)
    with pytest.raises(HttpError) as chunked:
        parser().feed(b"POST /v1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert chunked.value.status == 400


def test_expect_100_continue_is_answered_once() -> None:
    p = parser()
    assert p.feed(post(b'{"message": "x"}', b"Expect: 100-continue\r\n")[:-16]) is None
    assert p.take_continue() is True
    assert p.take_continue() is False
    request = p.feed(b'{"message": "x"}')
    assert request is not None and request.body == b'{"message": "x"}'
    q = parser()
    assert q.feed(post(b'{"message": "x"}')[:-16]) is None
    assert q.take_continue() is False  # not asked for


def test_post_elsewhere_is_405_and_produce_takes_no_parameters() -> None:
    other = parser().feed(b"POST /v1/stats HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert other is not None
    with pytest.raises(HttpError) as info:
        route(other)
    assert info.value.status == 405
    query = parser().feed(b"POST /v1/events?pid=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert query is not None
    with pytest.raises(HttpError) as param:
        route(query)
    assert param.value.status == 400


# -- the body's shape ----------------------------------------------------------
def refused(body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(HttpError) as info:
        parse_produced(raw)
    assert info.value.status == 400
    assert "\n" not in info.value.reason
    return info.value.reason


def test_a_good_body_with_defaults() -> None:
    event = parse_produced(b'{"message": "deploy v1.2 started"}')
    assert event == ProducedEvent(message="deploy v1.2 started", kind="mark", data={})
    full = parse_produced(
        json.dumps(
            {"message": "m", "kind": "deploy.start", "data": {"v": "1.2", "n": [1, None]}}
        ).encode()
    )
    assert full.kind == "deploy.start" and full.data == {"v": "1.2", "n": [1, None]}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "got nothing"),
        (b"deploy started", "not JSON"),
        (b'{"message": "x"', "not JSON"),
        (b"[1, 2]", "Expected `object`"),
        ({"kind": "mark"}, "missing required field `message`"),
        ({"message": 5}, "Expected `str`, got `int` - at `$.message`"),
        ({"message": "x", "data": [1]}, "Expected `object`, got `array` - at `$.data`"),
        ({"message": "x", "mesage": "y"}, "unknown field `mesage`"),
        ({"message": ""}, "$.message: expected 1 to"),
        ({"message": "x" * (MAX_MESSAGE_CHARS + 1)}, f"at most {MAX_MESSAGE_CHARS} characters"),
        ({"message": "x", "kind": "Deploy Start"}, "$.kind: expected a name"),
        ({"message": "x", "kind": ""}, "$.kind: expected a name"),
        ({"message": "x", "data": {"ratio": 0.5}}, "$.data.ratio: numbers with a fraction"),
        ({"message": "x", "data": {"n": 2**60}}, "$.data.n: integers must be within"),
        ({"message": "x", "data": {"bad key": 1}}, "key 'bad key' is not a name"),
        ({"message": "x", "data": {"a": {"b": {"c": {"d": {}}}}}}, "$.data.a.b.c.d: nested deeper"),
        ({"message": "x", "data": {"l": list(range(MAX_ITEMS))}}, f"more than {MAX_ITEMS} values"),
        (b'{"message": "\\ud800"}', "not JSON"),
        (b'{"message": "x", "data": {"s": ["\\udfff"]}}', "surrogate"),
    ],
)
def test_bad_bodies_are_400_with_one_line_naming_the_member(body: Any, says: str) -> None:
    assert says in refused(body)


def test_the_limits_are_inclusive() -> None:
    deep = {"a": {"b": {"c": {}}}}  # data, a, b, c: MAX_DEPTH levels of containers
    assert MAX_DEPTH == 4
    assert parse_produced(json.dumps({"message": "x" * MAX_MESSAGE_CHARS, "data": deep}).encode())
    assert parse_produced(
        json.dumps({"message": "x", "data": {"l": list(range(MAX_ITEMS - 1))}}).encode()
    )


# -- rate ------------------------------------------------------------------------
def test_the_bucket_gives_a_burst_then_the_rate() -> None:
    limiter = RateLimiter()
    answers = [limiter.take(7, 100.0, rate=2.0, burst=5) for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert answers[5:] == [1.0, 1.0, 1.0]
    assert limiter.limited == 3
    assert limiter.take(7, 100.5, rate=2.0, burst=5) is None  # one token back after 0.5 s
    assert limiter.take(7, 100.5, rate=2.0, burst=5) == 1.0
    assert limiter.take(8, 100.5, rate=2.0, burst=5) is None  # another uid: its own bucket
    slow = RateLimiter()
    slow.take(1, 0.0, rate=0.1, burst=1)
    assert slow.take(1, 0.0, rate=0.1, burst=1) == 10.0  # Retry-After: when a token is back


def test_the_table_is_bounded_and_its_overflow_counted() -> None:
    limiter = RateLimiter(capacity=3)
    for uid in (1, 2, 3):
        assert limiter.take(uid, 0.0, rate=1.0, burst=2) is None
    assert limiter.take(4, 0.0, rate=1.0, burst=2) == 1.0  # every bucket in use
    assert limiter.table_full == 1 and len(limiter) == 3
    # Two seconds on, the buckets have refilled: they hold nothing, room is made.
    assert limiter.take(4, 2.0, rate=1.0, burst=2) is None
    assert len(limiter) == 1
    # uid 1's spent bucket was never forgotten while it mattered.
    limiter = RateLimiter(capacity=1)
    limiter.take(1, 0.0, rate=1.0, burst=1)
    assert limiter.take(2, 0.5, rate=1.0, burst=1) == 1.0
    assert limiter.take(1, 0.5, rate=1.0, burst=1) == 1.0


# -- the record -----------------------------------------------------------------
ANCHOR = Anchor(boot_id="boot-produce", wall_ns=1_714_564_800_000_000_000, boottime_ns=10**12)


def app_event(**changes: Any) -> AppEvent:
    base: dict[str, Any] = {
        "pid": 4242, "uid": 1000, "gid": 1000, "exe": b"/usr/bin/curl", "comm": b"curl",
        "cgroup_id": 0, "peer_gone": False, "kind": "deploy.start",
        "message": "deploy v1.2 started", "data": {"version": "1.2"}, "ts_ns": 10**12 + 7,
    }  # fmt: skip
    return AppEvent(**{**base, **changes})


def mapped(event: AppEvent, redactor: Redactor | None = None) -> dict[str, Any]:
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=redactor)
    mapper.anchor_record()
    record = mapper.app_event(event)
    assert record.type == TYPE_APP
    body: dict[str, Any] = json.loads(record.body)
    decode_payload(TYPE_APP, msgspec.json.encode(body["data"]))  # its payload type's shape
    return body


def test_the_record_says_who_and_what_and_when() -> None:
    body = mapped(app_event())
    assert body["type"] == TYPE_APP and body["subject"] == "pid/4242"
    assert body["time"] == "2024-05-01T12:00:00.000000007Z"
    data = body["data"]
    assert (data["pid"], data["uid"], data["gid"]) == (4242, 1000, 1000)
    assert (data["exe"], data["comm"], data["peer_gone"]) == ("/usr/bin/curl", "curl", False)
    assert (data["kind"], data["message"], data["data"]) == (
        "deploy.start", "deploy v1.2 started", {"version": "1.2"},
    )  # fmt: skip
    assert data["redacted"] == [] and data["ts_ns"] == str(10**12 + 7)


def test_every_text_is_redacted_and_counted() -> None:
    redactor = Redactor.builtin()
    body = mapped(
        app_event(
            message=f"deploy with {TOKEN}",
            data={"token": TOKEN, "list": ["ok", {"deep": TOKEN}], TOKEN: 1, "n": 3},
        ),
        redactor,
    )
    assert TOKEN not in json.dumps(body)
    data = body["data"]
    assert "github-token" in data["redacted"]
    assert data["data"]["n"] == 3 and data["data"]["list"][0] == "ok"
    assert len(data["data"]) == 4  # the key that held a secret is kept, masked
    assert redactor.stats.fields_redacted["github-token"] == 4


def test_keys_made_equal_by_redaction_are_all_kept() -> None:
    other = "ghp_" + "Z" * 36
    body = mapped(app_event(data={TOKEN: 1, other: 2}))
    assert sorted(body["data"]["data"].values()) == [1, 2]


def test_raw_bytes_in_exe_and_a_gone_peer() -> None:
    body = mapped(app_event(exe=b"/tmp/\xffevil\nname", comm=b"a\x1b[31m"))
    data = body["data"]
    assert data["escaped"] == ["exe"] and "\\xff" in data["exe"]
    gone = mapped(app_event(exe=b"", comm=b"", peer_gone=True))["data"]
    assert (gone["exe"], gone["comm"], gone["peer_gone"]) == ("", "", True)
