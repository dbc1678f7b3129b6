"""Read CloudEvents back from the evidence log on disk, for the local HTTP API.

Each segment line is a canonical :class:`~agent.evidence.chain.ChainRecord`;
those whose ``type`` starts with :data:`~agent.evidence.types.TYPE_PREFIX`
carry a CloudEvent as ``body``. The store's own records are skipped.

This runs in a worker thread beside the writer, without the store's lock,
and tolerates rather than reports:

- the newest segment's last line may be half written (no ``\\n`` yet): skipped;
- a segment may be pruned between listing and opening: skipped;
- a line that does not decode: skipped. Damage is the verifier's to report
  (hashes and links are not checked here).

Each call lists the segments once and holds one segment in memory at a time
(64 MiB by default), whatever the log's size. Forward reads return a
consistent prefix: a segment created after the listing is not read, since
the listed newest one may have grown after it was read and before rotating,
and reading on would skip those records without a sign.

Lines are canonical JSON, so byte searches for ``"id":"<id>"`` or
``"pid":<n>`` never miss a record that has them; a hit may be a nested field
of that name, so every hit is decoded and checked.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.evidence.canonical import CanonicalError, canonical
from agent.evidence.layout import segment_files
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

_VERSION: Final = re.compile(r"\.v[0-9]+\Z")


class LoggedEvent(msgspec.Struct, frozen=True):
    """One CloudEvent in the log: its line's chain ``seq``, the ``event`` as
    builtins, and ``raw``, its canonical JSON bytes exactly as logged (and
    hashed), to serve without encoding again."""

    seq: int
    event: dict[str, Any]
    raw: bytes


class _Line(msgspec.Struct):  # what the reader needs of a ChainRecord
    seq: int
    type: str
    body: msgspec.Raw


def type_matches(wanted: str, event_type: str) -> bool:
    """True if ``event_type`` is what ``wanted`` asks for.

    ``wanted`` is a full type (``dev.tracehound.process.exec.v1``), or a short
    form without the prefix, with or without the version: ``process.exec``
    and ``process.exec.v1`` match that type, and so does a shorter name that
    ends at a dot boundary (``process`` matches every ``process.*``, but
    ``proc`` matches nothing). An empty ``wanted`` matches nothing.
    """
    if wanted == event_type:
        return True
    if not wanted or not event_type.startswith(TYPE_PREFIX):
        return False
    versioned = event_type[len(TYPE_PREFIX) :]
    if wanted == versioned:
        return True
    name = _VERSION.sub("", versioned)
    return name == wanted or name.startswith(wanted + ".")


def event_pid(event: Mapping[str, Any]) -> int | None:
    """``data.pid`` of a CloudEvent if it is an int (not a bool); else None."""
    data = event.get("data")
    if not isinstance(data, Mapping):
        return None
    pid = data.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def iter_events(state_dir: Path) -> Iterator[LoggedEvent]:
    """Every CloudEvent in the log, oldest first, one segment in memory at a time."""
    yield from _from_paths(path for _, path in segment_files(state_dir / "segments"))


def find_event(state_dir: Path, event_id: str) -> LoggedEvent | None:
    """The event with ``id == event_id``, or None (pruned, never written, or torn).

    Searches the newest segment first and, within one, from its end: the
    newest record with that id wins should one ever be repeated.
    """
    found = _locate(state_dir, event_id)
    return found[0] if found is not None else None


def events_after(state_dir: Path, event_id: str, *, max_events: int) -> list[LoggedEvent] | None:
    """The events after the one with ``event_id``, oldest first; at most ``max_events``.

    None if that id is not in the log (pruned or never written): the caller
    cannot resume from it and must say so (or start over). An empty list means
    the id is the newest event. ``max_events <= 0`` returns ``[]`` once the id
    is found, so it still tells a known id from an unknown one.
    """
    found = _locate(state_dir, event_id)
    if found is None:
        return None
    _, data, end, later = found  # the same listing: see the module's docstring
    following = itertools.chain(_events_from(data, end), _from_paths(later))
    return list(itertools.islice(following, max(max_events, 0)))


def recent_events(
    state_dir: Path, *, type: str | None, pid: int | None, limit: int
) -> list[LoggedEvent]:
    """The newest ``limit`` events matching ``type`` (see :func:`type_matches`) and
    ``pid`` (``data.pid``), returned oldest first; None means no filter.

    Walks segments newest first and lines backwards, stopping at ``limit``
    matches, so a small page reads little. A filter that matches rarely still
    reads the whole log; bytes pre-checks keep most lines from being decoded.
    """
    type_needle = _type_needle(type) if type is not None else b""  # b"" is in every line
    pid_needles = (b'"pid":%d,' % pid, b'"pid":%d}' % pid) if pid is not None else (b"",)
    if limit <= 0 or type_needle is None:
        return []
    out: list[LoggedEvent] = []
    for _, path in reversed(segment_files(state_dir / "segments")):
        data = _read(path)
        if data is None:
            continue
        for start, end in _spans_reversed(data):
            line = data[start:end]
            if type_needle not in line or not any(n in line for n in pid_needles):
                continue
            logged = _decode(line)
            if logged is None:
                continue
            if type is not None and not type_matches(type, str(logged.event.get("type"))):
                continue
            if pid is not None and event_pid(logged.event) != pid:
                continue
            out.append(logged)
            if len(out) >= limit:
                return out[::-1]
    return out[::-1]


# --- helpers -------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    """The segment's bytes, or None if it was pruned since it was listed."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _from_paths(paths: Iterable[Path]) -> Iterator[LoggedEvent]:
    """The events of each segment in turn, read lazily, pruned ones skipped."""
    for path in paths:
        data = _read(path)
        if data is not None:
            yield from _events_from(data, 0)


