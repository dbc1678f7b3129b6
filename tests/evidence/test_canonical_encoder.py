"""The evidence encoder is RFC 8785 on its domain, and refuses what lies outside it.

Every record's payload is encoded once, by msgspec with sorted keys, never by
a JCS walk. These properties hold it to an independent JCS implementation
(the ``rfc8785`` package): the payload bytes, the CloudEvent bytes the
mapper hands out, and the chain line built around them. Values outside the
domain (floats, integers past 2**53, non-ASCII keys) are refused with a
path; text that is not UTF-8 is put in escape form and named, never
encoded some other way.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.events import Endpoint, FileEvent, NetEvent
from agent.evidence.canonical import MAX_SAFE_INTEGER, CanonicalError
from agent.evidence.chain import ChainWriter
from agent.evidence.mapper import Mapper
from agent.evidence.payloads import (
    EndpointData,
    ExecData,
    FileData,
    LossData,
    NetData,
    StartData,
    encode_payload,
)
from agent.evidence.types import Anchor
from agent.redact import Redactor

ENCODER = msgspec.json.Encoder(order="sorted")
ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)

safe_int = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
# Any Unicode text a record may hold: every plane, controls, U+2028, bidi
# marks; no lone surrogates (those are escaped first, tested below).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
ascii_key = st.text(st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=8)
json_value = st.recursive(
    st.none() | st.booleans() | safe_int | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ascii_key, inner, max_size=4),
    max_leaves=12,
)


def header() -> dict[str, Any]:
    return {
        "pid": st.integers(0, 2**32 - 1),
        "tid": st.integers(0, 2**32 - 1),
        "uid": st.integers(0, 2**32 - 1),
        "gid": st.integers(0, 2**32 - 1),
        "cgroup_id": st.integers(0, 2**64 - 1).map(str),
        "comm": text,
        "ts_ns": st.integers(0, 2**64 - 1).map(str),
        "redacted": st.lists(text, max_size=3),
    }


payloads = st.one_of(
    st.builds(
        FileData,
        op=text,
        syscall=text,
        ret=safe_int,
        dfd=safe_int,
        path=text,
        path_cut=st.booleans(),
        dfd2=st.none() | safe_int,
        path2=st.none() | text,
        path2_cut=st.none() | st.booleans(),
        flags=st.integers(0, 2**32 - 1),
        mode=st.integers(0, 2**32 - 1),
        count=st.integers(1, 10**9),
        last_ts_ns=st.none() | st.integers(0, 2**64 - 1).map(str),
        **header(),
    ),
    st.builds(
        ExecData,
        ret=safe_int,
        filename=text,
        argv=st.lists(text, max_size=5),
        argv_truncated=st.booleans(),
        args_cut=st.lists(st.integers(0, 100), max_size=3),
        argv_more=st.booleans(),
        filename_cut=st.booleans(),
        execveat=st.booleans(),
        ppid=st.none() | st.integers(0, 2**32 - 1),
        euid=st.none() | st.integers(0, 2**32 - 1),
        egid=st.none() | st.integers(0, 2**32 - 1),
        loginuid=st.none() | st.integers(0, 2**32 - 1),
        cwd=text,
        cwd_flags=st.lists(text, max_size=2),
        exe=text,
        exe_flags=st.lists(text, max_size=2),
        fileless=st.booleans(),
        exe_memfd=st.booleans(),
        unresolved=st.lists(text, max_size=3),
        **header(),
    ),
    st.builds(
        NetData,
        op=text,
        ret=safe_int,
        fd=safe_int,
        endpoint=st.none()
        | st.builds(EndpointData, family=text, address=text, port=st.integers(0, 65535)),
        backlog=st.none() | safe_int,
        **header(),
    ),
    st.builds(StartData, config=st.dictionaries(ascii_key, json_value, max_size=5)),
    st.builds(
        LossData,
        counts=st.dictionaries(ascii_key, st.dictionaries(ascii_key, st.integers(0, 10**12))),
        total=st.integers(0, MAX_SAFE_INTEGER),
        window_start_ns=text,
        window_end_ns=text,
        window_start=text,
        window_end=text,
        cause=st.none() | st.dictionaries(ascii_key, json_value, max_size=3),
    ),
)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_payload_bytes_are_rfc8785(payload: Any) -> None:
    same, data = encode_payload(payload)
    assert same is payload  # valid text: nothing escaped
    assert data == rfc8785.dumps(msgspec.to_builtins(payload))


@settings(max_examples=200, deadline=None)
@given(
    comm=text,
    path=text,
    path2=text,
    ret=st.integers(-(2**31), 2**31 - 1),
    address=text,
    port=st.integers(0, 65535),
)
def test_records_and_chain_lines_are_rfc8785(
    comm: str, path: str, path2: str, ret: int, address: str, port: int
) -> None:
    mapper = Mapper(
        host="h\u00e9",
        anchor=ANCHOR,
        redactor=Redactor([]),
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        tracestate=comm.replace("\x00", "") or "s",
    )
    head = {"pid": 1, "tid": 1, "ts_ns": ANCHOR.boottime_ns + 7, "uid": 0, "gid": 0}
    records = [
        mapper.anchor_record(),
        mapper.map(
            FileEvent(
                **head,
                cgroup_id=2**64 - 1,
                comm=comm,
                op="rename",
                syscall="renameat2",
                ret=ret,
                dfd=-100,
                path=path,
                dfd2=3,
                path2=path2,
                flags=0,
                mode=0,
            )
        ),
        mapper.map(
            NetEvent(
                **head,
                cgroup_id=1,
                comm=comm,
                op="connect",
                ret=ret,
                fd=3,
                endpoint=Endpoint("unix", address, port),
                backlog=0,
            )
        ),
        mapper.capture_start({"path": path, "n": ret}),
    ]
    writer = ChainWriter()
    for record in records:
        assert record.body == rfc8785.dumps(msgspec.json.decode(record.body))
        seq, prev = writer.next_seq, writer.head[1] if writer.head else "0" * 64
        # The composed envelope is what msgspec writes for the CloudEvent too.
        assert record.body == ENCODER.encode(msgspec.structs.replace(
            record.event, data=msgspec.Raw(ENCODER.encode(record.payload))
        ))  # fmt: skip
        digest, line = writer.append_body(record.type, record.body)
        fields = {"seq": seq, "prev": prev, "type": record.type}
        fields["body"] = msgspec.json.decode(record.body)
        assert line == rfc8785.dumps({**fields, "hash": digest}) + b"\n"


def test_raw_bytes_are_escaped_and_named_not_encoded_otherwise() -> None:
    raw = b"/tmp/x\xff".decode("utf-8", "surrogateescape")
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor([]))
    mapper.anchor_record()
    record = mapper.map(
        FileEvent(
            pid=1, tid=1, ts_ns=ANCHOR.boottime_ns, uid=0, gid=0, cgroup_id=1, comm="c",
            op="open", syscall="openat", ret=3, dfd=-100, path=raw, dfd2=0, path2="",
            flags=0, mode=0,
        )
    )  # fmt: skip
    data = msgspec.json.decode(record.body)["data"]
    assert data["path"] == "/tmp/x\\xff"
    assert data["escaped"] == ["path"]
    assert record.payload.escaped == ["path"]  # the typed record says the same
    assert record.body == rfc8785.dumps(msgspec.json.decode(record.body))


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"rate": 0.5}, "$.config.rate"),
        ({"big": 2**53}, "$.config.big"),
        ({"nested": [{"x": -(2**60)}]}, "$.config.nested[0].x"),
        ({"caf\u00e9": 1}, "$.config"),
        ({"when": b"bytes"}, "$.config.when"),
    ],
)
def test_values_outside_the_domain_are_refused_with_a_path(
    config: dict[str, Any], path: str
) -> None:
    mapper = Mapper(host="h", anchor=ANCHOR)
    mapper.anchor_record()
    with pytest.raises(CanonicalError) as info:
        mapper.capture_start(config)
    assert info.value.path == path
    assert mapper.next_seq == 1  # nothing was used up


def test_a_kernel_integer_past_the_safe_range_is_refused() -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor([]))
    mapper.anchor_record()
    event = FileEvent(
        pid=1, tid=1, ts_ns=ANCHOR.boottime_ns, uid=0, gid=0, cgroup_id=1, comm="c",
        op="open", syscall="openat", ret=2**60, dfd=-100, path="/x", dfd2=0, path2="",
        flags=0, mode=0,
    )  # fmt: skip
    with pytest.raises(CanonicalError, match="outside"):
        mapper.map(event)
    assert mapper.next_seq == 1
