"""What the SQLite index keeps of one log line: the pure half of the index.

One function, :func:`row_of_line`, turns a segment line (a canonical
ChainRecord) into an :class:`IndexRow`: the few scalars a query filters on
and where the line is, never the line itself (the answer is read back
from the log). No I/O here, so the rules are testable alone and the
rebuild and the follower share them.

What a row holds, and how it maps :class:`~agent.query.filter.EventFilter`:

- ``time_ns``: CloudEvents ``time`` (RFC 3339, UTC, up to 9 fraction
  digits), ns since the epoch; None when absent or not that shape.
- ``pid``, ``comm``, ``uid``: ``data.pid`` / ``data.comm`` / ``data.uid``.
- ``exe``: the executable this record gives its process, by the rules of
  :class:`agent.query.match.ProcessTracker`: a successful exec's ``exe``
  (else its ``filename``), a ``process.seen``'s ``exe``; None for every
  other record (a query replays these with the forks, in log order).
- ``container``: ``data.container.id``.
- ``paths``: the names :func:`agent.query.match.record_paths` gives
  ``--path``: per slot the absolute path when resolved, else the name as
  passed (``abs_path``/``path``, ``abs_path2``/``path2``, and an exec's
  ``exe``/``filename``); at most two (no record has all three).

Text is kept as the host gave it (:func:`text_key`): a field in escape
form (named in ``data.escaped``: the host's bytes were not UTF-8) is
unescaped first, so the index compares what the scan compares, and such
a text, which SQLite cannot hold as it is, is kept as a marked escape form
no plain text can equal.
- ``remote``: ``data.endpoint`` of an ipv4/ipv6 family, its address as
  packed bytes (4 or 16) so a CIDR is a byte range, and its port.
- ``edges``: ``(parent, child)`` of a fork (``pid`` -> ``child_pid``), for
  ``--tree`` (which follows forks in log order, as
  :class:`agent.query.match.ProcessTracker` does).

Values of the wrong type (attacker-shaped records cannot occur, the mapper
types every field, but the log is read as untrusted bytes) are left out,
not guessed: a row never claims more than the line says.
"""

from __future__ import annotations

import calendar
import ipaddress
from typing import Any, Final, NamedTuple

import msgspec

from agent.evidence.record_types import TYPE_EXEC, TYPE_FORK, TYPE_SEEN
from agent.evidence.types import TYPE_PREFIX
from agent.safetext import escape, unescape

__all__ = [
    "MARK",
    "Chunk",
    "IndexRow",
    "address_bytes",
    "hash_key",
    "id_key",
    "is_plain",
    "key_text",
    "parse_time_ns",
    "row_of_line",
    "rows_of_chunk",
    "text_key",
]

MARK: Final = "\0"
"""The first character of a kept text that is not plain (see :func:`text_key`)."""

_HOURS: dict[str, int] = {}  # "YYYY-MM-DDTHH" -> epoch seconds; a log spans few hours
_HOURS_MAX: Final = 4096


class IndexRow(msgspec.Struct, frozen=True, gc=False):
    """One indexed record: its place in the log and what a filter looks at."""

    seq: int
    hash_key: int
    type: str
    record_id: str
    time_ns: int | None
    pid: int | None
    comm: str | None
    uid: int | None
    exe: str | None
    container: str | None
    paths: tuple[str, ...]
    remote_addr: bytes | None
    remote_port: int | None
    edges: tuple[tuple[int, int], ...]


def hash_key(record_hash: str) -> int | None:
    """The first 60 bits of a record's hex hash: what a row keeps to check
    that the line read back is the line indexed (fits SQLite's INTEGER)."""
    try:
        return int(record_hash[:15], 16) if len(record_hash) >= 15 else None
    except ValueError:
        return None


def id_key(record_id: str) -> int | None:
    """The index's key of a record id: its first 60 bits when it is the
    mapper's 32 lowercase hex digits (a lookup reads the line back and
    compares the whole id), else None (not found by id)."""
    if len(record_id) != 32:
        return None
    try:
        return int(record_id[:15], 16) if record_id.islower() or record_id.isdigit() else None
    except ValueError:
        return None


