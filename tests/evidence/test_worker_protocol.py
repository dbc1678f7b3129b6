"""The daemon <-> evidence worker protocol, without a process: frames,
event batches (hostile text included), the start message that rebuilds the
redactor, and the worker's joined loss books."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest
import trio

from agent.capture.events import (
    Endpoint,
    ExecEvent,
    FileEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
)
from agent.capture.loader import ProbeStatus
from agent.evidence.app_event import AppEvent
from agent.evidence.pipeline import StoreOptions
from agent.evidence.worker_child import _JoinedLosses, redactor_of
from agent.evidence.worker_protocol import (
    CONTROL,
    EVENTS,
    MAX_FRAME,
    Append,
    Books,
    Control,
    FrameReader,
    ProtocolError,
    Reply,
    Report,
    Start,
    decode_events,
    encode_events,
    frame,
)
from agent.redact import Redactor
from agent.redact.events import rules_summary

HOSTILE = "ev\udcffil\x1b[2J\u202e"  # undecodable byte, escape sequence, bidi override


def _batch() -> list[object]:
    header = dict(pid=7, tid=7, ts_ns=10**15, uid=0, gid=0, cgroup_id=2**63 + 5, comm=HOSTILE)
    return [
        ExecEvent(
            **header,
            ret=0,
            filename="/bin/\udc80x",
            argv=("a", HOSTILE),
            argv_truncated=False,
            at=False,
        ),
        FileEvent(
            **header,
            op="open",
            syscall="openat",
            ret=3,
            dfd=-100,
            path=HOSTILE,
            dfd2=-100,
            path2="",
            flags=0,
            mode=0,
            count=3000,
            last_ts_ns=10**15 + 9,
        ),
        NetEvent(
            **header, op="connect", ret=0, fd=3, endpoint=Endpoint("unix", HOSTILE), backlog=0
        ),
        SyscallCounts(pid=7, counts={"read": 12}, final=True),
        ProcessSeen(
            pid=1,
            ppid=0,
            comm="init",
            exe="/sbin/init",
            cmdline=("init", HOSTILE),
            uid=0,
            user="root",
            start_time=1.5,
            preexisting=True,
        ),
    ]


def test_event_batches_round_trip_with_any_text() -> None:
    """A name that is not UTF-8 (kept as surrogate escapes) crosses intact:
    msgpack and JSON cannot carry it, so a batch of them must not fail."""
    try:
        batch = _batch()
    except TypeError as err:  # the fixture must follow the event types
        pytest.fail(f"the test's events no longer match agent.capture.events: {err}")
    with pytest.raises(UnicodeEncodeError):
        msgspec.msgpack.encode(batch)  # why the events frame is not msgpack
    assert decode_events(encode_events(batch)) == batch  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [b"", b"\x80\x05garbage", encode_events({"a": 1})])  # type: ignore[arg-type]
def test_events_payloads_that_are_not_batches_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_events(payload)


def test_frames_come_out_whole_whatever_the_reads() -> None:
    frames = [(EVENTS, b"x" * 1000), (CONTROL, b""), (CONTROL, b"\x00\x01"), (EVENTS, b"y")]
    stream = b"".join(frame(tag, payload) for tag, payload in frames)
    for size in (1, 2, 3, 5, 7, 1000, len(stream)):
        reader = FrameReader()
        out: list[tuple[int, bytes]] = []
        for start in range(0, len(stream), size):
            out.extend(reader.feed(stream[start : start + size]))
        assert out == frames, size
        assert reader.pending == 0


def test_a_cut_frame_is_pending_and_a_bad_length_is_refused() -> None:
    reader = FrameReader()
    assert reader.feed(frame(EVENTS, b"abcdef")[:-2]) == []
    assert reader.pending == 9
    with pytest.raises(ProtocolError, match="frame length"):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "little") + b"\x01")
    with pytest.raises(ProtocolError, match="frame length"):
        FrameReader().feed(b"\x00\x00\x00\x00")


def test_start_rebuilds_the_daemons_redactor_exactly() -> None:
    """The worker redacts with the very rules the daemon runs, configured
    ones included: the summary (names and digests) is identical, and so is
    what each rule does to a field."""
    configured = [{"name": "corp-token", "privacy": "sensitive", "pattern": r"corp_[a-z0-9]{8}"}]
    daemon = Redactor.from_config(configured, max_field_chars=2048)
    start = Start(
        state_dir="/x", source="--evidence /x", probes=[ProbeStatus("exec.execve", "exec", True)],
        config={"command": "run"}, rules=[c.rule for c in daemon.rules],
        max_field_chars=daemon.max_field_chars, store=StoreOptions(fsync="always"),
    )  # fmt: skip
    wire = msgspec.msgpack.encode(start)
    back = msgspec.msgpack.decode(wire, type=Control)
    assert back == start
    assert isinstance(back, Start)
    worker = redactor_of(back.rules, back.max_field_chars)
    assert rules_summary(worker) == rules_summary(daemon)
    assert worker.max_field_chars == 2048
    text = "login corp_abcd1234 --password=hunter22 ghp_" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8"
    assert worker.redact_text(text, "argv") == daemon.redact_text(text, "argv") != text


def test_the_workers_loss_table_joins_the_daemons_without_sending_its_own_back() -> None:
    books = Books(kinds={}, sinks={}, downstream={"exec": {"events:encode": 3}})
    losses = _JoinedLosses(lambda: books.downstream)
    losses.count("exec", "evidence:map", 2)
    losses.count("file", "evidence:store", 5)
    assert losses.table() == {
        "exec": {"events:encode": 3, "evidence:map": 2},
        "file": {"evidence:store": 5},
    }
    assert losses.own() == {"exec": {"evidence:map": 2}, "file": {"evidence:store": 5}}


def test_records_waiting_for_the_live_tail_are_bounded_in_bytes_and_counted() -> None:
    """A daemon too busy to read them back makes the worker drop whole
    batches past TAIL_BYTES, counted, never grow without bound."""
    from agent.evidence.types import EvidenceRecord
    from agent.evidence.worker_child import TAIL_BYTES, _Worker

    worker = _Worker(cast(trio.SocketStream, None))
    body = b"x" * 4096
    batch = [
        EvidenceRecord("dev.tracehound.file.open.v1", f"{i:032x}", None, body) for i in range(256)
    ]
    sent = 0
    for round_ in range(3 * TAIL_BYTES // (len(body) * len(batch))):
        worker.published(batch, list(range(round_ * 256, round_ * 256 + 256)))
        sent += len(batch)
    assert 0 < worker.tail_bytes <= TAIL_BYTES
    assert worker.tail_dropped > 0 and worker.tail_dropped % len(batch) == 0
    waiting = sent - worker.tail_dropped
    assert waiting * len(body) <= TAIL_BYTES


def test_a_dead_workers_unconfirmed_batches_are_counted_by_kind() -> None:
    """What the daemon sent but the worker never said it took is lost at
    evidence:worker when it dies, by kind and in kernel events (a folded
    event counts as its count); what it confirmed is not counted again."""
    import socket

    from agent.capture.ledger import DownstreamLosses
    from agent.evidence.worker import EvidenceWorker, WorkerProcess
    from agent.evidence.worker_protocol import Status

    batches = _batch()[:3]  # exec, a file event folding 3000, net
    first, second = [batches[0]], [batches[1], batches[2]]
    ours, theirs = socket.socketpair()
    losses = DownstreamLosses()

    async def main() -> None:
        send, receive = trio.open_memory_channel[list[Any]](2)
        worker = EvidenceWorker(
            WorkerProcess(0, ours), receive,
            Start(state_dir="/x", source="--evidence /x", probes=[], config={}, rules=[],
                  max_field_chars=1, store=StoreOptions()),
            books=dict, sink_books=dict, losses=losses,
        )  # fmt: skip
        worker._stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        async with send:
            await send.send(first)
            await send.send(second)
        await worker._forward()
        status = Status(
            taken=1, losses={}, mapped=1, published=1, depth=0, failing=None, failures=0,
            lost_to_store=0, owes_the_log=False, sealed=None, checkpoint_age_s=None, memo=None,
        )  # fmt: skip
        worker._mirror(status)  # the worker took the first batch
        worker._died("killed")
        assert worker.lost_to_worker == 3001

    trio.run(main)
    theirs.close()
    assert losses.table() == {"file": {"evidence:worker": 3000}, "net": {"evidence:worker": 1}}


def test_a_producers_event_and_its_reply_round_trip() -> None:
    """A program's name need not be UTF-8: the event carries it as bytes."""
    event = AppEvent(
        pid=7, uid=1000, gid=1000, exe=b"/tmp/\xff\xfe", comm=b"\xc3(", cgroup_id=2**63,
        peer_gone=False, kind="mark", message="m", data={"a": [1, None, {"b": "c"}]}, ts_ns=2**62,
    )  # fmt: skip
    message = Append(request=3, event=event)
    encode = msgspec.msgpack.Encoder().encode
    assert msgspec.msgpack.decode(encode(message), type=Control) == message
    reply = Reply(request=3, record_id="0" * 32, time="2026-01-01T00:00:00.000000000Z")
    assert msgspec.msgpack.decode(encode(reply), type=Report) == reply
