"""Which endpoint a request names, with its parameters validated.

Pure: takes a parsed :class:`~agent.api.http.Request` (whose path is already
decoded and free of ``..``, ``//`` and odd bytes) and returns a
:class:`Route` or raises :class:`~agent.api.http.HttpError`:

- 404 for a path that is not an endpoint (trailing slashes included: there
  is exactly one spelling of each path);
- 405 (with ``Allow: GET``) for any method but GET on a known path (but
  POST on ``/v1/events``);
- 400 for a bad parameter, an unknown one (a typo like ``?pdi=1`` would
  otherwise silently return everything), or one given twice. The message
  names the parameter and what was expected.

Endpoints and their parameters::

    /v1/snapshot      pid, comm, cgroup, container, tree   (all optional
                      filters, ANDed; container: an id prefix of 12 to 64
                      hex digits; tree: a pid, that process and its
                      descendants)
    /v1/stats
    /v1/events        the filters of agent.query.parse (since, until, type,
                      pid, tree, comm, exe, path, container, remote, uid;
                      only type may repeat), limit (1..10000, default 100),
                      and cursor (the "next" of the page before) or last
                      (the newest N instead: 1..10000)
    POST /v1/events   a producer's event: the body (agent.api.produce), no parameters
    /v1/events/{id}   id: 32 lower-case hex digits
    /v1/stream        Last-Event-ID header   (32 lower-case hex digits, optional)
    /v1/verify, /healthz, /readyz, /metrics
"""

from __future__ import annotations

import re
import time
from typing import Literal

import msgspec

from agent.api.http import HttpError, Request
from agent.capture.container_id import CONTAINER_PREFIX, CONTAINER_PREFIX_EXPECTED
from agent.query.filter import EventFilter, seq_of_cursor
from agent.query.parse import FILTER_NAMES, FilterError, parse_filter

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Route", "RouteName", "route"]

RouteName = Literal[
    "snapshot", "stats", "events", "event", "stream", "verify", "healthz", "readyz", "metrics",
    "produce",
]  # fmt: skip

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
PID_MAX = 2**31 - 1  # pid_t is a signed 32-bit int
CGROUP_MAX = 2**64 - 1  # cgroup ids are u64 inode numbers
COMM_MAX = 16

