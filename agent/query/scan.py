"""Answer a filter from the evidence log: the index if it can, else a scan.

:func:`search` is what ``/v1/events``, ``tracehound events`` and ``report``
call: a page of the records matching a filter, after a cursor, in log
order (ascending chain ``seq``), and the cursor of the next page. It asks
:func:`_indexed` first (the SQLite index beside the log, which may answer
None: missing, stale, or a filter it cannot serve) and otherwise scans.

The scan (:func:`scan`) reads the segments in order, one in memory at a
time, and decodes only lines that can match:

- a segment whose last record is at or before the cursor is skipped, and
  so is one whose records' times all fall outside ``since``/``until``
  (each segment's last seq and time range are computed once per (path,
  size, mtime) and remembered, so a daemon skips an old segment for a
  later page or window on a stat, without reading it);
- within a segment, a line's ``seq`` and CloudEvents ``time`` are read
  from its bytes (canonical JSON: the body's ``time`` is the last
  ``"time":"`` of the line) before anything is decoded.

A tree or exe filter needs the process history from the start of the log
(:class:`~agent.query.match.ProcessTracker`), so it reads every segment,
and decodes fork, exec and seen records before the cursor too.

Like :mod:`agent.evidence.log_reader`, the scan tolerates a torn last line,
a segment pruned while it runs and a line that does not decode (skipped:
damage is the verifier's to report). It runs beside the writer without its
lock; a segment created after the listing is not read.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.evidence.layout import segment_files
from agent.evidence.log_reader import LoggedEvent, find_event
from agent.evidence.types import TYPE_PREFIX
from agent.query.filter import EventFilter, cursor_after
from agent.query.index import find_indexed, query_index
from agent.query.match import ProcessTracker, matches
from agent.query.parse import rfc3339_ns

__all__ = ["Page", "find", "newest", "scan", "search"]

_TIME: Final = b'"time":"'
_TIMES: Final = re.compile(rb'"time":"([^"]{1,64})","type":"')
_FIXED_LEN: Final = len("2025-11-24T16:00:00.123456789Z")
_SEQ: Final = b'"seq":'
_PROCESS: Final = b'"type":"' + TYPE_PREFIX.encode() + b"process."
_CACHE_MAX: Final = 4096


class Page(msgspec.Struct, frozen=True):
    """One answer: ``events`` in ascending seq, and ``next_cursor``, the
    cursor of the page after it (None when this page ended the answer)."""

    events: list[LoggedEvent]
    next_cursor: str | None


class _Line(msgspec.Struct):
    seq: int
    type: str
    body: msgspec.Raw


class _Summary(msgspec.Struct, frozen=True):
    """A segment's last seq and its records' time range (None: no timed record)."""

    last_seq: int
    first_ns: int | None
    last_ns: int | None


#: Summaries by (path, size, mtime): a rotated segment never changes, so a
#: daemon reads each one once to learn it can skip it for a window or cursor.
_summaries: dict[tuple[str, int, int], _Summary] = {}
_summaries_lock = threading.Lock()


def _indexed(
    state_dir: Path, flt: EventFilter, *, after_seq: int, limit: int
) -> list[LoggedEvent] | None:
    """The index's answer, or None (no index, or it cannot answer: scan)."""
    return query_index(state_dir, flt, after_seq=after_seq, limit=limit)


def find(state_dir: Path, event_id: str) -> LoggedEvent | None:
    """The record with id ``event_id``: the index's answer when it has one
    (read back and checked), else a search of the log."""
    found = find_indexed(state_dir, event_id)
    if found is None:
        return find_event(state_dir, event_id)
    return found[0] if found else None


