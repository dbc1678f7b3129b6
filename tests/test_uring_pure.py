"""io_uring records without the kernel: the decoder, redaction, and what a
record stands for in the file and network lists (agent.capture.uring_facts)."""

from __future__ import annotations

import struct

import msgspec
import pytest

from agent.capture import kinds, wire
from agent.capture.events import Endpoint, UringEvent
from agent.capture.uring_facts import as_file_event, as_net_event
from agent.redact import Redactor
from agent.redact.events import redact_event

SECRET = "ghp_" + "a" * 36


def uring_record(
    *, opcode: int, res: int, flags: int = 0, path: bytes = b"", abs_path: bytes = b"",
    sockaddr: bytes = b"", abs_len: int | None = None,
) -> bytes:  # fmt: skip
    head = bytearray(wire.HEADER.size)
    struct.pack_into("<IIQIIIIQ", head, 0, kinds.KIND_URING, 77, 1000, 78, 0, 0, 0, 5)
    head[wire.HEADER_NUMS.size : wire.HEADER_NUMS.size + 5] = b"ring\0"
    body = wire.URING_BODY.pack(
        res, 0xFFFF_FFFF_FFFF_FFFF, 2000, 0o100, opcode, flags, 7, -100, -100, 0, 0o644,
        len(sockaddr), 0, len(abs_path) if abs_len is None else abs_len,
        sockaddr, path, b"",
    )  # fmt: skip
    return bytes(head) + body + abs_path


def test_decoder_reads_the_path_that_follows_the_record() -> None:
    raw = uring_record(opcode=18, res=3, path=b"rel.txt", abs_path=b"/srv/x/rel.txt")
    event = wire.WireDecoder().decode(raw)
    assert isinstance(event, UringEvent)
    assert (event.op, event.res, event.path, event.abs_path) == (
        "openat",
        3,
        "rel.txt",
        "/srv/x/rel.txt",
    )
    assert event.user_data == 0xFFFF_FFFF_FFFF_FFFF and event.complete_ns == 2000
    assert (event.pid, event.tid, event.comm, event.fd, event.dfd) == (77, 78, "ring", 7, -100)
    assert event.op_flags == 0o100 and event.mode == 0o644


def test_decoder_refuses_a_path_length_past_the_record() -> None:
    raw = uring_record(opcode=18, res=3, abs_path=b"/a", abs_len=40)
    with pytest.raises(wire.WireError, match="says 40 path bytes follow"):
        wire.WireDecoder().decode(raw)
    with pytest.raises(wire.WireError, match="uring record of"):
        wire.WireDecoder().decode(raw[:100])


def test_decoder_flags_endpoint_and_unknown_opcodes() -> None:
    sin = struct.pack("<H", 2) + struct.pack("!H", 9000) + bytes([127, 0, 0, 1]) + bytes(8)
    flags = kinds.URING_UNPAIRED | kinds.URING_SQPOLL | kinds.URING_FIXED_FILE
    event = wire.WireDecoder().decode(uring_record(opcode=16, res=-111, flags=flags, sockaddr=sin))
    assert isinstance(event, UringEvent)
    assert event.endpoint == Endpoint("ipv4", "127.0.0.1", 9000)
    assert (event.unpaired, event.sqpoll, event.fixed_file, event.direct) == (
        True,
        True,
        True,
        False,
    )
    later = wire.WireDecoder().decode(uring_record(opcode=99, res=0))
    assert isinstance(later, UringEvent) and later.op == "op99"
    unknown = wire.WireDecoder().decode(uring_record(opcode=0xFFFFFFFF, res=0))
    assert isinstance(unknown, UringEvent) and unknown.op == "unknown"


def _event(**over: object) -> UringEvent:
    raw = uring_record(opcode=18, res=4, path=b"rel", abs_path=b"/abs/rel")
    event = wire.WireDecoder().decode(raw)
    assert isinstance(event, UringEvent)
    return msgspec.structs.replace(event, **over)


def test_every_path_of_the_record_is_redacted() -> None:
    event = _event(path=f"p-{SECRET}", abs_path=f"/x/{SECRET}", path2=f"q-{SECRET}",
                   endpoint=Endpoint("unix", f"/run/{SECRET}"))  # fmt: skip
    redacted, fired = redact_event(Redactor.builtin(), event)
    assert isinstance(redacted, UringEvent) and fired
    for text in (redacted.path, redacted.abs_path, redacted.path2):
        assert SECRET not in text and text
    assert redacted.endpoint is not None and SECRET not in redacted.endpoint.address
    assert msgspec.structs.replace(redacted, path=event.path, abs_path=event.abs_path,
                                   path2=event.path2, endpoint=event.endpoint) == event  # fmt: skip


def test_an_openat_is_an_open_of_the_absolute_path_when_resolved() -> None:
    as_file = as_file_event(_event())
    assert as_file is not None
    assert (as_file.op, as_file.path, as_file.dfd, as_file.ret) == ("open", "/abs/rel", -100, 4)
    assert as_file.syscall == "io_uring:openat" and as_file.flags == 0o100
    unresolved = as_file_event(_event(abs_path="", dfd=5, res=-2))
    assert unresolved is not None and (unresolved.path, unresolved.dfd) == ("rel", 5)
    assert as_net_event(_event()) is None


def test_sends_name_a_peer_only_with_a_destination() -> None:
    peer = Endpoint("ipv4", "10.0.0.1", 53)
    sent = as_net_event(_event(op="send", opcode=26, endpoint=peer, res=12))
    assert sent is not None and (sent.op, sent.endpoint, sent.ret) == ("sendto", peer, 12)
    assert as_net_event(_event(op="send", opcode=26, endpoint=None)) is None
    connect = as_net_event(_event(op="connect", opcode=16, endpoint=peer, res=0, fd=9))
    assert connect is not None and (connect.op, connect.fd) == ("connect", 9)
    assert as_file_event(_event(op="read", opcode=22)) is None


def test_a_lost_uring_record_is_booked_as_uring() -> None:
    from agent.evidence.loss_books import kind_of_record
    from agent.evidence.record_types import TYPE_URING

    assert kind_of_record(TYPE_URING) == "uring"
    assert "uring" in kinds.KINDS
