"""How the log's previous run ended: read at start, from the end backwards.

A start that finds the last run never wrote ``capture.stop`` says so in a
``capture.recovered`` record (where that run started, its last record, the
torn tails the store set aside). Reading that forwards meant decoding every
line of the last segments: half a second for a 64 MiB segment, before
READY. Backwards, a clean end is found in the last few lines, and an
unclean one decodes only the lines that can be a start or a torn tail.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.evidence.layout import RECOVERED, segment_files
from agent.evidence.record_types import TYPE_START, TYPE_STOP
from agent.evidence.types import TYPE_PREFIX

__all__ = ["last_segment_lines", "previous_run"]

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


def previous_run(lines: Sequence[bytes]) -> dict[str, Any] | None:
    """How the previous run in a log ended, from its records in order. Pure.

    Clean when the last evidence record (the store's own segment headers and
    checkpoints aside) is ``capture.stop``; then None. Otherwise what was
    found: where that run started (None if its start has scrolled out of
    the segments read), the last record it wrote, and the torn tails the
    store set aside when it reopened the log (those after that start).
    Lines that do not decode are passed over.
    """
    last_seq: int | None = None
    last_capture: str | None = None
    start_seq: int | None = None
    torn: list[dict[str, Any]] = []
    for line in reversed(lines):
        wanted = (
            last_seq is None
            or (last_capture is None and _CAPTURE_MARK in line)
            or _START_MARK in line
            or _RECOVERED_MARK in line
        )
        if not wanted:
            continue
        record = _record(line)
        if record is None:
            continue
        if last_seq is None:
            last_seq = record.seq
        if last_capture is None and record.type.startswith(TYPE_PREFIX):
            last_capture = record.type  # the store's own records don't count
            if last_capture == TYPE_STOP:
                return None
        if record.type == TYPE_START:
            start_seq = record.seq
            break
        if record.type == RECOVERED and isinstance(record.body, dict):
            torn.append({"seq": record.seq, **record.body})
    if last_capture is None:
        return None
    torn.reverse()
    return {"previous_start_seq": start_seq, "last_seq": last_seq, "torn_tails": torn}


def last_segment_lines(state_dir: str | os.PathLike[str], *, most: int = 16) -> list[bytes]:
    """Lines of the newest segments, oldest first: the two newest, and more
    back (up to ``most``) until one holds a record of the capture itself.
    Enough to see how the last run ended, even when its last segments hold
    only the store's own records (a header, a seal, a pruning); a run that
    spans more started long ago, and the scan says so only if its start is
    still in view (the chain keeps the rest)."""
    segments = segment_files(Path(state_dir) / "segments")
    chunks: list[list[bytes]] = []
    seen_capture = False
    for _, path in reversed(segments[-most:]):
        with open(path, "rb") as f:
            lines = [line for line in f if line.endswith(b"\n")]
        chunks.append(lines)
        seen_capture = seen_capture or any(_CAPTURE_MARK in line for line in lines)
        if len(chunks) >= 2 and seen_capture:
            break
    return [line for chunk in reversed(chunks) for line in chunk]