def search(state_dir: Path, flt: EventFilter, *, after_seq: int = -1, limit: int) -> Page:
    """Up to ``limit`` records matching ``flt`` with seq > ``after_seq``
    (-1: from the start), and the cursor after the last one when the page
    is full (there may be more). ``limit`` must be at least 1."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    found = _indexed(state_dir, flt, after_seq=after_seq, limit=limit)
    if found is None:
        found = scan(state_dir, flt, after_seq=after_seq, limit=limit)
    following = cursor_after(found[-1].seq) if len(found) >= limit else None
    return Page(events=found, next_cursor=following)


def scan(state_dir: Path, flt: EventFilter, *, after_seq: int, limit: int) -> list[LoggedEvent]:
    """The first ``limit`` records with seq > ``after_seq`` matching ``flt``, by reading the log."""
    out: list[LoggedEvent] = []
    if limit < 1:
        return out
    for logged in _matching(state_dir, flt, after_seq):
        out.append(logged)
        if len(out) >= limit:
            break
    return out


def newest(state_dir: Path, flt: EventFilter, *, limit: int) -> list[LoggedEvent]:
    """The newest ``limit`` records matching ``flt``, oldest first (the
    ``last`` parameter of ``/v1/events``: what it answered before cursors)."""
    if limit < 1:
        return []
    kept: collections.deque[LoggedEvent] = collections.deque(maxlen=limit)
    kept.extend(_matching(state_dir, flt, -1))
    return list(kept)


# --- the scan ---------------------------------------------------------------------


def _matching(state_dir: Path, flt: EventFilter, after_seq: int) -> Iterator[LoggedEvent]:
    procs = ProcessTracker.for_filter(flt)
    timed = flt.since_ns is not None or flt.until_ns is not None
    for _, path in segment_files(state_dir / "segments"):
        if procs is None:
            known = _known_summary(path)
            if known is not None and _skippable(known, flt, after_seq, timed):
                continue  # a stat, not a read: this segment was summarised before
        data = _read(path)
        if data is None:
            continue
        if procs is None:
            if _last_seq(data) <= after_seq:
                continue
            if timed and not _overlaps(_summary(path, data), flt):
                continue  # (only a timed query pays for the time range)
        for line in _lines(data):
            yield from _match_line(line, flt, after_seq, procs)


def _skippable(summary: _Summary, flt: EventFilter, after_seq: int, timed: bool) -> bool:
    """No record of the segment can be answered: all at or before the
    cursor, or all outside the time window."""
    return summary.last_seq <= after_seq or (timed and not _overlaps(summary, flt))


def _match_line(
    line: bytes, flt: EventFilter, after_seq: int, procs: ProcessTracker | None
) -> Iterator[LoggedEvent]:
    seq = _seq_of(line)
    if seq is None:
        return
    if seq <= after_seq or not _may_be_in_time(line, flt):
        if procs is not None and _PROCESS in line:
            logged = _decode(line)
            if logged is not None:
                procs.observe(logged.event)
        return
    logged = _decode(line)
    if logged is None:
        return
    if procs is not None:
        procs.observe(logged.event)
    if matches(flt, logged.event, procs):
        yield logged


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None  # pruned since the listing


def _lines(data: bytes) -> Iterator[bytes]:
    """Complete lines (a torn tail, with no newline yet, left out)."""
    pos = 0
    while (newline := data.find(b"\n", pos)) >= 0:
        yield data[pos:newline]
        pos = newline + 1


def _seq_of(line: bytes) -> int | None:
    """The chain seq of a line, from its bytes (``"seq":N,"type"`` near its end)."""
    at = line.rfind(_SEQ)
    if at < 0:
        return None
    start = at + len(_SEQ)
    end = line.find(b",", start)
    digits = line[start:end] if end >= 0 else b""
    return int(digits) if digits.isdigit() else None


def _last_seq(data: bytes) -> int:
    """The seq of the segment's last complete line (2**63 if it has none
    that parses: never skipped for its seq)."""
    end = data.rfind(b"\n")
    if end < 0:
        return -1
    seq = _seq_of(data[data.rfind(b"\n", 0, end) + 1 : end])
    return seq if seq is not None else 2**63


def _time_text(line: bytes) -> bytes | None:
    at = line.rfind(_TIME)
    if at < 0:
        return None
    start = at + len(_TIME)
    end = line.find(b'"', start)
    return line[start:end] if 0 <= end - start <= 64 else None


def _ns(text: bytes) -> int | None:
    return rfc3339_ns(text.decode("ascii", "replace"))


def _fixed(ns: int) -> bytes:
    """``ns`` as the mapper writes ``time``: fixed width, UTC, nine digits,
    so two such texts compare as their times do."""
    seconds, fraction = divmod(ns, 10**9)
    t = time.gmtime(seconds)
    return b"%04d-%02d-%02dT%02d:%02d:%02d.%09dZ" % (
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        fraction,
    )


def _is_fixed(text: bytes) -> bool:
    return len(text) == _FIXED_LEN and text[-1:] == b"Z" and text[19:20] == b"."


def _may_be_in_time(line: bytes, flt: EventFilter) -> bool:
    """Is the line's time inside the window? Texts in the mapper's fixed
    form are compared as bytes (no parsing); any other form is parsed."""
    if flt.since_ns is None and flt.until_ns is None:
        return True
    text = _time_text(line)
    if text is None:
        return False  # no time: no timed filter can match it
    if _is_fixed(text):
        since, until = _bounds(flt)
        return (since is None or text >= since) and (until is None or text < until)
    when = _ns(text)
    if when is None:
        return False
    return (flt.since_ns is None or when >= flt.since_ns) and (
        flt.until_ns is None or when < flt.until_ns
    )


@functools.lru_cache(maxsize=64)
def _bounds(flt: EventFilter) -> tuple[bytes | None, bytes | None]:
    """The window's ends in the fixed form (for byte comparison)."""
    return _bound(flt.since_ns), _bound(flt.until_ns)


