"""Composed payload bytes are the bytes of the Struct the mapper would have built.

The mapper composes a kernel event's payload bytes from a template
(:mod:`agent.evidence.payload_bytes`) instead of building and encoding its
Struct. These tests map the same random events twice, once composed and once
the Struct way (``_compose_payloads = False``), and require the same bytes,
the same ids, the same errors (nothing skipped or accepted by one path only)
and the same redaction counters, over the shapes the composer takes and the
ones it hands back (raw bytes to escape, folded events, renames, integers
past 2**53).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.cgroups import UNRESOLVED, CgroupInfo
from agent.capture.container_id import parse_container
from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    SyscallCounts,
)
from agent.evidence.mapper import Mapper
from agent.evidence.payloads import encode_payload
from agent.evidence.record_types import decode_payload
from agent.evidence.types import Anchor
from agent.redact import Redactor

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)
TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"


_DOCKER = "/system.slice/docker-" + "ab" * 32 + ".scope"
#: Cgroup answers of every shape: unresolved, the root, a container, a path
#: with a secret the built-in rules redact, a path with raw bytes to escape.
_CGROUPS = (
    UNRESOLVED,
    CgroupInfo(path="/"),
    CgroupInfo(path=_DOCKER, container=parse_container(_DOCKER)),
    CgroupInfo(path=f"/user.slice/{TOKEN}"),
    CgroupInfo(path="/odd\udcff.slice"),
)


def cgroup_of(cgroup_id: int) -> CgroupInfo:
    return _CGROUPS[cgroup_id % len(_CGROUPS)]


class StructMapper(Mapper):
    """The mapper with every payload built as its Struct and encoded."""

    _compose_payloads: ClassVar[bool] = False


u32 = st.integers(0, 2**32 - 1)
wide = st.integers(-(2**64), 2**64)  # past 2**53 both ways: refused or a string
# Text of every kind, with raw bytes (lone surrogates, as the wire decoder
# hands them over), secrets the built-in rules redact, and 15-byte comms.
raw = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.text(st.one_of(st.characters(exclude_categories=["Cs"]), raw), max_size=8),
    st.sampled_from(["", "/etc/passwd", f"/tmp/{TOKEN}", "--password", "bash", "a" * 15, "é" * 8]),
)


NET_OP_NAMES = ["connect", "accept", "bind", "listen", "op9", "sendto", "sendmsg", "sendmmsg",
                "connect_result"]  # fmt: skip


def header() -> dict[str, st.SearchStrategy[object]]:
    return {
        "pid": u32,
        "tid": u32,
        "ts_ns": st.integers(ANCHOR.boottime_ns, 2**63),
        "uid": u32,
        "gid": u32,
        "cgroup_id": st.integers(0, 2**64 - 1),
        "comm": text,
    }


folds = {"count": st.sampled_from([1, 1, 2, 3000]), "last_ts_ns": st.integers(0, 2**63)}
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        ExecEvent,
        ret=st.one_of(st.integers(-(2**31), 2**31 - 1), wide),
        filename=text,
        argv=st.lists(text, max_size=5).map(tuple),
        argv_truncated=st.booleans(),
        at=st.booleans(),
        filename_cut=st.booleans(),
        args_cut=st.lists(st.integers(0, 5), max_size=2).map(tuple),
        argv_more=st.booleans(),
        **header(),
    ),
    st.builds(ForkEvent, child_pid=u32, clone_flags=st.one_of(u32, wide), **header()),
    st.builds(
        ExitEvent,
        exit_code=st.integers(-(2**31), 2**31 - 1),
        signal=u32,
        have_code=st.booleans(),
        have_signal=st.booleans(),
        **header(),
    ),
    st.builds(
        FileEvent,
        op=st.sampled_from(["open", "unlink", "rename", "chmod", "mkdir", "op9"]),
        syscall=st.sampled_from(["openat", "unlinkat", "rmdir", "renameat2", "chmod"]),
        ret=st.one_of(st.integers(-(2**31), 2**31 - 1), wide),
        dfd=st.integers(-(2**31), 2**31 - 1),
        path=text,
        dfd2=st.integers(-(2**31), 2**31 - 1),
        path2=text,
        flags=u32,
        mode=u32,
        path_cut=st.booleans(),
        path2_cut=st.booleans(),
        abs_path=st.one_of(st.just(""), text),
        abs_path2=st.one_of(st.just(""), text),
        abs_flags=st.integers(0, 2**11),  # every known bit, and one unknown
        abs2_flags=st.integers(0, 2**11),
        owner=st.one_of(st.just(-1), u32, wide),
        group=st.one_of(st.just(-1), u32),
        **folds,
        **header(),
    ),
    st.builds(
        NetEvent,
        op=st.sampled_from(NET_OP_NAMES),
        ret=st.one_of(st.integers(-(2**31), 2**31 - 1), wide),
        fd=st.integers(-(2**31), 2**31 - 1),
        endpoint=st.none()
        | st.builds(
            Endpoint,
            family=st.sampled_from(["ipv4", "ipv6", "unix", "other"]),
            address=text,
            port=st.integers(0, 65535),
        ),
        backlog=st.integers(-(2**31), 2**31 - 1),
        proto=st.sampled_from(["", "tcp", "udp", "proto99"]) | text,
        messages=st.integers(0, 2**32 - 1),
        peer_from_socket=st.booleans(),
        unchecked=st.booleans(),
        more_messages=st.booleans(),
        outcome=st.sampled_from(["", "established", "refused", "failed"]) | text,
        **folds,
        **header(),
    ),
    st.builds(
        SyscallCounts,
        pid=u32,
        counts=st.dictionaries(st.one_of(st.sampled_from(["read", "openat"]), text), wide),
        final=st.booleans(),
    ),
)


def outcomes(mapper: Mapper, sequence: list[Event]) -> list[Any]:
    """Each event's record (type, id, bytes), or the type of what it raised."""
    out: list[Any] = [mapper.anchor_record().body]
    for event in sequence:
        try:
            record = mapper.map(event)
        except Exception as err:
            out.append(type(err))
        else:
            out.append((record.type, record.id, record.body))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=10))