def parse_time_ns(text: object) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`` as ns since the epoch, else None."""
    if type(text) is not str or len(text) < 20 or text[-1] != "Z" or text[13] != ":":
        return None
    hour = text[:13]
    base = _HOURS.get(hour)
    if base is not None and len(text) == 30 and text[19] == "." and text[16] == ":":
        # The mapper's own form, 9 digits: the common case, checked and cut short.
        mm, ss, ns = text[14:16], text[17:19], text[20:29]
        if mm.isdigit() and ss.isdigit() and ns.isdigit():
            return (base + int(mm) * 60 + int(ss)) * 1_000_000_000 + int(ns)
    try:
        if base is None:
            if len(_HOURS) >= _HOURS_MAX:
                _HOURS.clear()
            if hour[4] != "-" or hour[7] != "-" or hour[10] != "T" or not hour.isascii():
                return None
            base = calendar.timegm(
                (int(hour[:4]), int(hour[5:7]), int(hour[8:10]), int(hour[11:13]), 0, 0)
            )
            _HOURS[hour] = base
        if text[16] != ":" or not text[14:16].isdigit() or not text[17:19].isdigit():
            return None
        seconds = base + int(text[14:16]) * 60 + int(text[17:19])
        fraction = text[19:-1]
        if not fraction:
            return seconds * 1_000_000_000
        digits = fraction[1:]
        if fraction[0] != "." or not 1 <= len(digits) <= 9 or not digits.isdigit():
            return None
        return seconds * 1_000_000_000 + int(digits.ljust(9, "0"))
    except (ValueError, OverflowError):
        return None


def address_bytes(address: str) -> bytes | None:
    """An IP address as the bytes the index sorts on (4 for IPv4, 16 for
    IPv6: a network of one family never holds an address of the other,
    as with :mod:`ipaddress`), or None if ``address`` is not one."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    return parsed.packed


def is_plain(text: str) -> bool:
    """Whether ``text`` is kept as it is: valid Unicode (no lone surrogate,
    which is how a byte that was not UTF-8 comes back) not starting with NUL."""
    if text.startswith(MARK):
        return False
    if text.isascii():  # O(1): CPython knows; the common case
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_key(text: str) -> str:
    """How the index keeps a text: as it is when plain, else NUL + its
    escape form (valid Unicode, and no plain text starts with NUL, so two
    different texts never share a key)."""
    return text if is_plain(text) else MARK + escape(text)


def key_text(key: str) -> str:
    """The text a key was made from (:func:`text_key` reversed)."""
    return unescape(key[1:]) if key.startswith(MARK) else key


def _int(value: object) -> int | None:
    return value if type(value) is int else None  # not a bool, not a subclass


def _text(value: object, name: str, escaped: object) -> str | None:
    """A text member as the index keeps it (:func:`text_key`), else None."""
    if type(value) is not str:
        return None
    if escaped is not None and type(escaped) is list and name in escaped:
        return text_key(unescape(value))
    return text_key(value)  # a JSON text may hold a lone surrogate too


def _slot(resolved: object, passed: object, names: tuple[str, str], escaped: object) -> str | None:
    """The first non-empty of the two, kept as :func:`_text` keeps it."""
    if type(resolved) is str and resolved:
        return _text(resolved, names[0], escaped)
    if type(passed) is str and passed:
        return _text(passed, names[1], escaped)
    return None


_NULL: Final = msgspec.Raw(b"null")
_INET: Final = ("ipv4", "ipv6")


class _Data(msgspec.Struct, gc=False):
    """The members of ``data`` a row takes; every other one is skipped, not
    decoded. ``Any``: a value of an unexpected type is left out below, it
    does not fail the line."""

    pid: Any = None
    comm: Any = None
    uid: Any = None
    exe: Any = None
    ppid: Any = None
    child_pid: Any = None
    ret: Any = None
    filename: Any = None
    escaped: Any = None
    container: Any = None
    path: Any = None
    path2: Any = None
    abs_path: Any = None
    abs_path2: Any = None
    endpoint: Any = None


class _Body(msgspec.Struct, gc=False):
    id: Any = None
    type: Any = None
    time: Any = None
    data: msgspec.Raw = _NULL


class _Record(msgspec.Struct, gc=False):
    seq: Any = None
    type: Any = None
    hash: Any = None
    body: msgspec.Raw = _NULL


class _TypedBody(msgspec.Struct, gc=False):
    id: Any = None
    type: Any = None
    time: Any = None
    data: _Data | None = None


class _TypedRecord(msgspec.Struct, gc=False):
    seq: Any = None
    type: Any = None
    hash: Any = None
    body: _TypedBody | None = None


_TYPED: Final = msgspec.json.Decoder(_TypedRecord)
_RECORD: Final = msgspec.json.Decoder(_Record)
_BODY: Final = msgspec.json.Decoder(_Body)
_DATA: Final = msgspec.json.Decoder(_Data)
_NO_DATA: Final = _Data()


