"""Properties of the mapper over random event sequences, and of its time format."""

from __future__ import annotations

import datetime

import blake3
import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
)
from agent.evidence.canonical import canonical
from agent.evidence.mapper import Mapper, decode, encode
from agent.evidence.types import EXTENSION_NAME, Anchor, format_rfc3339_ns, parse_rfc3339_ns
from tests.evidence.plain_mapper import plain_mapper

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)
TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ts = st.integers(0, 2**63)  # any kernel timestamp: centuries of uptime


def header() -> dict[str, st.SearchStrategy[object]]:
    return {
        "pid": u32,
        "tid": u32,
        "ts_ns": ts,
        "uid": u32,
        "gid": u32,
        "cgroup_id": st.integers(0, 2**64 - 1),
        "comm": text,
    }


events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        ExecEvent,
        ret=i32,
        filename=text,
        argv=st.lists(text, max_size=6).map(tuple),
        argv_truncated=st.booleans(),
        at=st.booleans(),
        **header(),
    ),
    st.builds(ForkEvent, child_pid=u32, clone_flags=st.integers(0, 2**64 - 1), **header()),
    st.builds(
        ExitEvent,
        exit_code=i32,
        signal=u32,
        have_code=st.booleans(),
        have_signal=st.booleans(),
        **header(),
    ),
    st.builds(
        FileEvent,
        op=st.sampled_from(["open", "unlink", "rename", "chmod", "mkdir", "op9"]),
        syscall=st.sampled_from(["openat", "unlinkat", "rmdir", "renameat2", "chmod", "mkdir"]),
        ret=i32,
        dfd=i32,
        path=text,
        dfd2=i32,
        path2=text,
        flags=u32,
        mode=u32,
        **header(),
    ),
    st.builds(
        NetEvent,
        op=st.sampled_from(["connect", "accept", "bind", "listen", "op9"]),
        ret=i32,
        fd=i32,
        endpoint=st.none()
        | st.builds(
            Endpoint,
            family=st.sampled_from(["ipv4", "ipv6", "unix", "other"]),
            address=text,
            port=st.integers(0, 65535),
        ),
        backlog=i32,
        **header(),
    ),
    st.builds(
        SyscallCounts,
        pid=u32,
        counts=st.dictionaries(  # names from the syscall table: ASCII
            st.text(st.characters(max_codepoint=127), max_size=12), st.integers(0, 2**64 - 1)
        ),
        final=st.booleans(),
    ),
    st.builds(
        ProcessSeen,
        pid=u32,
        ppid=u32,
        comm=text,
        exe=text,
        cmdline=st.lists(text, max_size=4).map(tuple),
        uid=u32,
        user=text,
        start_time=st.floats(allow_nan=True, allow_infinity=True),
        preexisting=st.booleans(),
    ),
)


def run(sequence: list[Event]) -> list[bytes]:
    bodies = [r.body for r in Mapper(host="h", anchor=ANCHOR).records(sequence)]
    # The bytes handed out are the canonical form of what they decode to.
    assert all(encode(decode(body)) == body for body in bodies)
    return bodies


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=12))
def test_mapping_twice_gives_identical_bytes(sequence: list[Event]) -> None:
    assert run(sequence) == run(sequence)


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=12))
def test_stream_invariants(sequence: list[Event]) -> None:
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    records = list(mapper.records(sequence))
    assert records[0].type == "dev.tracehound.capture.anchor.v1"
    assert [r.thseq for r in records] == list(range(len(sequence) + 1))
    assert len({r.id for r in records}) == len(records)
    for record in records:
        raw = msgspec.json.decode(encode(record))
        assert raw["thhash"] == blake3.blake3(canonical(raw["data"])).hexdigest()
        assert all(EXTENSION_NAME.fullmatch(name) for name in raw if name.startswith("th"))
        assert parse_rfc3339_ns(record.time) >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=8), st.data())
def test_a_secret_anywhere_never_leaks(sequence: list[Event], data: st.DataObject) -> None:
    """Put a token into random free-text fields; it never reaches the bytes."""
    planted: list[Event] = []
    for event in sequence:
        if isinstance(event, ExecEvent):
            event = msgspec.structs.replace(event, argv=(*event.argv, TOKEN), filename=TOKEN)
        elif isinstance(event, FileEvent):
            event = msgspec.structs.replace(event, path=f"/x/{TOKEN}", path2=TOKEN)
        elif isinstance(event, NetEvent) and event.endpoint is not None:
            if event.endpoint.family in ("unix", "other"):
                event = msgspec.structs.replace(
                    event, endpoint=Endpoint(event.endpoint.family, f"/run/{TOKEN}")
                )
        elif isinstance(event, ProcessSeen):
            event = msgspec.structs.replace(event, cmdline=(TOKEN,), exe=TOKEN)
        if data.draw(st.booleans()) and hasattr(event, "comm"):
            event = msgspec.structs.replace(event, comm=TOKEN)
        planted.append(event)
    blob = b"".join(run(planted))
    assert TOKEN.encode() not in blob


@given(st.integers(-62_135_596_800 * 10**9, 253_402_300_799 * 10**9 + 999_999_999))
def test_rfc3339_round_trips_and_agrees_with_datetime(epoch_ns: int) -> None:
    written = format_rfc3339_ns(epoch_ns)
    assert parse_rfc3339_ns(written) == epoch_ns
    seconds, nanos = divmod(epoch_ns, 10**9)
    # timedelta with integer seconds is exact; datetime checks the calendar.
    expected = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    assert written == expected.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + f".{nanos:09d}Z"


def test_rfc3339_bounds() -> None:
    assert format_rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_rfc3339_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    for bad in (-62_135_596_801 * 10**9, 253_402_300_800 * 10**9):
        try:
            format_rfc3339_ns(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} should be refused")
    for bad_text in ("2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01 00:00:00Z"):
        try:
            parse_rfc3339_ns(bad_text)
        except ValueError:
            continue
        raise AssertionError(f"{bad_text!r} should be refused")
    assert parse_rfc3339_ns("2024-01-01T00:00:00.5Z") % 10**9 == 500_000_000
