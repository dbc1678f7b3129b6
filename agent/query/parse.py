"""Text to :class:`~agent.query.filter.EventFilter`: one parser for the CLI and the API.

``tracehound events``/``tail``/``report`` options and ``/v1/events`` query
parameters are the same names (``since``, ``until``, ``type``, ``pid``,
``tree``, ``comm``, ``exe``, ``path``, ``container``, ``remote``, ``uid``)
with the same values, so both hand their raw text to :func:`parse_filter`
and turn a :class:`FilterError` into their own one line (``--since: ...``,
or a 400 naming ``parameter 'since'``). Pure: "now" is an argument, so a
duration means the same thing to a test as to the command.

Values are attacker-reachable (a query string, an argv), so each is
bounded in length and checked whole; an error quotes the value cut short
and ``repr``-quoted, so it cannot spill onto a second line.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Final

from agent.capture.container_id import CONTAINER_PREFIX, CONTAINER_PREFIX_EXPECTED
from agent.evidence.log_reader import type_matches
from agent.evidence.record_types import PAYLOAD_TYPES
from agent.evidence.types import TYPE_PREFIX
from agent.limits import MAX_PID
from agent.query.filter import EventFilter, RemoteFilter

__all__ = [
    "FILTER_NAMES",
    "FilterError",
    "accepted_types",
    "parse_duration_ns",
    "parse_filter",
    "parse_time_ns",
    "rfc3339_ns",
]

#: Every filter's name, as a CLI option (``--NAME``) and a URL parameter.
FILTER_NAMES: Final = (
    "since", "until", "type", "pid", "tree", "comm", "exe", "path", "container", "remote", "uid",
)  # fmt: skip

MAX_UID: Final = 2**32 - 2  # (uid_t)-1 means "no uid"
COMM_MAX: Final = 16
PATH_MAX: Final = 4096
_TEXT_MAX: Final = 40
_DURATION: Final = re.compile(r"([0-9]{1,9})([smhd])", re.ASCII)
_UNIT_NS: Final = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_DIGITS: Final = re.compile(r"[0-9]{1,20}", re.ASCII)
_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)
_TRUE: Final = frozenset({"", "1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no"})


class FilterError(ValueError):
    """A filter value is not what its option takes. ``name`` is the filter
    (``since``); ``detail`` says what was expected and what was given."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def _shown(text: str) -> str:
    return repr(text[:_TEXT_MAX]) + ("..." if len(text) > _TEXT_MAX else "")


def accepted_types() -> list[str]:
    """The short type names a ``--type`` may give (each also works as a
    prefix at a dot: ``process`` is every ``process.*``), for the error."""
    names = {t[len(TYPE_PREFIX) :].rsplit(".v", 1)[0] for t in PAYLOAD_TYPES}
    families = {name.split(".", 1)[0] for name in names}
    return sorted(families | names)


def _types(values: Sequence[str]) -> frozenset[str]:
    wanted = [part.strip() for value in values for part in value.split(",")]
    out: set[str] = set()
    for item in wanted:
        matched = {t for t in PAYLOAD_TYPES if type_matches(item, t)} if item else set()
        if not matched:
            raise FilterError(
                "type",
                f"expected a record type ({', '.join(accepted_types())}; or a full type"
                f" like {TYPE_PREFIX}process.exec.v1), got {_shown(item)}",
            )
        out |= matched
    return frozenset(out)


def parse_duration_ns(text: str) -> int | None:
    """``30s``, ``5m``, ``2h``, ``1d`` in nanoseconds; None if it is not one."""
    found = _DURATION.fullmatch(text)
    return None if found is None else int(found[1]) * _UNIT_NS[found[2]]


def rfc3339_ns(text: str) -> int | None:
    """An RFC 3339 time (``2025-11-24T16:00:00.123456789Z``, or with an
    offset like ``+02:00``) in ns since the epoch; None if it is not one.
    Exact to the nanosecond (no float): records' ``time`` is parsed here too."""

    found = _RFC3339.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    if not (
        year >= 1 and 1 <= month <= 12 and 1 <= day <= 31
        and hour <= 23 and minute <= 59 and second <= 60
    ):  # fmt: skip
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None
    fraction = int((found[7] or "").ljust(9, "0"))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if found[9] is not None:
        offset = (int(found[10]) * 60 + int(found[11])) * 60
        seconds -= offset if found[9] == "+" else -offset
    return seconds * 10**9 + fraction


def parse_time_ns(name: str, text: str, now_ns: int) -> int:
    """``--since``/``--until``: a duration back from ``now_ns``, or an RFC 3339 time."""
    duration = parse_duration_ns(text)
    if duration is not None:
        return now_ns - duration
    at = rfc3339_ns(text) if len(text) <= 64 else None
    if at is None:
        raise FilterError(
            name,
            "expected a duration back from now (30s, 5m, 2h, 1d) or an RFC 3339 time"
            f" (2025-11-24T16:00:00Z, 2025-11-24T18:00:00+02:00), got {_shown(text)}",
        )
    return at