def _decoded(line: bytes) -> tuple[_TypedRecord, _Data] | None:
    """The line's record and its data (empty when it has none or it is not
    an object), or None when the line is not JSON or its body not an object.

    One pass in the common case; a line of another shape (data that is not
    an object) is decoded again in parts, so it still gets its row."""
    try:
        record = _TYPED.decode(line)
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    else:
        if record.body is None:
            return None
        return record, record.body.data or _NO_DATA
    try:
        parts = _RECORD.decode(line)
        body = _BODY.decode(parts.body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    try:
        data = _DATA.decode(body.data)
    except msgspec.DecodeError:
        data = _NO_DATA
    typed = _TypedBody(id=body.id, type=body.type, time=body.time)
    return _TypedRecord(seq=parts.seq, type=parts.type, hash=parts.hash, body=typed), data


def row_of_line(line: bytes) -> IndexRow | None:
    """The row of one segment line, or None: a store record (segment.start,
    checkpoint...), a line that does not decode, or a body that is not a
    CloudEvent with a string id (the log reader skips those too)."""
    decoded = _decoded(line)
    if decoded is None:
        return None
    record, data = decoded
    seq, kind, digest, body = record.seq, record.type, record.hash, record.body
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or not isinstance(kind, str)
        or not kind.startswith(TYPE_PREFIX)
        or not isinstance(digest, str)
        or body is None
        or not isinstance(body.id, str)
    ):
        return None
    key = hash_key(digest)
    if key is None:
        return None
    pid = _int(data.pid)
    event_type = body.type if isinstance(body.type, str) else kind
    container = data.container
    escaped = data.escaped
    exe: str | None = None
    if event_type == TYPE_EXEC:
        if _int(data.ret) == 0:
            exe = _slot(data.exe, data.filename, ("exe", "filename"), escaped)
    elif event_type == TYPE_SEEN:
        exe = _slot(data.exe, None, ("exe", "filename"), escaped)
    found = [
        slot
        for slot in (
            _slot(data.abs_path, data.path, ("abs_path", "path"), escaped),
            _slot(data.abs_path2, data.path2, ("abs_path2", "path2"), escaped),
            _slot(data.exe, data.filename, ("exe", "filename"), escaped),
        )
        if slot is not None
    ]
    paths = tuple(found[:2])
    addr: bytes | None = None
    port: int | None = None
    endpoint = data.endpoint
    if endpoint is not None and type(endpoint) is dict and endpoint.get("family") in _INET:
        address = endpoint.get("address")
        addr = address_bytes(address) if isinstance(address, str) else None
        port = _int(endpoint.get("port"))
    edges: tuple[tuple[int, int], ...] = ()
    if event_type == TYPE_FORK:
        child = _int(data.child_pid)
        if pid is not None and child is not None:
            edges = ((pid, child),)
    return IndexRow(  # positional, in field order: a row per record is the hot path
        seq,
        key,
        event_type,
        body.id,
        parse_time_ns(body.time),
        pid,
        _text(data.comm, "comm", escaped),
        _int(data.uid),
        exe,
        _text(container.get("id"), "id", container.get("escaped"))
        if type(container) is dict
        else None,
        paths,
        addr,
        port,
        edges,
    )


class Chunk(NamedTuple):
    """The rows of a run of whole lines of one segment, ready to insert but
    for the strings (which the writer turns into its interned ids).

    ``rows``: per record ``(seq, off, len, hash_key, time_ns, type, pid,
    comm, uid, exe, container, path1, path2, remote_addr, remote_port,
    id_key)``; ``edges``: ``(seq, parent, child)`` per fork; ``blocks``:
    time block -> (min, max) time; ``start``/``end``: the byte range of the
    segment the lines span; ``last_off`` and ``last_line``: where the last
    line began and the line (for the writer's progress row).
    """

    rows: list[tuple[Any, ...]]
    edges: list[tuple[int, int, int]]
    blocks: dict[int, tuple[int, int]]
    start: int
    end: int
    last_off: int
    last_line: bytes


def rows_of_chunk(data: bytes, start: int, block_shift: int) -> Chunk:
    """The :class:`Chunk` of ``data``, whole lines read at offset ``start``
    (every line ends in ``\\n``)."""
    rows: list[tuple[Any, ...]] = []
    edges: list[tuple[int, int, int]] = []
    blocks: dict[int, tuple[int, int]] = {}
    pos, last_off, line = 0, 0, b""
    end = len(data)
    find = data.index
    while pos < end:
        newline = find(b"\n", pos)
        line = data[pos:newline]
        row = row_of_line(line)
        if row is not None:
            p = row.paths
            rows.append(
                (row.seq, start + pos, newline - pos, row.hash_key, row.time_ns, row.type,
                 row.pid, row.comm, row.uid, row.exe, row.container,
                 p[0] if p else None, p[1] if len(p) > 1 else None,
                 row.remote_addr, row.remote_port, id_key(row.record_id))
            )  # fmt: skip
            for parent, child in row.edges:
                edges.append((row.seq, parent, child))
            t = row.time_ns
            if t is not None:
                block = row.seq >> block_shift
                seen = blocks.get(block)
                if seen is None:
                    blocks[block] = (t, t)
                elif t < seen[0] or t > seen[1]:
                    blocks[block] = (min(seen[0], t), max(seen[1], t))
        last_off = pos
        pos = newline + 1
    return Chunk(rows, edges, blocks, start, start + end, start + last_off, line)
