"""Server-Sent Events framing and the per-client buffer (agent.api.sse).

Framing is checked by round-tripping through a small parser that follows the
WHATWG "Parsing an event stream" and "Dispatch the event" steps, so the
encoder is held to what a browser's EventSource would actually see.
"""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.api.sse import SseClientBuffer, sse_comment, sse_event


class Dispatched(msgspec.Struct, frozen=True):
    type: str
    data: str
    last_event_id: str


class WhatwgParser:
    """Just enough of the WHATWG event-stream interpretation for the tests."""

    def __init__(self) -> None:
        self.events: list[Dispatched] = []
        self.retry: int | None = None
        self.last_event_id = ""
        self._data = ""
        self._type = ""

    def parse(self, stream: bytes) -> list[Dispatched]:
        text = stream.decode("utf-8", errors="replace")
        text = text.removeprefix("\ufeff")
        lines = re.split(r"\r\n|\r|\n", text)
        # The last piece is an incomplete line (no terminator): not processed.
        for line in lines[:-1]:
            self._line(line)
        return self.events

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            return
        elif ":" in line:
            name, _, value = line.partition(":")
            self._field(name, value.removeprefix(" "))
        else:
            self._field(line, "")

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            self.retry = int(value)

    def _dispatch(self) -> None:
        if self._data == "":
            self._type = ""
            return
        data = self._data.removesuffix("\n")
        self.events.append(Dispatched(self._type or "message", data, self.last_event_id))
        self._data = ""
        self._type = ""


def parse(stream: bytes) -> list[Dispatched]:
    return WhatwgParser().parse(stream)


# --- framing --------------------------------------------------------------


def test_simple_event_bytes() -> None:
    assert sse_event("hello") == b"data: hello\n\n"
    assert (
        sse_event('{"a":1}', event="process.exec", id="ab" * 16, retry_ms=1500)
        == b"id: " + b"ab" * 16 + b'\nevent: process.exec\nretry: 1500\ndata: {"a":1}\n\n'
    )


def test_multiline_data_becomes_several_data_lines() -> None:
    assert sse_event("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert parse(sse_event("a\nb\r\nc\rd")) == [Dispatched("message", "a\nb\nc\nd", "")]


def test_edge_data_round_trips() -> None:
    for data in ["", " leading space", "trailing\n", "\n", "::colons::", "data: nested", "\x00"]:
        expected = re.sub(r"\r\n|\r", "\n", data)
        assert parse(sse_event(data)) == [Dispatched("message", expected, "")]


def test_retry_round_trips() -> None:
    parser = WhatwgParser()
    parser.parse(sse_event("x", retry_ms=0) + sse_event("y", retry_ms=2500))
    assert parser.retry == 2500


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"id": "1\n2"},
        {"id": "1\r"},
        {"id": "a\x00b"},
        {"retry_ms": -1},
        {"retry_ms": True},
        {"retry_ms": 1.5},
    ],
)
def test_field_injection_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sse_event("x", **kwargs)  # type: ignore[arg-type]


def test_lone_surrogate_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        sse_event("\ud800")


NO_BREAKS = st.text().filter(lambda s: "\r" not in s and "\n" not in s)


@given(
    st.lists(
        st.tuples(
            st.text(),
            st.none() | NO_BREAKS,
            st.none() | NO_BREAKS.filter(lambda s: "\x00" not in s),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_events_round_trip_through_a_whatwg_parser(
    events: list[tuple[str, str | None, str | None]],
) -> None:
    stream = b"".join(sse_event(data, event=event, id=id_) for data, event, id_ in events)
    stream = sse_comment("keep-alive") + stream + sse_comment("bye\nnow")
    expected: list[Dispatched] = []
    last_id = ""
    for data, event, id_ in events:
        if id_ is not None:
            last_id = id_
        expected.append(Dispatched(event or "message", re.sub(r"\r\n|\r", "\n", data), last_id))
    assert parse(stream) == expected


def test_comments_dispatch_nothing() -> None:
    assert sse_comment() == b": \n"
    assert sse_comment("a\nb") == b": a\n: b\n"
    assert parse(sse_comment("ping") * 3) == []
    # A comment between two events changes neither.
    stream = sse_event("1") + sse_comment("x") + sse_event("2")
    assert [e.data for e in parse(stream)] == ["1", "2"]


# --- per-client buffer ----------------------------------------------------


def test_buffer_bound_and_drop_count() -> None:
    buffer = SseClientBuffer(3)
    assert [buffer.offer(sse_event(str(i))) for i in range(5)] == [True, True, True, False, False]
    assert len(buffer) == 3
    assert buffer.dropped == 2
    assert buffer.take_all() == [sse_event("0"), sse_event("1"), sse_event("2")]
    assert len(buffer) == 0
    assert buffer.offer(sse_event("5")) is True


def test_overflow_notice_is_sent_once_per_drop() -> None:
    buffer = SseClientBuffer(1)
    assert buffer.overflow_notice() is None
    buffer.offer(b"a")
    buffer.offer(b"b")
    buffer.offer(b"c")
    notice = buffer.overflow_notice()
    assert notice is not None
    [event] = parse(notice)
    assert event.type == "overflow"
    assert event.last_event_id == ""  # it leaves Last-Event-ID alone
    assert msgspec.json.decode(event.data) == {"dropped": 2, "total_dropped": 2}
    assert buffer.overflow_notice() is None
    buffer.take_all()
    buffer.offer(b"d")
    buffer.offer(b"e")
    second = buffer.overflow_notice()
    assert second is not None
    assert msgspec.json.decode(parse(second)[0].data) == {"dropped": 1, "total_dropped": 3}
    assert buffer.dropped == 3


def test_drain_puts_the_notice_after_the_pre_gap_items() -> None:
    buffer = SseClientBuffer(2)
    for i in range(4):
        buffer.offer(sse_event(str(i), id=f"{i:032x}"))
    stream = buffer.drain()
    events = parse(stream)
    assert [e.data for e in events[:2]] == ["0", "1"]
    assert events[2].type == "overflow"
    assert events[2].last_event_id == f"{1:032x}"  # resume point: the last one delivered
    assert buffer.drain() == b""


def test_capacity_is_validated() -> None:
    with pytest.raises(ValueError):
        SseClientBuffer(0)


@given(
    st.integers(min_value=1, max_value=8),
    st.lists(st.sampled_from(["offer", "take", "notice"]), max_size=60),
)
def test_buffer_accounting(capacity: int, ops: list[str]) -> None:
    buffer = SseClientBuffer(capacity)
    offered = accepted = reported = 0
    for op in ops:
        if op == "offer":
            offered += 1
            accepted += buffer.offer(b"x")
        elif op == "take":
            buffer.take_all()
        else:
            notice = buffer.overflow_notice()
            if notice is not None:
                body = msgspec.json.decode(parse(notice)[0].data)
                assert body["dropped"] > 0
                reported += body["dropped"]
        assert len(buffer) <= capacity
        assert accepted + buffer.dropped == offered
    final = buffer.overflow_notice()
    if final is not None:
        reported += msgspec.json.decode(parse(final)[0].data)["dropped"]
    assert reported == buffer.dropped
