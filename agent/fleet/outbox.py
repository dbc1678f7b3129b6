"""The log is the outbox: the committed records after the cursor, in order.

The publisher never holds a queue of its own: what is not yet acknowledged
is on disk, in the segments, and :class:`Outbox` reads it from there,
complete lines only (:mod:`.segment_read`), one block at a time, so its
memory is bounded by what the caller asks for (the in-flight window).
Capture never waits for it: it only reads.

Where it starts (:meth:`Outbox.read` locates lazily, so a log that does not
exist yet is waited for):

- no cursor: the log's first record;
- a cursor whose record is in the log with the same hash: the record after it;
- a cursor whose record is not in the log (the log was cut: its head is
  below the cursor) or differs (the log was replaced): a **reset**, counted
  and said, and the log's first record;
- a cursor older than the oldest segment: the records in between were
  pruned before they were published: a counted **loss**, and the oldest
  record on disk.

While following: a seq that jumps forward is a loss (a segment pruned
under the publisher, counted); one that goes back, or a file shorter than
where the reader stood, is a replaced log (a reset). A complete line that
is not a chain record is counted (``bad_lines``) and skipped; it cannot be
published, since its subject and id come from its record.

Each of those is also a one-line notice in :attr:`Outbox.notices`, for the
caller to print: this module does no I/O but reading the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

from agent.evidence.chain import ChainRecord
from agent.evidence.layout import segment_files
from agent.fleet.cursor import Cursor
from agent.fleet.segment_read import read_block

__all__ = ["Committed", "Outbox", "Position", "record_time_ns"]

_DECODER: Final = msgspec.json.Decoder(ChainRecord)


class _SeqHash(msgspec.Struct):
    seq: int
    hash: str


_SEQ_HASH: Final = msgspec.json.Decoder(_SeqHash)


class Position(NamedTuple):
    """Where a line starts: segment index and byte offset."""

    segment: int
    offset: int


class Committed(NamedTuple):
    """One committed record: decoded, its exact line (no ``\\n``), where it
    starts, and when this process first read it (ns, wall clock)."""

    record: ChainRecord
    raw: bytes
    position: Position
    seen_ns: int


def record_time_ns(committed: Committed) -> int:
    """When the record was made: its CloudEvent ``time`` if it has one, else
    when the publisher first read it (the store's own records have no time)."""
    body = committed.record.body
    if isinstance(body, dict):
        text = body.get("time")
        if isinstance(text, str) and len(text) >= 20 and text.endswith("Z"):
            head, _, frac = text[:-1].partition(".")
            try:
                stamp = datetime.fromisoformat(head + "+00:00")
                nanos = int(frac[:9].ljust(9, "0")) if frac else 0
            except ValueError:
                return committed.seen_ns
            return int(stamp.timestamp()) * 1_000_000_000 + nanos
    return committed.seen_ns


class Outbox:
    """The committed records after a cursor, read from the segments in order."""

    def __init__(
        self, state_dir: Path, after: Cursor | None, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._segments = state_dir / "segments"
        self._after = after
        self._clock = clock
        self._pos: Position | None = None
        self._expected: int | None = None
        #: Records pruned (or missing) before they were published.
        self.lost = 0
        #: Times the cursor or the reader's place was not in the log: started over.
        self.resets = 0
        #: Complete lines that are not chain records (skipped).
        self.bad_lines = 0
        #: One-line notices for a person, oldest first; the caller empties it.
        self.notices: list[str] = []

    @property
    def expected(self) -> int | None:
        """The seq the next record should have (None: the log's first, unknown yet)."""
        return self._expected

    def rewind(self, position: Position, seq: int) -> None:
        """Read again from ``position``, where record ``seq`` starts (records
        read but never acknowledged are sent again)."""
        self._pos = position
        self._expected = seq

    def read(self, max_records: int) -> list[Committed]:
        """Up to ``max_records`` committed records, oldest first; [] if none yet.

        Raises:
            OSError: a segment cannot be read (the caller tries again later).
        """
        if max_records <= 0:
            return []
        segments = segment_files(self._segments)
        if not segments:
            return []
        if self._pos is None:
            self._locate(segments)
            if self._pos is None:
                return []
        out: list[Committed] = []
        indexes = [index for index, _ in segments]
        while len(out) < max_records:
            pos = self._pos
            assert pos is not None
            newer = [i for i in indexes if i > pos.segment]
            if pos.segment not in indexes:
                if newer:  # pruned under us: go on in the next one (a seq jump is the loss)
                    self._pos = Position(newer[0], 0)
                    continue
                self._reset(segments, "the segment being read is gone and none is newer")
                return out
            path = segments[indexes.index(pos.segment)][1]
            block = read_block(path, pos.offset)
            if block is None:  # pruned between listing and reading: list again
                segments = segment_files(self._segments)
                if not segments:
                    return out
                indexes = [index for index, _ in segments]
                continue
            if block.size < pos.offset:
                self._reset(segments, f"{path.name} is shorter than where the publisher read")
                return out
            if not block.data:
                if newer:  # complete before the newer one was made (listed first)
                    self._pos = Position(newer[0], 0)
                    continue
                return out
            if not self._take(block.data, pos, out, max_records, segments):
                return out
        return out

    # --- helpers -------------------------------------------------------------------

    def _take(
        self,
        data: bytes,
        pos: Position,
        out: list[Committed],
        max_records: int,
        segments: list[tuple[int, Path]],
    ) -> bool:
        """Decode the lines of ``data`` into ``out``; False after a reset."""
        start = 0
        now = self._clock()
        while len(out) < max_records:
            end = data.find(b"\n", start)
            if end < 0:
                break
            raw = data[start:end]
            here = Position(pos.segment, pos.offset + start)
            start = end + 1
            self._pos = Position(pos.segment, pos.offset + start)
            try:
                record = _DECODER.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.bad_lines += 1
                self.notices.append(
                    f"segment {pos.segment} offset {here.offset}: a line that is not a chain"
                    " record; skipped (it cannot be published)"
                )
                continue
            expected = self._expected
            if expected is not None and record.seq < expected:
                self._reset(segments, f"seq {record.seq} follows seq {expected - 1}")
                return False
            if expected is not None and record.seq > expected:
                missing = record.seq - expected
                self.lost += missing
                self.notices.append(
                    f"records {expected} to {record.seq - 1} ({missing}) left the log"
                    " before they were published (pruned); counted as lost"
                )
            self._expected = record.seq + 1
            out.append(Committed(record, raw, here, now))
        return True

    def _reset(self, segments: list[tuple[int, Path]], why: str) -> None:
        self.resets += 1
        self.notices.append(f"{why}: the log was cut or replaced; publishing it from its start")
        self._after = None
        self._pos = Position(segments[0][0], 0)
        self._expected = None

    def _locate(self, segments: list[tuple[int, Path]]) -> None:
        """Place the reader just after the cursor (see the module's docstring)."""
        after = self._after
        if after is None:
            self._pos = Position(segments[0][0], 0)
            return
        firsts: list[tuple[int, Path, int]] = []
        for index, path in segments:
            first = _first_seq(path)
            if first is not None:
                firsts.append((index, path, first))
        if not firsts:
            return  # only empty segments so far
        holding = [entry for entry in firsts if entry[2] <= after.seq]
        if not holding:
            index, _, first = firsts[0]
            missing = first - after.seq - 1
            if missing > 0:
                self.lost += missing
                self.notices.append(
                    f"records {after.seq + 1} to {first - 1} ({missing}) left the log before"
                    " they were published (pruned); counted as lost"
                )
            self._pos = Position(index, 0)
            self._expected = first
            return
        index, path, _ = holding[-1]
        found = _find(path, after.seq)
        if found is None:
            self._reset(segments, f"the cursor's record {after.seq} is not in the log")
        elif found[1] != after.hash:
            self._reset(segments, f"the log's record {after.seq} is not the one published")
        else:
            self._pos = Position(index, found[0])
            self._expected = after.seq + 1


def _first_seq(path: Path) -> int | None:
    block = read_block(path, 0, 4096)
    if block is None or not block.data:
        return None
    try:
        return _SEQ_HASH.decode(block.data[: block.data.index(b"\n")]).seq
    except msgspec.DecodeError:
        return None


def _find(path: Path, seq: int) -> tuple[int, str] | None:
    """The offset just past record ``seq`` in ``path`` and its hash, or None."""
    offset = 0
    while (block := read_block(path, offset)) is not None and block.data:
        start = 0
        data = block.data
        while (end := data.find(b"\n", start)) >= 0:
            try:
                line = _SEQ_HASH.decode(data[start:end])
            except msgspec.DecodeError:
                line = None
            start = end + 1
            if line is not None and line.seq == seq:
                return offset + start, line.hash
            if line is not None and line.seq > seq:
                return None
        offset += len(data)
    return None
