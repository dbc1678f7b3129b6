"""What opening the store decides about the last segment: where to resume, what to cut.

Sans-I/O: the store reads the bytes and acts on the decision (moves a torn
tail aside, truncates, appends a ``recovered`` record, seals an unsealed
pruning); this module only looks at bytes.

A quick open. The last segment can be 64 MiB; re-verifying every line at
each start took seconds. The open now checks only from the segment's last
checkpoint on (:func:`find_last_checkpoint`, reading backwards in blocks):

- the checkpoint itself (its shape, its hash, its canonical bytes: it is
  taken as the trusted start, like a genesis),
- every record after it, as before: hash, link, canonical form, shape of
  the store's own records; only the last line may be bad (a crash tears at
  most what was being written), and it is moved aside; a bad line before
  the last is :class:`~agent.evidence.layout.StoreCorruptError`,
- the segment's first line: a ``segment.start`` record with its own hash.

What the open no longer checks: the records between the segment's header
and its last checkpoint (their hashes, links and canonical form) and the
checkpoint's link to the record before it. Those are sealed history, and
the daemon's background verify (``/v1/evidence/verify``, the
``tracehound_evidence_verify_ok`` metric) and ``evidence verify`` check
them; a damage there no longer stops the store from opening. A segment
with no checkpoint at all (an unsealed log, or one just rotated) is checked
whole, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from agent.evidence.chain import ChainRecord, ChainVerifier, Head, record_hash
from agent.evidence.layout import (
    CHECKPOINT,
    SEGMENT_PRUNED,
    SEGMENT_START,
    SegmentsPruned,
    SegmentStart,
    StoreCorruptError,
)
from agent.evidence.seal import Seal

__all__ = [
    "TAIL_BLOCK",
    "TailScan",
    "find_last_checkpoint",
    "last_line",
    "lost_seal",
    "read_header",
    "scan_tail",
    "try_record",
]

TAIL_BLOCK: Final = 64 * 1024
"""Bytes read at a time when searching a segment backwards."""

# Canonical records sort their keys, so "type" is a line's last key: a
# checkpoint's line ends so. (Inside a JSON string a quote is escaped, so
# these bytes cannot be a string's content.) Only a cheap filter: a line
# that matches is decoded and its hash checked before it is trusted.
_CHECKPOINT_END: Final = b',"type":"' + CHECKPOINT.encode() + b'"}\n'


class TailScan(msgspec.Struct, frozen=True):
    """The outcome of checking a segment from its resume point to its end.

    ``first``: the first record checked (the segment's header, or its last
    checkpoint); None if no line was good. ``head``: the last good record.
    ``torn_at``: the file offset where the bad last line starts (to move
    aside), or None. ``last_seal``: the last checkpoint's seal seen.
    ``unsealed_pruning``: seq and body of a ``segment.pruned`` record no
    checkpoint follows (the store seals it, then deletes what it names).
    """

    first: ChainRecord | None
    head: Head | None
    torn_at: int | None
    last_seal: Seal | None
    unsealed_pruning: tuple[int, SegmentsPruned] | None


def try_record(line: bytes) -> ChainRecord | None:
    """The line as a chain record, or None if it is not one (shape only)."""
    try:
        return msgspec.json.decode(line, type=ChainRecord)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _checkpoint(line: bytes) -> ChainRecord | None:
    """The line's record if it is a whole checkpoint with its own hash and a seal body."""
    if not line.endswith(_CHECKPOINT_END):
        return None
    record = try_record(line)
    if record is None or record.type != CHECKPOINT:
        return None
    try:
        msgspec.convert(record.body, Seal)
        if record_hash(record) != record.hash:
            return None
    except (msgspec.ValidationError, ValueError):
        return None
    return record


def _last_checkpoint_in(block: bytes, *, whole: bool) -> tuple[int, ChainRecord] | None:
    """The last complete checkpoint line in ``block``: its offset and record.

    ``whole``: the block starts at a line's start (the file's start);
    otherwise what comes before its first newline may be the end of a line
    that began earlier, and is not looked at.
    """
    end = block.rfind(b"\n") + 1  # a piece after the last newline is torn
    floor = 0 if whole else block.find(b"\n") + 1
    while end > floor:
        start = block.rfind(b"\n", floor, end - 1) + 1
        start = max(start, floor)
        found = _checkpoint(block[start:end])
        if found is not None:
            return start, found
        end = start
    return None


