"""How the log's previous run ended: read at start, from the end backwards.

A start that finds the last run never wrote ``capture.stop`` says so in a
``capture.recovered`` record (where that run started, its last record, the
torn tails the store set aside). Reading that forwards meant decoding every
line of the last segments: half a second for a 64 MiB segment, before
READY. Backwards, on the segments' bytes, with a search for the few marks
that matter (a C loop, ~10 ms over 64 MiB), only the lines that can be the
last capture record, the last start or a torn tail are decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.evidence.layout import RECOVERED, segment_files
from agent.evidence.record_types import TYPE_START, TYPE_STOP
from agent.evidence.types import TYPE_PREFIX

__all__ = ["last_segments", "previous_run"]

#: A chain line's ``"type"`` member, as the canonical encoder writes it.
#: Inside a JSON string a quote is escaped, so these bytes only ever match
#: the structure of a line, never a value in it (each hit is decoded anyway).
_CAPTURE_MARK: Final = f'"type":"{TYPE_PREFIX}'.encode()
_START_MARK: Final = f'"type":"{TYPE_START}"'.encode()
_RECOVERED_MARK: Final = f'"type":"{RECOVERED}"'.encode()


class _TailRecord(msgspec.Struct):
    seq: int
    type: str
    body: Any = None


_decode = msgspec.json.Decoder(_TailRecord).decode


def _record(line: bytes) -> _TailRecord | None:
    try:
        return _decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # the verifier's business, not this summary's


class _Log:
    """The complete lines of some segments' bytes, found by marks. Pure."""

    def __init__(self, segments: Sequence[bytes]) -> None:
        self.data = b"".join(segments)
        self.end = self.data.rfind(b"\n") + 1  # a torn last line is not a record

    def line(self, pos: int) -> tuple[int, int]:
        """The span of the line holding byte ``pos``."""
        return self.data.rfind(b"\n", 0, pos) + 1, self.data.find(b"\n", pos) + 1

    def last(
        self, mark: bytes, before: int, want: Callable[[_TailRecord], bool]
    ) -> tuple[int, _TailRecord | None]:
        """The last record before ``before`` whose line holds ``mark`` and
        which ``want`` takes, with its line's start; (0, None) if none."""
        pos = self.data.rfind(mark, 0, before)
        while pos >= 0:
            start, stop = self.line(pos)
            record = _record(self.data[start:stop])
            if record is not None and want(record):
                return start, record
            pos = self.data.rfind(mark, 0, start)
        return 0, None

    def last_record(self) -> _TailRecord | None:
        stop = self.end
        while stop > 0:
            start = self.data.rfind(b"\n", 0, stop - 1) + 1
            record = _record(self.data[start:stop])
            if record is not None:
                return record
            stop = start
        return None


def previous_run(segments: Sequence[bytes]) -> dict[str, Any] | None:
    """How the previous run in a log ended, from the bytes of its newest
    segments (oldest first), as this package writes them. Pure.

    Clean when the last evidence record (the store's own segment headers and
    checkpoints aside) is ``capture.stop``; then None. Otherwise what was
    found: where that run started (None if its start has scrolled out of
    the segments read), the last record it wrote, and the torn tails the
    store set aside when it reopened the log (those after that start).
    Lines that do not decode are passed over, and so is a last line without
    its newline (a torn tail).
    """
    log = _Log(segments)
    _, capture = log.last(_CAPTURE_MARK, log.end, lambda r: r.type.startswith(TYPE_PREFIX))
    if capture is None or capture.type == TYPE_STOP:
        return None
    last = log.last_record()
    assert last is not None  # the capture record is one
    start_at, start = log.last(_START_MARK, log.end, lambda r: r.type == TYPE_START)
    if start is not None:
        start_at = log.line(start_at)[1]  # the records after the start's line
    torn: list[dict[str, Any]] = []
    pos = log.data.find(_RECOVERED_MARK, start_at, log.end)
    while pos >= 0:
        line_start, line_stop = log.line(pos)
        record = _record(log.data[line_start:line_stop])
        if record is not None and record.type == RECOVERED and isinstance(record.body, dict):
            torn.append({"seq": record.seq, **record.body})
        pos = log.data.find(_RECOVERED_MARK, line_stop, log.end)
    return {
        "previous_start_seq": None if start is None else start.seq,
        "last_seq": last.seq,
        "torn_tails": torn,
    }


def last_segments(state_dir: str | os.PathLike[str], *, most: int = 16) -> list[bytes]:
    """The bytes of the newest segments, oldest first: the two newest, and
    more back (up to ``most``) until one holds a record of the capture
    itself. Enough to see how the last run ended, even when its last
    segments hold only the store's own records (a header, a seal, a
    pruning); a run that spans more started long ago, and the scan says so
    only if its start is still in view (the chain keeps the rest)."""
    segments = segment_files(Path(state_dir) / "segments")
    chunks: list[bytes] = []
    seen_capture = False
    for _, path in reversed(segments[-most:]):
        data = path.read_bytes()
        chunks.append(data)
        seen_capture = seen_capture or _CAPTURE_MARK in data
        if len(chunks) >= 2 and seen_capture:
            break
    return chunks[::-1]
