"""Routing and parameter validation for the local API (agent.api.routes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.api.http import HttpError, Request, RequestParser
from agent.api.routes import DEFAULT_LIMIT, MAX_LIMIT, Route, route
from agent.evidence.types import TYPE_PREFIX
from agent.limits import MAX_PID
from agent.query.filter import EventFilter
from agent.query.parse import parse_filter

EVENT_ID = "0123456789abcdef" * 2
NOW = 1_764_000_000_123_456_789


def request(target: str, method: str = "GET", headers: tuple[str, ...] = ()) -> Request:
    """Build the request the way the server will: through the parser."""
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
    head += "".join(f"{h}\r\n" for h in headers) + "\r\n"
    parsed = RequestParser().feed(head.encode("ascii"))
    assert parsed is not None
    return parsed


def routed(target: str, headers: tuple[str, ...] = ()) -> Route:
    return route(request(target, headers=headers))


def refused(target: str, method: str = "GET", headers: tuple[str, ...] = ()) -> HttpError:
    with pytest.raises(HttpError) as info:
        route(request(target, method, headers))
    return info.value


@pytest.mark.parametrize(
    ("target", "name", "params"),
    [
        ("/v1/snapshot", "snapshot", {}),
        ("/v1/snapshot?pid=0", "snapshot", {"pid": 0}),
        (
            "/v1/snapshot?pid=4242&comm=nginx&cgroup=18446744073709551615",
            "snapshot",
            {"pid": 4242, "comm": "nginx", "cgroup": 2**64 - 1},
        ),
        ("/v1/snapshot?comm=kworker%2F0%3A1", "snapshot", {"comm": "kworker/0:1"}),
        ("/v1/snapshot?comm=a+b", "snapshot", {"comm": "a b"}),
        ("/v1/snapshot?comm=" + "x" * 16, "snapshot", {"comm": "x" * 16}),
        ("/v1/stats", "stats", {}),
        (f"/v1/events/{EVENT_ID}", "event", {"id": EVENT_ID}),
        ("/v1/stream", "stream", {}),
        ("/v1/verify", "verify", {}),
        ("/healthz", "healthz", {}),
        ("/readyz", "readyz", {}),
        ("/metrics", "metrics", {}),
    ],
)
def test_good_routes(target: str, name: str, params: dict[str, int | str]) -> None:
    assert routed(target) == Route(name=name, params=params)  # type: ignore[arg-type]


def test_stream_resumes_from_last_event_id() -> None:
    got = routed("/v1/stream", headers=(f"Last-Event-ID: {EVENT_ID}",))
    assert got == Route(name="stream", params={"last_event_id": EVENT_ID})
    # EventSource sends no header on first connect; an empty one means the same.
    assert routed("/v1/stream", headers=("Last-Event-ID:",)).params == {}


@pytest.mark.parametrize(
    "headers",
    [
        ("Last-Event-ID: 42",),
        ("Last-Event-ID: " + EVENT_ID.upper(),),
        (f"Last-Event-ID: {EVENT_ID}", f"Last-Event-ID: {EVENT_ID}"),
    ],
)
def test_bad_last_event_id_is_400(headers: tuple[str, ...]) -> None:
    error = refused("/v1/stream", headers=headers)
    assert error.status == 400
    assert "Last-Event-ID" in error.reason


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/v1",
        "/v1/",
        "/v2/snapshot",
        "/v1/snapshot/",
        "/v1/Snapshot",
        "/v1/events/",
        f"/v1/events/{EVENT_ID}/",
        f"/v1/events/{EVENT_ID}/extra",
        "/healthz/",
        "/v1/snapshot.json",
        "/etc/passwd",
    ],
)
def test_unknown_paths_are_404(target: str) -> None:
    assert refused(target).status == 404


@pytest.mark.parametrize(
    "target", ["/v1/snapshot", "/healthz", "/v1/stream", f"/v1/events/{EVENT_ID}"]
)
def test_non_get_is_405_with_allow(target: str) -> None:
    error = refused(target, method="HEAD")
    assert error.status == 405
    assert ("Allow", "GET") in error.headers


def test_unknown_path_wins_over_bad_method() -> None:
    assert refused("/nope", method="HEAD").status == 404


@pytest.mark.parametrize(
    ("target", "param", "expected"),
    [
        ("/v1/snapshot?pid=-1", "pid", "integer from 0"),
        ("/v1/snapshot?pid=%2B1", "pid", "integer from 0"),
        ("/v1/snapshot?pid=1.0", "pid", "integer from 0"),
        ("/v1/snapshot?pid=", "pid", "integer from 0"),
        ("/v1/snapshot?pid=%20", "pid", "integer from 0"),
        ("/v1/snapshot?pid=%D9%A1", "pid", "integer from 0"),  # ARABIC-INDIC DIGIT ONE
        ("/v1/snapshot?pid=2147483648", "pid", "integer from 0"),
        ("/v1/snapshot?pid=" + "9" * 30, "pid", "integer from 0"),
        ("/v1/snapshot?comm=", "comm", "1 to 16"),
        ("/v1/snapshot?comm=" + "x" * 17, "comm", "1 to 16"),
        ("/v1/snapshot?cgroup=x", "cgroup", "cgroup id"),
        ("/v1/snapshot?cgroup=18446744073709551616", "cgroup", "cgroup id"),
        ("/v1/events?type=Process.Exec", "type", "record type"),
        ("/v1/events?type=", "type", "record type"),
        ("/v1/events?type=a%2Fb", "type", "record type"),
        ("/v1/events?type=a%20b", "type", "record type"),
        ("/v1/events?type=net.connect-v4_x", "type", "record type"),
        ("/v1/events?type=" + "a" * 129, "type", "record type"),
        ("/v1/events?since=5x", "since", "duration"),
        ("/v1/events?until=2025-13-01T00:00:00Z", "until", "RFC 3339"),
        ("/v1/events?since=1h&until=2h", "until", "after"),
        ("/v1/events?tree=1", "tree", "needs pid"),
        ("/v1/events?pid=1&tree=maybe", "tree", "true or false"),
        ("/v1/events?remote=10.0.0.1:70000", "remote", "CIDR"),
        ("/v1/events?container=abc", "container", "12 to 64"),
        ("/v1/events?uid=-1", "uid", "a uid"),
        ("/v1/events?cursor=x1", "cursor", "'next' token"),
        ("/v1/events?cursor=s1&last=5", "last", "cursor"),
        ("/v1/events?last=0", "last", "1 to 10000"),
        ("/v1/events?pid=0", "pid", "a pid from 1"),
        ("/v1/events?limit=0", "limit", "1 to 10000"),
        ("/v1/events?limit=10001", "limit", "1 to 10000"),
        ("/v1/events?limit=ten", "limit", "1 to 10000"),
        ("/v1/events/" + EVENT_ID.upper(), "id", "32 lower-case hex"),
        ("/v1/events/" + EVENT_ID[:-1], "id", "32 lower-case hex"),
        ("/v1/events/" + EVENT_ID + "0", "id", "32 lower-case hex"),
        ("/v1/events/" + "g" * 32, "id", "32 lower-case hex"),
    ],
)
def test_bad_params_are_400_naming_the_parameter(target: str, param: str, expected: str) -> None:
    error = refused(target)
    assert error.status == 400
    assert f"'{param}'" in error.reason
    assert expected in error.reason


@pytest.mark.parametrize(
    "target",
    [
        "/v1/snapshot?pdi=1",
        "/v1/snapshot?limit=5",
        "/v1/stats?pid=1",
        "/healthz?x",
        f"/v1/events/{EVENT_ID}?limit=1",
    ],
)
def test_unknown_params_are_400(target: str) -> None:
    error = refused(target)
    assert error.status == 400
    assert "unknown parameter" in error.reason


def test_repeated_param_is_400() -> None:
    error = refused("/v1/snapshot?pid=1&pid=2")
    assert error.status == 400
    assert "'pid'" in error.reason and "more than once" in error.reason


def test_long_bad_values_are_truncated_in_the_message() -> None:
    error = refused("/v1/events?type=" + "A" * 500)
    assert "A" * 41 not in error.reason
    error = refused("/v1/snapshot?comm=" + "A" * 500)
    assert len(error.reason) < 200


def test_events_routes_parse_their_filter_with_the_shared_parser() -> None:
    got = route(request("/v1/events"), now_ns=NOW)
    assert got == Route(name="events", params={"limit": DEFAULT_LIMIT}, filter=EventFilter())
    target = (
        "/v1/events?type=process.exec&type=file.open,file.rename&pid=7&tree=1&since=5m"
        "&until=2025-11-24T16:00:00.5Z&comm=a+b&exe=/bin/sh&path=/etc/*"
        "&container=0123456789ab&remote=%5B::1%5D:53&uid=0&limit=10000&cursor=s41"
    )
    got = route(request(target), now_ns=NOW)
    assert got.params == {"limit": MAX_LIMIT, "after_seq": 41}
    assert got.filter == parse_filter(
        {
            "type": ["process.exec", "file.open,file.rename"], "pid": ["7"], "tree": ["1"],
            "since": ["5m"], "until": ["2025-11-24T16:00:00.5Z"], "comm": ["a b"],
            "exe": ["/bin/sh"], "path": ["/etc/*"], "container": ["0123456789ab"],
            "remote": ["[::1]:53"], "uid": ["0"],
        },
        now_ns=NOW,
    )  # fmt: skip
    assert got.filter is not None and got.filter.since_ns == NOW - 300 * 10**9
    assert got.filter.types == {
        TYPE_PREFIX + "process.exec.v1", TYPE_PREFIX + "file.open.v1", TYPE_PREFIX + "file.rename.v1"
    }  # fmt: skip
    assert route(request("/v1/events?last=5")).params == {"limit": DEFAULT_LIMIT, "last": 5}


@given(st.integers(min_value=1, max_value=MAX_PID), st.integers(min_value=1, max_value=MAX_LIMIT))
def test_any_valid_pid_and_limit_route(pid: int, limit: int) -> None:
    got = routed(f"/v1/events?pid={pid}&limit={limit}")
    assert got.params == {"limit": limit}
    assert got.filter == EventFilter(pid=pid)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_arbitrary_query_values_give_a_route_or_an_http_error(value: str) -> None:
    from urllib.parse import quote

    for name in ("pid", "comm", "cgroup", "type", "limit"):
        path = "/v1/events" if name in ("type", "limit") else "/v1/snapshot"
        try:
            parsed = request(f"{path}?{name}={quote(value, safe='')}")
        except HttpError as exc:  # control bytes are the parser's to refuse
            assert exc.status == 400
            continue
        try:
            got = route(parsed)
        except HttpError as exc:
            assert exc.status == 400
            assert f"'{name}'" in exc.reason
        else:
            assert name in got.params or (got.filter is not None and name in ("type", "pid"))