def find_last_checkpoint(
    read: Callable[[int, int], bytes], size: int, *, block: int = TAIL_BLOCK
) -> tuple[int, ChainRecord] | None:
    """The offset and record of the last whole, self-consistent checkpoint
    line in a file of ``size`` bytes, read backwards ``block`` bytes at a
    time through ``read(offset, length)``; None if there is none.

    Reads only as far back as the checkpoint: under load, about one seal
    interval of records. A line longer than a block is carried into the
    next read whole (memory: the longest line, at most the file).
    """
    pos = size
    carry = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        data = read(pos, step) + carry
        found = _last_checkpoint_in(data, whole=pos == 0)
        if found is not None:
            offset, record = found
            return pos + offset, record
        cut = data.find(b"\n")
        carry = data if cut < 0 else data[: cut + 1]
    return None


def last_line(tail: bytes) -> bytes | None:
    """The last line ending in a newline within ``tail`` (read from a file's
    end), without it; None if ``tail`` may not hold all of it yet."""
    body = tail[:-1] if tail.endswith(b"\n") else tail
    cut = body.rfind(b"\n")
    return None if cut < 0 else body[cut + 1 :]


def read_header(line: bytes, name: str) -> tuple[ChainRecord, SegmentStart]:
    """A segment's first line, checked on its own: a ``segment.start``
    record with its own hash and a header body.

    Raises:
        StoreCorruptError: it is not (the segment was edited).
    """
    record = try_record(line)
    if record is None or record.type != SEGMENT_START:
        raise StoreCorruptError(f"{name}: does not begin with a {SEGMENT_START} record")
    try:
        start = msgspec.convert(record.body, SegmentStart)
        good = record_hash(record) == record.hash
    except (msgspec.ValidationError, ValueError):
        good = False
    if not good:
        raise StoreCorruptError(
            f"{name}: its {SEGMENT_START} record is damaged; verify the log before writing to it"
        )
    return record, start


def scan_tail(data: bytes, *, base: int, at_start: bool, name: str) -> TailScan:
    """Check ``data``, a segment's bytes from offset ``base`` to its end.

    The first line is taken as the start of the chain (its ``prev`` on
    trust, its own hash checked): the segment's header when ``at_start``
    (which must then be a ``segment.start`` record), else its last
    checkpoint. Every line after it must be the valid next record, except
    that the last may be torn or bad (a crash): ``torn_at`` then says where
    it starts.

    Raises:
        StoreCorruptError: a bad line that is not the last one, a segment
            not starting with its header, a ``segment.pruned`` body of the
            wrong shape: not what a crash leaves.
    """
    verifier: ChainVerifier | None = None
    first: ChainRecord | None = None
    torn_at: int | None = None
    last_seal: Seal | None = None
    unsealed_pruning: tuple[int, SegmentsPruned] | None = None
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            torn_at = base + pos
            break
        end = newline + 1
        line = data[pos:end]
        is_last = end == len(data)
        if verifier is None:
            first = try_record(line)
            genesis = None if first is None or first.seq == 0 else (first.seq - 1, first.prev)
            verifier = ChainVerifier(genesis=genesis)
        if verifier.feed_line(line) is not None:
            if not is_last:
                raise StoreCorruptError(
                    f"{name}: the line at byte {base + pos} is not a valid next record, and it"
                    " is not the last line: not a crash; verify the log before writing to it"
                )
            torn_at = base + pos
            break
        record = msgspec.json.decode(line, type=ChainRecord)
        if pos == 0 and at_start and record.type != SEGMENT_START:
            raise StoreCorruptError(f"{name}: does not begin with a {SEGMENT_START} record")
        if record.type == CHECKPOINT:
            last_seal = msgspec.convert(record.body, Seal)
            unsealed_pruning = None
        elif record.type == SEGMENT_PRUNED:
            try:
                unsealed_pruning = (record.seq, msgspec.convert(record.body, SegmentsPruned))
            except msgspec.ValidationError:
                raise StoreCorruptError(
                    f"{name}: the line at byte {base + pos}: a segment.pruned body of the"
                    " wrong shape"
                ) from None
        pos = end
    head = verifier.head if verifier is not None else None
    return TailScan(
        first=first if head is not None else None,
        head=head,
        torn_at=torn_at,
        last_seal=last_seal,
        unsealed_pruning=unsealed_pruning,
    )


def lost_seal(raw: bytes, head: Head | None) -> Seal | None:
    """The seal in ``raw`` (a torn tail) if it is a whole, valid checkpoint
    record over ``head``: a seal whose newline never reached the disk, while
    the key file already ratcheted past it."""
    record = try_record(raw.rstrip(b"\n"))
    if record is None or head is None or record.type != CHECKPOINT:
        return None
    if record.prev != head[1] or record.seq != head[0] + 1 or record_hash(record) != record.hash:
        return None
    try:
        seal = msgspec.convert(record.body, Seal)
    except msgspec.ValidationError:
        return None
    return seal if seal.head == head else None