#: The fixed form spans years 0001 to 9999; a bound outside is below or
#: above every text in it.
_FIXED_MIN: Final = -62135596800 * 10**9
_FIXED_MAX: Final = 253402300800 * 10**9


def _bound(ns: int | None) -> bytes | None:
    if ns is None:
        return None
    if ns < _FIXED_MIN:
        return b""  # below every text
    if ns >= _FIXED_MAX:
        return b"\xff"  # above every text
    return _fixed(ns)


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (str(path), info.st_size, info.st_mtime_ns)


def _known_summary(path: Path) -> _Summary | None:
    """The summary remembered for the segment as it is now (same size and mtime)."""
    key = _key(path)
    if key is None:
        return None
    with _summaries_lock:
        return _summaries.get(key)


def _summary(path: Path, data: bytes) -> _Summary:
    """The segment's last seq and time range, remembered by (path, size,
    mtime) when ``data`` is the whole file as it stands (a growing segment
    is summarised again on its next read)."""
    key = _key(path)
    if key is not None:
        with _summaries_lock:
            known = _summaries.get(key)
        if known is not None:
            return known
    # Every body's time is followed by its "type" (the body's last key). A
    # nested pair of those names can only widen the range: never a wrong skip.
    texts = _TIMES.findall(data)
    fixed = [t for t in texts if _is_fixed(t)]
    times = [n for n in (_ns(t) for t in texts if not _is_fixed(t)) if n is not None]
    if fixed:
        times += [n for n in (_ns(min(fixed)), _ns(max(fixed))) if n is not None]
    found = _Summary(
        last_seq=_last_seq(data),
        first_ns=min(times) if times else None,
        last_ns=max(times) if times else None,
    )
    if key is not None and key[1] == len(data):
        with _summaries_lock:
            if len(_summaries) >= _CACHE_MAX:
                _summaries.clear()
            _summaries[key] = found
    return found


def _overlaps(span: _Summary, flt: EventFilter) -> bool:
    if span.first_ns is None or span.last_ns is None:
        return False
    if flt.since_ns is not None and span.last_ns < flt.since_ns:
        return False
    return flt.until_ns is None or span.first_ns < flt.until_ns


def _decode(line: bytes) -> LoggedEvent | None:
    try:
        record = msgspec.json.decode(line, type=_Line)
        if not record.type.startswith(TYPE_PREFIX):
            return None
        raw = bytes(record.body)
        event: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return None
    return LoggedEvent(seq=record.seq, event=event, raw=raw)