_DIGITS = re.compile(r"[0-9]{1,20}")
_EVENT_ID = re.compile(r"[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Route(msgspec.Struct, frozen=True):
    """The endpoint a request names and its validated parameters.

    ``params`` holds only parameters that were given, plus defaults (``limit``
    for events): ints for pid, cgroup and limit; str for the rest. For
    ``events``: ``limit``, and ``after_seq`` (from ``cursor``) or ``last``
    when given; its filters are parsed into ``filter``.
    ``body``: a POST's, unread (``produce``: checked by its handler, after the
    server has checked who may send it and how often).
    """

    name: RouteName
    params: dict[str, int | str]
    filter: EventFilter | None = None
    body: bytes = b""


# path -> (route name, query parameters it accepts)
_FIXED: dict[str, tuple[RouteName, frozenset[str]]] = {
    "/v1/snapshot": ("snapshot", frozenset({"pid", "comm", "cgroup", "container", "tree"})),
    "/v1/stats": ("stats", frozenset()),
    "/v1/events": ("events", frozenset({*FILTER_NAMES, "limit", "cursor", "last"})),
    "/v1/stream": ("stream", frozenset()),
    "/v1/verify": ("verify", frozenset()),
    "/healthz": ("healthz", frozenset()),
    "/readyz": ("readyz", frozenset()),
    "/metrics": ("metrics", frozenset()),
}
_EVENT_PREFIX = "/v1/events/"
_PRODUCE = "/v1/events"


def _bad(name: str, expected: str, value: str) -> HttpError:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return HttpError(400, f"parameter '{name}': expected {expected}, got {shown!r}")


def _int(name: str, value: str, low: int, high: int, expected: str) -> int:
    if _DIGITS.fullmatch(value) is None:
        raise _bad(name, expected, value)
    number = int(value)
    if not low <= number <= high:
        raise _bad(name, expected, value)
    return number


def _validate(name: str, value: str) -> int | str:
    if name in ("pid", "tree"):
        return _int(name, value, 0, PID_MAX, f"an integer from 0 to {PID_MAX}")
    if name == "cgroup":
        return _int(name, value, 0, CGROUP_MAX, "a cgroup id (an unsigned 64-bit integer)")
    if name == "container":
        if CONTAINER_PREFIX.fullmatch(value) is None:
            raise _bad(name, CONTAINER_PREFIX_EXPECTED, value)
        return value
    if name == "limit":
        return _int(name, value, 1, MAX_LIMIT, f"an integer from 1 to {MAX_LIMIT}")
    if name == "comm":
        if not 1 <= len(value) <= COMM_MAX or _CONTROL.search(value) is not None:
            raise _bad(name, f"a command name of 1 to {COMM_MAX} printable characters", value)
        return value
    raise AssertionError(f"no validator for {name}")  # pragma: no cover


def _event_id(name: str, value: str) -> str:
    if _EVENT_ID.fullmatch(value) is None:
        raise _bad(name, "an event id of 32 lower-case hex digits", value)
    return value


def _events(request: Request, now_ns: int) -> Route:
    """``/v1/events``: its filters parsed by the one parser the CLI uses."""
    accepted = _FIXED["/v1/events"][1]
    values: dict[str, list[str]] = {}
    params: dict[str, int | str] = {"limit": DEFAULT_LIMIT}
    for name, given in request.query.items():
        if name not in accepted:
            expected = ", ".join(sorted(accepted))
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise HttpError(400, f"unknown parameter {shown!r}; this endpoint takes {expected}")
        if name != "type" and len(given) != 1:
            raise HttpError(400, f"parameter '{name}' given more than once")
        if name in ("limit", "last"):
            params[name] = _int(name, given[0], 1, MAX_LIMIT, f"an integer from 1 to {MAX_LIMIT}")
        elif name == "cursor":
            seq = seq_of_cursor(given[0])
            if seq is None:
                raise _bad(name, "the 'next' token of an earlier page", given[0])
            params["after_seq"] = seq
        else:
            values[name] = given
    if "after_seq" in params and "last" in params:
        raise HttpError(400, "parameter 'last': cannot be given with 'cursor'")
    try:
        flt = parse_filter(values, now_ns=now_ns)
    except FilterError as err:
        raise HttpError(400, f"parameter '{err.name}': {err.detail}") from None
    return Route(name="events", params=params, filter=flt)


def _check_method(request: Request) -> None:
    if request.method != "GET":
        raise HttpError(
            405, f"method {request.method} is not allowed here; expected GET", (("Allow", "GET"),)
        )


def _query_params(request: Request, accepted: frozenset[str]) -> dict[str, int | str]:
    params: dict[str, int | str] = {}
    for name, values in request.query.items():
        if name not in accepted:
            expected = ", ".join(sorted(accepted)) if accepted else "no parameters"
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise HttpError(400, f"unknown parameter {shown!r}; this endpoint takes {expected}")
        if len(values) != 1:
            raise HttpError(400, f"parameter '{name}' given more than once")
        params[name] = _validate(name, values[0])
    return params


def route(request: Request, *, now_ns: int | None = None) -> Route:
    """Resolve ``request`` to a :class:`Route`, or raise :class:`HttpError`.

    ``now_ns`` is the time a duration filter (``since=5m``) counts back
    from: the wall clock unless given."""
    path = request.path
    if request.method == "POST" and path == _PRODUCE:
        _query_params(request, frozenset())
        return Route(name="produce", params={}, body=request.body)
    fixed = _FIXED.get(path)
    if fixed is not None:
        name, accepted = fixed
        _check_method(request)
        if name == "events":
            return _events(request, time.time_ns() if now_ns is None else now_ns)
        params = _query_params(request, accepted)
        if name == "stream":
            last = request.header_values("last-event-id")
            if len(last) > 1:
                raise HttpError(400, "Last-Event-ID given more than once")
            if last and last[0]:
                params["last_event_id"] = _event_id("Last-Event-ID", last[0])
        return Route(name=name, params=params)
    if path.startswith(_EVENT_PREFIX):
        event_id = path.removeprefix(_EVENT_PREFIX)
        if event_id and "/" not in event_id:
            _check_method(request)
            _query_params(request, frozenset())
            return Route(name="event", params={"id": _event_id("id", event_id)})
    raise HttpError(404, "no such endpoint; see /v1/snapshot, /v1/events, /v1/stream, /healthz")