def _int(name: str, text: str, low: int, high: int, what: str) -> int:
    if _DIGITS.fullmatch(text) is None or not low <= int(text) <= high:
        raise FilterError(name, f"expected {what} from {low} to {high}, got {_shown(text)}")
    return int(text)


def _port(text: str) -> int | None:
    return int(text) if _PORT.fullmatch(text) and int(text) <= 65535 else None


def _network(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _remote(text: str) -> RemoteFilter:
    """An address, a CIDR, a port, ``addr:port`` or ``[v6]:port`` (or ``[v6/n]:port``)."""
    port = _port(text)
    if port is not None:
        return RemoteFilter(port=port)
    network = _network(text)
    if network is not None:
        return RemoteFilter(network=network)
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]:")
    else:
        host, sep, tail = text.rpartition(":")
        if ":" in host:  # a bare v6 with a colon is no addr:port
            sep = ""
    port = _port(tail) if sep else None
    network = _network(host) if sep and host else None
    if port is None or network is None:
        raise FilterError(
            "remote",
            "expected an address, a CIDR network, a port, ADDR:PORT or [V6]:PORT"
            f" (10.0.0.0/8, ::1, 443, 10.1.2.3:53, [::1]:8080), got {_shown(text)}",
        )
    return RemoteFilter(network=network, port=port)


def _text(name: str, text: str, limit: int, what: str) -> str:
    if not 1 <= len(text) <= limit or "\x00" in text:
        raise FilterError(name, f"expected {what} of 1 to {limit} characters, got {_shown(text)}")
    return text


def parse_filter(values: Mapping[str, Sequence[str]], *, now_ns: int) -> EventFilter:
    """The filter ``values`` (filter name to the texts given for it) ask for.

    Only ``type`` may be given more than once (its values are joined, and
    each may be a comma-separated list); an unknown name is a programming
    error of the caller (the CLI and the route accept only
    :data:`FILTER_NAMES`). ``tree`` is a flag: ``""``/``1``/``true`` set
    it, and it needs ``pid``.

    Raises:
        FilterError: naming the first bad filter and what it takes.
    """
    unknown = set(values) - set(FILTER_NAMES)
    if unknown:
        raise AssertionError(f"not filters: {sorted(unknown)}")  # pragma: no cover
    one: dict[str, str] = {}
    for name, given in values.items():
        if name != "type" and len(given) > 1:
            raise FilterError(name, "given more than once; expected one value")
        if given and name != "type":
            one[name] = given[0]
    since = parse_time_ns("since", one["since"], now_ns) if "since" in one else None
    until = parse_time_ns("until", one["until"], now_ns) if "until" in one else None
    if since is not None and until is not None and until <= since:
        raise FilterError("until", "expected a time after --since")
    pid = _int("pid", one["pid"], 1, MAX_PID, "a pid") if "pid" in one else None
    tree = False
    if "tree" in one:
        flag = one["tree"].lower()
        if flag not in _TRUE | _FALSE:
            raise FilterError("tree", f"expected true or false, got {_shown(one['tree'])}")
        tree = flag in _TRUE
        if tree and pid is None:
            raise FilterError("tree", "needs pid: the process whose descendants to follow")
    comm = one.get("comm")
    if comm is not None and (not 1 <= len(comm) <= COMM_MAX or "\x00" in comm):
        # Control characters are allowed: a comm is the process's to choose,
        # and one named "a\nb" must be findable.
        raise FilterError(
            "comm", f"expected a command name of 1 to {COMM_MAX} characters, no NUL,"
            f" got {_shown(comm)}"
        )  # fmt: skip
    exe = _text("exe", one["exe"], PATH_MAX, "an executable's path") if "exe" in one else None
    path = _text("path", one["path"], PATH_MAX, "a path glob") if "path" in one else None
    container = one.get("container")
    if container is not None and CONTAINER_PREFIX.fullmatch(container) is None:
        raise FilterError(
            "container", f"expected {CONTAINER_PREFIX_EXPECTED}, got {_shown(container)}"
        )
    remote = _remote(one["remote"]) if "remote" in one else None
    uid = _int("uid", one["uid"], 0, MAX_UID, "a uid") if "uid" in one else None
    return EventFilter(
        since_ns=since,
        until_ns=until,
        types=_types(values.get("type", ())),
        pid=pid,
        tree=tree,
        comm=comm,
        exe=exe,
        path=path,
        container=container,
        remote=remote,
        uid=uid,
    )