def test_composed_records_are_the_struct_records(sequence: list[Event]) -> None:
    composed = Mapper(host="h%41", anchor=ANCHOR, redactor=Redactor.builtin(), cgroups=cgroup_of)
    built = StructMapper(host="h%41", anchor=ANCHOR, redactor=Redactor.builtin(), cgroups=cgroup_of)
    assert outcomes(composed, sequence) == outcomes(built, sequence)
    assert composed.redaction_stats == built.redaction_stats
    assert composed.memo_stats() == built.memo_stats()
    assert composed.next_seq == built.next_seq


@settings(max_examples=200, deadline=None)
@given(events)
def test_a_composed_payload_decodes_to_its_struct_and_is_rfc8785(event: Event) -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, cgroups=cgroup_of)
    mapper.anchor_record()
    try:
        record = mapper.map(event)
    except Exception:
        return  # refused: the test above holds the Struct path to the same
    data = msgspec.json.decode(record.body)["data"]
    payload = record.payload  # decoded from the bytes when nothing was built
    assert payload == decode_payload(record.type, rfc8785.dumps(data))
    assert encode_payload(payload)[1] == rfc8785.dumps(data)
    assert record.body == rfc8785.dumps(msgspec.json.decode(record.body))


def test_the_composed_path_is_taken_for_plain_events() -> None:
    """Ordinary events are composed (no Struct built), so the tests above
    compare two different paths, not the Struct path with itself."""
    mapper = Mapper(host="h", anchor=ANCHOR)
    mapper.anchor_record()
    head: dict[str, Any] = {"pid": 7, "tid": 7, "ts_ns": ANCHOR.boottime_ns, "uid": 0, "gid": 0}
    head["cgroup_id"] = 1
    head["comm"] = "bash"
    plain = [
        FileEvent(**head, op="open", syscall="openat", ret=3, dfd=-100, path="/etc/hosts",
                  dfd2=0, path2="", flags=0, mode=0),
        ExecEvent(**head, ret=0, filename="/bin/ls", argv=("ls", "-l"), argv_truncated=False,
                  at=False),
        ForkEvent(**head, child_pid=8, clone_flags=0x1200011),
        ExitEvent(**head, exit_code=0, signal=0, have_code=True, have_signal=False),
        NetEvent(**head, op="connect", ret=0, fd=3, endpoint=Endpoint("ipv4", "10.0.0.1", 443),
                 backlog=0),
        SyscallCounts(pid=7, counts={"read": 3}, final=False),
    ]  # fmt: skip
    for event in plain:
        assert mapper.map(event).typed is None, event
    escaped = FileEvent(**{**head, "comm": "b\udcffash"}, op="open", syscall="openat", ret=3,
                        dfd=-100, path="/x", dfd2=0, path2="", flags=0, mode=0)  # fmt: skip
    record = mapper.map(escaped)
    assert record.typed is not None and record.typed.escaped == ["comm"]


@pytest.mark.parametrize("count", [0, 1, 2])
def test_fold_members_are_written_as_the_struct_writes_them(count: int) -> None:
    head: dict[str, Any] = {"pid": 7, "tid": 7, "ts_ns": ANCHOR.boottime_ns, "uid": 0, "gid": 0}
    event = FileEvent(**head, cgroup_id=1, comm="c", op="open", syscall="openat", ret=3,
                      dfd=-100, path="/p", dfd2=0, path2="", flags=0, mode=0, count=count,
                      last_ts_ns=ANCHOR.boottime_ns + 5)  # fmt: skip
    bodies = []
    for cls in (Mapper, StructMapper):
        mapper = cls(host="h", anchor=ANCHOR)
        mapper.anchor_record()
        bodies.append(mapper.map(event).body)
    assert bodies[0] == bodies[1]
    data = msgspec.json.decode(bodies[0])["data"]
    assert ("count" in data, "last_ts_ns" in data) == (count != 1, count > 1)
