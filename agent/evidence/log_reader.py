"""Read evidence records back from the log on disk, while it is written.

For the local API: ``/v1/events`` (the newest matching records),
``/v1/events/{id}``, and the live tail's resume (everything after the id a
client saw last). Only CloudEvents are returned; the store's own records
(segment headers, checkpoints, pruning and recovery notes) are the
verifier's business.

The daemon appends while these run (in a worker thread), so:

- the newest segment's last line may be half-written: a line without its
  newline is skipped;
- a segment may be pruned between listing and opening it: it is skipped;
- a line that does not decode is skipped (damage is for ``evidence verify``
  to report, not for a reader to guess around).

Searching by id does not decode the log: a record's body is canonical JSON,
so ``"id":"<id>"`` is an exact byte string, found with ``bytes.find`` one
segment at a time, newest first. Memory is one segment at a time.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.evidence.store import segment_files
from agent.evidence.types import TYPE_PREFIX

__all__ = [
    "LoggedEvent",
    "event_pid",
    "events_after",
    "find_event",
    "iter_events",
    "recent_events",
    "type_matches",
]

_VERSION_SUFFIX: Final = re.compile(r"\.v[0-9]+\Z")


class LoggedEvent(msgspec.Struct, frozen=True):
    """One CloudEvent as the log holds it: its chain position and the event."""

    seq: int
    event: dict[str, Any]


class _Line(msgspec.Struct):
    seq: int
    type: str
    body: Any = None


_decoder = msgspec.json.Decoder(_Line)


def type_matches(wanted: str, event_type: str) -> bool:
    """``wanted`` is the full type or its short form: without the prefix and
    the ``.vN`` suffix (``process.exec``), or a leading part of that ending
    at a dot (``file`` matches every file operation; ``proc`` matches nothing)."""
    if wanted == event_type:
        return True
    if not event_type.startswith(TYPE_PREFIX):
        return False
    short = _VERSION_SUFFIX.sub("", event_type.removeprefix(TYPE_PREFIX))
    return short == wanted or short.startswith(wanted + ".")


def event_pid(event: Mapping[str, Any]) -> int | None:
    """``data.pid`` when it is an int."""
    data = event.get("data")
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _segments(state_dir: Path) -> list[Path]:
    return [path for _, path in segment_files(state_dir / "segments")]


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # pruned meanwhile
    cut = data.rfind(b"\n")
    return data[: cut + 1]  # whole lines only


def _decode(line: bytes) -> LoggedEvent | None:
    try:
        record = _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    body = record.body
    if not record.type.startswith(TYPE_PREFIX) or not isinstance(body, dict):
        return None
    if body.get("specversion") is None or not isinstance(body.get("id"), str):
        return None
    return LoggedEvent(seq=record.seq, event=body)


def _events(data: bytes) -> Iterator[LoggedEvent]:
    for line in data.splitlines():
        if (event := _decode(line)) is not None:
            yield event


def iter_events(state_dir: Path) -> Iterator[LoggedEvent]:
    """Every evidence record in the log, oldest first."""
    for path in _segments(state_dir):
        data = _read(path)
        if data is not None:
            yield from _events(data)


def _locate(state_dir: Path, event_id: str) -> tuple[list[Path], int, bytes, int] | None:
    """Where the record ``event_id`` is: (segments, index, data, line start)."""
    needle = b'"id":"' + event_id.encode("ascii") + b'"'
    segments = _segments(state_dir)
    for index in range(len(segments) - 1, -1, -1):
        data = _read(segments[index])
        if data is None:
            continue
        at = data.find(needle)
        while at != -1:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            event = _decode(data[start:end])
            if event is not None and event.event["id"] == event_id:
                return segments, index, data, start
            at = data.find(needle, at + 1)
    return None


def find_event(state_dir: Path, event_id: str) -> LoggedEvent | None:
    """The record with ``event_id``, or None (pruned, or never in this log)."""
    found = _locate(state_dir, event_id)
    if found is None:
        return None
    _, _, data, start = found
    return _decode(data[start : data.find(b"\n", start)])


def events_after(state_dir: Path, event_id: str, *, max_events: int) -> list[LoggedEvent] | None:
    """The first ``max_events`` records after ``event_id``, oldest first;
    None when ``event_id`` is not in the log."""
    found = _locate(state_dir, event_id)
    if found is None:
        return None
    segments, index, data, start = found
    out: list[LoggedEvent] = []
    first = data[data.find(b"\n", start) + 1 :]
    later = (_read(path) for path in segments[index + 1 :])  # one segment at a time
    for chunk in itertools.chain([first], later):
        if chunk is None:
            continue
        for event in _events(chunk):
            if len(out) >= max_events:
                return out
            out.append(event)
    return out


def recent_events(
    state_dir: Path, *, type: str | None, pid: int | None, limit: int
) -> list[LoggedEvent]:
    """The newest ``limit`` records matching ``type`` and ``pid``, oldest first."""
    pid_bytes = None if pid is None else b'"pid":%d' % pid
    out: list[LoggedEvent] = []
    for path in reversed(_segments(state_dir)):
        data = _read(path)
        if data is None:
            continue
        for line in reversed(data.splitlines()):
            if pid_bytes is not None and pid_bytes not in line:
                continue  # cheap: most lines are not this pid's
            event = _decode(line)
            if event is None:
                continue
            if type is not None and not type_matches(type, str(event.event.get("type"))):
                continue
            if pid is not None and event_pid(event.event) != pid:
                continue
            out.append(event)
            if len(out) >= limit:
                return out[::-1]
    return out[::-1]
