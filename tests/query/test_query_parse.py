"""agent.query.parse: the one parser of filters, for the CLI and /v1/events."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.log_reader import type_matches
from agent.evidence.record_types import PAYLOAD_TYPES
from agent.evidence.types import TYPE_PREFIX
from agent.query.filter import EventFilter, RemoteFilter
from agent.query.parse import FilterError, parse_filter, rfc3339_ns

NOW = 1_764_000_000_123_456_789


def parsed(**values: str | list[str]) -> EventFilter:
    return parse_filter(
        {k: v if isinstance(v, list) else [v] for k, v in values.items()}, now_ns=NOW
    )


def refused(**values: str | list[str]) -> FilterError:
    with pytest.raises(FilterError) as info:
        parsed(**values)
    return info.value


def test_nothing_given_filters_nothing() -> None:
    assert parsed() == EventFilter()


@pytest.mark.parametrize(
    ("text", "back_s"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("0s", 0)]
)
def test_durations_count_back_from_now(text: str, back_s: int) -> None:
    assert parsed(since=text).since_ns == NOW - back_s * 10**9
    assert parsed(until=text).until_ns == NOW - back_s * 10**9


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
       st.integers(min_value=0, max_value=10**9 - 1))  # fmt: skip
def test_rfc3339_is_exact_to_the_nanosecond(when: datetime, ns: int) -> None:
    text = when.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"
    expected = calendar.timegm(when.replace(microsecond=0).timetuple()) * 10**9 + ns
    assert rfc3339_ns(text) == expected
    assert parsed(since=text).since_ns == expected


def test_rfc3339_offsets_and_short_fractions() -> None:
    utc = datetime(2025, 11, 24, 16, 0, tzinfo=UTC).timestamp()
    assert rfc3339_ns("2025-11-24T16:00:00Z") == int(utc) * 10**9
    assert rfc3339_ns("2025-11-24T18:00:00+02:00") == int(utc) * 10**9
    assert rfc3339_ns("2025-11-24T15:30:00.5-00:30") == int(utc) * 10**9 + 5 * 10**8


@pytest.mark.parametrize(
    "text",
    ["5x", "5", "-5m", "1.5h", "", "2025-11-24", "2025-11-24T16:00:00", "2025-02-30T00:00:00Z",
     "2025-11-24T25:00:00Z", "0000-01-01T00:00:00Z", "2025-11-24T16:00:00.1234567890Z", "now", "5m ago", "\u0665m"],
)  # fmt: skip
def test_bad_times_name_the_option(text: str) -> None:
    error = refused(since=text)
    assert error.name == "since" and "duration" in error.detail and "RFC 3339" in error.detail
    assert "\n" not in str(error)


def test_until_must_follow_since() -> None:
    assert refused(since="1h", until="2h").name == "until"
    assert parsed(since="2h", until="1h") == EventFilter(
        since_ns=NOW - 7200 * 10**9, until_ns=NOW - 3600 * 10**9
    )


def test_types_expand_like_type_matches_and_join() -> None:
    got = parsed(type=["process.exec", "file.open,file.rename"]).types
    assert got == {TYPE_PREFIX + t for t in ("process.exec.v1", "file.open.v1", "file.rename.v1")}
    families = parsed(type="network").types
    assert families == {t for t in PAYLOAD_TYPES if type_matches("network", t)}
    assert len(families) > 5 and all(".network." in t for t in families)
    assert parsed(type=TYPE_PREFIX + "process.fork.v1").types == {TYPE_PREFIX + "process.fork.v1"}


@pytest.mark.parametrize("text", ["bogus", "proc", "process.exe", "", "file,", "Process.Exec"])
def test_unknown_types_list_what_is_accepted(text: str) -> None:
    error = refused(type=text)
    assert error.name == "type"
    assert "process.exec" in error.detail and "file.open" in error.detail
    assert "\n" not in str(error)


def test_pid_tree_and_ids() -> None:
    assert parsed(pid="42", tree="").tree and parsed(pid="42", tree="true").pid == 42
    assert not parsed(pid="42", tree="0").tree
    assert refused(tree="1").name == "tree"
    for bad in ("0", "-1", "x", "4194304", "1e3", "\u0664\u0662"):
        assert refused(pid=bad).name == "pid"
    assert parsed(uid="0").uid == 0 and parsed(uid="4294967294").uid == 4294967294
    assert refused(uid="4294967295").name == "uid"


def test_text_filters() -> None:
    assert parsed(comm="a b", exe="/bin/sh", path="/etc/*").path == "/etc/*"
    assert refused(comm="x" * 17).name == "comm"
    assert refused(comm="a\x00b").name == "comm"
    assert parsed(comm="a\nb").comm == "a\nb"  # a comm is the process's to choose
    assert refused(path="").name == "path"
    assert parsed(container="0123456789ab").container == "0123456789ab"
    for bad in ("0123456789a", "0123456789AB", "g" * 12):
        assert refused(container=bad).name == "container"


@pytest.mark.parametrize(
    ("text", "remote"),
    [
        ("443", RemoteFilter(port=443)),
        ("10.0.0.1", RemoteFilter(network="10.0.0.1/32")),
        ("10.1.2.3/8", RemoteFilter(network="10.0.0.0/8")),
        ("::1", RemoteFilter(network="::1/128")),
        ("fe80::/10", RemoteFilter(network="fe80::/10")),
        ("10.1.2.3:53", RemoteFilter(network="10.1.2.3/32", port=53)),
        ("10.0.0.0/8:22", RemoteFilter(network="10.0.0.0/8", port=22)),
        ("[::1]:8080", RemoteFilter(network="::1/128", port=8080)),
    ],
)
def test_remote_forms(text: str, remote: RemoteFilter) -> None:
    assert parsed(remote=text).remote == remote


@pytest.mark.parametrize("text", ["65536", "x", "10.0.0.1:", "10.0.0.1:x", "[::1]", "::1:99999",
                                  "300.1.1.1", "[::1]:70000", ""])  # fmt: skip
def test_bad_remotes(text: str) -> None:
    assert refused(remote=text).name == "remote"


def test_only_type_may_repeat() -> None:
    error = refused(pid=["1", "2"])
    assert error.name == "pid" and "more than once" in error.detail
