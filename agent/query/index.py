"""Answer an :class:`~agent.query.filter.EventFilter` from the SQLite index.

:func:`query_index` is the fast path of ``events``, ``/v1/events`` and
``report``: the rows that match are found in SQLite and every answer is
read back from the log itself, at the row's segment and offset, and
checked (its line's seq and hash are the row's), so an answer is never the
index's word alone. When the index cannot answer (there is none, it is
being rebuilt, it is far behind the log, it is damaged, or a line read
back is not the row's) it returns None and the caller scans the log.

Being a little behind is normal (the follower indexes in batches): a query
first indexes the few records committed since (at most
:data:`CATCH_UP_BYTES`), so an answer holds every record the log had when
it was asked. That needs write access to the index; without it, or with
more to index, the answer is None.

The filter's fields, as SQL (the meaning of each is the filter's docstring;
the row's values are :mod:`agent.query.index_rows`):

- time: ``tblk`` turns the range into a seq range, each row's ``t`` is
  checked too; types, comm, exe, container (a prefix) and paths (a glob:
  its literal prefix is a range of ``paths``, the rest
  :func:`fnmatch.fnmatchcase`'s regex, per distinct path) are looked up
  once among the interned strings; ``tree`` is a recursive walk of
  ``edges``; a CIDR is a range of packed addresses of its family's length.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import re
import sqlite3
from pathlib import Path
from typing import IO, Final

import msgspec

from agent.evidence.layout import segment_files
from agent.evidence.log_reader import LoggedEvent
from agent.evidence.types import TYPE_PREFIX
from agent.query import index_db
from agent.query.filter import EventFilter, RemoteFilter
from agent.query.index_db import BLOCK_SHIFT, IndexStale, transaction
from agent.query.index_rows import hash_key
from agent.query.index_writer import IndexWriter

__all__ = ["CATCH_UP_BYTES", "CATCH_UP_WAIT_S", "query_index"]

CATCH_UP_BYTES: Final = 16 << 20
"""The most unindexed log a query indexes itself before answering; past it
the index is "behind by too much" and the caller scans."""
CATCH_UP_WAIT_S: Final = 1.0
"""How long a query waits for the write lock to catch up; then it scans."""


class _Line(msgspec.Struct):
    """What a read-back needs of a ChainRecord line (the rest is not decoded)."""

    seq: int
    hash: str
    type: str
    body: msgspec.Raw


_LINE: Final = msgspec.json.Decoder(_Line)
_GLOB_SPECIAL: Final = re.compile(r"[*?\[]")


def query_index(
    state_dir: Path, flt: EventFilter, *, after_seq: int | None, limit: int
) -> list[LoggedEvent] | None:
    """The records matching ``flt`` after ``after_seq``, ascending seq, at
    most ``limit``; None when the index cannot answer (scan instead)."""
    try:
        if not _caught_up(state_dir):
            return None
        conn = index_db.connect(state_dir, write=False)
        if conn is None:
            return None
        try:
            return _answer(conn, state_dir, flt, after_seq, max(limit, 0))
        finally:
            conn.close()
    except (sqlite3.Error, IndexStale, OSError):
        return None


def _unindexed(listing: list[tuple[int, Path]], kept: dict[int, index_db.SegProgress]) -> int:
    """Bytes of the log past what the index holds (a torn tail counts too)."""
    total = 0
    for seg, path in listing:
        done = kept.get(seg)
        with contextlib.suppress(FileNotFoundError):
            total += max(0, path.stat().st_size - (done.end if done is not None else 0))
    return total


def _caught_up(state_dir: Path) -> bool:
    """Whether the index now holds the whole log (indexing a short tail here)."""
    conn = index_db.connect(state_dir, write=False)
    if conn is None:
        return False
    try:
        with transaction(conn, write=False):
            info = index_db.meta(conn)
            if info.get("state") != "ready" or info.get("version") != index_db.SCHEMA_VERSION:
                return False
            listing = segment_files(state_dir / "segments")
            _, kept = index_db.check_segments(index_db.progress(conn), listing)
            behind = _unindexed(listing, kept)
    finally:
        conn.close()
    if behind == 0:
        return True
    if behind > CATCH_UP_BYTES:
        return False
    # A follower's batch holds the write lock for a moment; a longer wait
    # means it is starved of CPU, and the caller is better off scanning.
    writer_conn = index_db.connect(state_dir, write=True, busy_s=CATCH_UP_WAIT_S)
    assert writer_conn is not None
    writer = IndexWriter(state_dir, writer_conn)
    try:
        writer.catch_up()
    finally:
        writer.close()
    return True


def _glob_prefix(pattern: str) -> str:
    found = _GLOB_SPECIAL.search(pattern)
    return pattern if found is None else pattern[: found.start()]


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``
    (None: no bound, for an empty prefix or one of U+10FFFFs)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def _prefix_range(column: str, prefix: str, params: list[object]) -> str:
    """SQL limiting ``column`` to strings starting with ``prefix``."""
    params.append(prefix)
    upper = _successor(prefix)
    if upper is None:
        return f"{column} >= ?"
    params.append(upper)
    return f"{column} >= ? AND {column} < ?"


def _network_range(remote: RemoteFilter) -> tuple[bytes, bytes] | None:
    if remote.network is None:
        return None
    net = ipaddress.ip_network(remote.network, strict=False)
    return net.network_address.packed, net.broadcast_address.packed


def _answer(
    conn: sqlite3.Connection, state_dir: Path, flt: EventFilter, after_seq: int | None, limit: int
) -> list[LoggedEvent] | None:
    if limit == 0:
        return []
    ctes: list[str] = []
    where: list[str] = []
    params: list[object] = []
    cte_params: list[object] = []
    with transaction(conn, write=False):
        info = index_db.meta(conn)
        if info.get("state") != "ready":
            return None
        listing = segment_files(state_dir / "segments")
        pruned, kept = index_db.check_segments(index_db.progress(conn), listing)
        paths = dict(listing)
        # Rows of segments pruned since the follower last looked are not answers.
        floor = max(
            (p.last_seq or -1 for p in index_db.progress(conn) if p.seg in pruned), default=-1
        )
        if after_seq is not None:
            floor = max(floor, after_seq)
        lowest_seg = min(kept, default=0)
        where.append("seq > ?")
        params.append(floor)
        if flt.since_ns is not None:
            where.append("seq >= (SELECT coalesce(min(b), 1 << 62) FROM tblk WHERE tmax >= ?) << ?")
            where.append("t >= ?")
            params += [flt.since_ns, BLOCK_SHIFT, flt.since_ns]
        if flt.until_ns is not None:
            where.append("seq < ((SELECT coalesce(max(b), -1) FROM tblk WHERE tmin < ?) + 1) << ?")
            where.append("t < ?")
            params += [flt.until_ns, BLOCK_SHIFT, flt.until_ns]
        if flt.types:
            marks = ",".join("?" * len(flt.types))
            where.append(f"type IN (SELECT id FROM strs WHERE s IN ({marks}))")
            params += sorted(flt.types)
        if flt.pid is not None and flt.tree:
            ctes.append(
                "tree(p) AS (SELECT ? UNION SELECT child FROM edges, tree"
                " WHERE parent = p AND seg >= ?)"
            )
            cte_params += [flt.pid, lowest_seg]
            where.append("pid IN tree")
        elif flt.pid is not None:
            where.append("pid = ?")
            params.append(flt.pid)
        for column, value in (("comm", flt.comm), ("exe", flt.exe)):
            if value is not None:
                where.append(f"{column} = (SELECT id FROM strs WHERE s = ?)")
                params.append(value)
        if flt.container is not None:
            where.append(
                f"ctr IN (SELECT id FROM strs WHERE {_prefix_range('s', flt.container, params)})"
            )
        if flt.path is not None:
            matcher = re.compile(fnmatch.translate(flt.path), re.DOTALL).match
            conn.create_function("th_glob", 1, lambda s: matcher(s) is not None, deterministic=True)
            prefix_params: list[object] = []
            bound = _prefix_range("s", _glob_prefix(flt.path), prefix_params)
            ctes.append(
                f"want(id) AS MATERIALIZED (SELECT id FROM paths WHERE {bound} AND th_glob(s))"
            )
            cte_params += prefix_params
            where.append("(p1 IN want OR p2 IN want)")
        if flt.remote is not None:
            span = _network_range(flt.remote)
            if span is not None:
                where.append("ra BETWEEN ? AND ? AND length(ra) = ?")
                params += [span[0], span[1], len(span[0])]
            if flt.remote.port is not None:
                where.append("rp = ?")
                params.append(flt.remote.port)
        if flt.uid is not None:
            where.append("uid = ?")
            params.append(flt.uid)
        sql = (
            ("WITH RECURSIVE " + ", ".join(ctes) + " " if ctes else "")
            + "SELECT seq, seg, off, len, h FROM rec WHERE "
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?"
        )
        rows = conn.execute(sql, [*cte_params, *params, limit]).fetchall()
    return _read_back(rows, paths)


def _read_back(
    rows: list[tuple[int, int, int, int, int]], paths: dict[int, Path]
) -> list[LoggedEvent] | None:
    """Each row's line from the log, checked; None if one is not the row's."""
    out: list[LoggedEvent] = []
    handles: dict[int, IO[bytes]] = {}
    try:
        for seq, seg, off, length, key in rows:
            handle = handles.get(seg)
            if handle is None:
                path = paths.get(seg)
                if path is None:
                    return None
                handle = handles[seg] = open(path, "rb")  # noqa: SIM115 (closed below)
            handle.seek(off)
            line = handle.read(length)
            try:
                record = _LINE.decode(line)
                raw = bytes(record.body)
                event = msgspec.json.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                return None
            if (
                record.seq != seq
                or hash_key(record.hash) != key
                or not record.type.startswith(TYPE_PREFIX)
                or not isinstance(event, dict)
            ):
                return None
            out.append(LoggedEvent(seq=seq, event=event, raw=raw))
    except FileNotFoundError:
        return None  # pruned while answering: the scan says what is left
    finally:
        for handle in handles.values():
            handle.close()
    return out
