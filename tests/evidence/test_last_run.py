"""How the previous run ended, read backwards, against the forward reading
that defines it: every line decoded, in order."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evidence.last_run import previous_run
from agent.evidence.layout import CHECKPOINT, RECOVERED, SEGMENT_START
from agent.evidence.record_types import TYPE_START, TYPE_STOP
from agent.evidence.types import TYPE_PREFIX


def forward(lines: list[bytes]) -> dict[str, Any] | None:
    """The definition: the last evidence record decides; the last start and
    the torn tails after it describe the run."""
    start_seq: int | None = None
    last_capture: str | None = None
    last_seq: int | None = None
    torn: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = msgspec.json.decode(line)
            seq, type_ = record["seq"], record["type"]
            if not isinstance(seq, int) or not isinstance(type_, str):
                continue
        except (msgspec.DecodeError, KeyError, TypeError):
            continue
        last_seq = seq
        if type_.startswith(TYPE_PREFIX):
            last_capture = type_
        if type_ == TYPE_START:
            start_seq, torn = seq, []
        elif type_ == RECOVERED and isinstance(record.get("body"), dict):
            torn.append({"seq": seq, **record["body"]})
    if last_capture is None or last_capture == TYPE_STOP:
        return None
    return {"previous_start_seq": start_seq, "last_seq": last_seq, "torn_tails": torn}


TYPES = [
    TYPE_START, TYPE_STOP, TYPE_PREFIX + "process.exec.v1", TYPE_PREFIX + "file.open.v1",
    CHECKPOINT, SEGMENT_START, RECOVERED,
]  # fmt: skip


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    lines: list[bytes] = []
    for seq in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from([*TYPES, "torn", "garbage"]))
        if kind == "garbage":
            lines.append(b'{"seq": not json\n')
            continue
        body: Any = {"type": kind} if kind.startswith(TYPE_PREFIX) else None
        if kind == RECOVERED:
            body = draw(st.sampled_from([{"bytes": 12, "kept": "recovered/x"}, "not a dict"]))
        if kind == "torn":  # a record whose body holds the marks as text
            kind, body = CHECKPOINT, {"note": f'"type":"{TYPE_START}" "type":"{RECOVERED}"'}
        record = {"body": body, "seq": seq, "type": kind}
        lines.append(msgspec.json.encode(record) + b"\n")
    return lines


@settings(max_examples=500, deadline=None)
@given(logs(), st.lists(st.integers(0, 40), max_size=3), st.booleans())
def test_backwards_is_the_forward_reading(lines: list[bytes], cuts: list[int], torn: bool) -> None:
    """Cut into segments anywhere between lines; a torn last line is no record."""
    bounds = sorted({0, len(lines), *(c for c in cuts if c <= len(lines))})
    segments = [b"".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]
    if torn:
        segments.append(b'{"body":null,"seq":99,"type":"' + TYPE_STOP.encode())
    assert previous_run(segments) == forward(lines)


def test_a_run_that_crashed_after_a_restart_keeps_only_its_own_torn_tails() -> None:
    def line(seq: int, type_: str, body: object = None) -> bytes:
        return msgspec.json.encode({"body": body, "seq": seq, "type": type_}) + b"\n"

    lines = [
        line(0, TYPE_START),
        line(1, RECOVERED, {"bytes": 1}),
        line(2, TYPE_START),
        line(3, RECOVERED, {"bytes": 2}),
        line(4, TYPE_PREFIX + "process.exec.v1"),
        line(5, CHECKPOINT),
        line(6, RECOVERED, {"bytes": 3}),
    ]
    assert previous_run([b"".join(lines)]) == {
        "previous_start_seq": 2,
        "last_seq": 6,
        "torn_tails": [{"seq": 3, "bytes": 2}, {"seq": 6, "bytes": 3}],
    }
    assert previous_run([b"".join(lines), line(7, TYPE_STOP) + line(8, CHECKPOINT)]) is None