def _decode(line: bytes) -> LoggedEvent | None:
    """The line's CloudEvent, or None for a store record or an undecodable line."""
    try:
        record = msgspec.json.decode(line, type=_Line)
        if not record.type.startswith(TYPE_PREFIX):
            return None
        raw = bytes(record.body)  # a copy: a Raw would pin the whole segment
        event = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return None  # not a CloudEvent; callers page on event["id"]
    return LoggedEvent(seq=record.seq, event=event, raw=raw)


def _events_from(data: bytes, start: int) -> Iterator[LoggedEvent]:
    """Events of the complete lines of ``data`` from offset ``start``; a torn tail is left out."""
    pos = start
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            return
        logged = _decode(data[pos:newline])
        if logged is not None:
            yield logged
        pos = newline + 1


def _spans_reversed(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each complete line (``\\n`` excluded), last first."""
    end = data.rfind(b"\n")  # anything after the last newline is torn
    while end >= 0:
        start = data.rfind(b"\n", 0, end) + 1
        yield start, end
        end = start - 1


def _type_needle(wanted: str) -> bytes | None:
    """Bytes every line of a type matching ``wanted`` contains; None if no type can.

    A full type must be there whole; a short form, versioned or not, is the
    start of the full type's text (so its JSON string is left unclosed).
    """
    try:
        if wanted.startswith(TYPE_PREFIX):
            return b'"type":' + canonical(wanted)
        return b'"type":' + canonical(TYPE_PREFIX + wanted)[:-1]
    except CanonicalError:
        return None  # a lone surrogate: no type has one


def _locate(state_dir: Path, event_id: str) -> tuple[LoggedEvent, bytes, int, list[Path]] | None:
    """The event with ``event_id``, its segment's bytes, the offset just past its
    line, and the segments listed after it; newest segment first, searched backwards."""
    try:
        needle = b'"id":' + canonical(event_id)
    except CanonicalError:
        return None  # no canonical form, so no record can carry it
    paths = [path for _, path in segment_files(state_dir / "segments")]
    for position in range(len(paths) - 1, -1, -1):
        data = _read(paths[position])
        if data is None:
            continue
        pos = len(data)
        while (hit := data.rfind(needle, 0, pos)) >= 0:
            start = data.rfind(b"\n", 0, hit) + 1
            end = data.find(b"\n", hit)
            if end >= 0:
                logged = _decode(data[start:end])
                if logged is not None and logged.event.get("id") == event_id:
                    return logged, data, end + 1, paths[position + 1 :]
            pos = start  # a nested "id", another record type, or a torn tail
    return None
