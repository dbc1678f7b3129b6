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
  checked too; types, comm, container (a prefix) and paths (a glob: its
  literal prefix is a range of ``paths``, the rest
  :func:`fnmatch.fnmatchcase`'s regex, per distinct path) are looked up
  once among the interned strings; a CIDR is a range of packed addresses
  of its family's length. ``tree`` replays the retained forks (``edges``)
  in seq order, as the scan's tracker does, into each member's seq spans;
  ``exe`` replays the retained execs, ``process.seen`` records and forks
  the same way (:func:`_exe_spans`). Text is compared as the host gave it
  (:func:`agent.query.index_rows.text_key`): a glob or a prefix also
  looks at every kept text that is not plain, by its original; a filter
  whose own text is not plain is left to the scan.
  What a lookup finds is passed to the row query as a JSON array
  (``json_each``), so it is computed once per query, not per window.

The rows are read in seq windows that grow (:data:`_WINDOW`, x4 each): a
selective filter answered through an index sorts the matches of one
window for its page, not those of the whole log, and a rare one still
takes only a few windows.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Final, TypeVar

import msgspec

from agent.evidence.layout import segment_files
from agent.evidence.log_reader import LoggedEvent
from agent.evidence.types import TYPE_PREFIX
from agent.query import index_db
from agent.query.filter import EventFilter, RemoteFilter
from agent.query.index_db import BLOCK_SHIFT, IndexStale, transaction
from agent.query.index_rows import hash_key, id_key, is_plain, key_text
from agent.query.index_writer import IndexWriter
from agent.query.match import MAX_TRACKED

__all__ = ["CATCH_UP_BYTES", "CATCH_UP_WAIT_S", "find_indexed", "query_index"]

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


_T = TypeVar("_T")
_ENDLESS: Final = 1 << 62  # the end of an open span (a seq no log reaches)


def query_index(
    state_dir: Path, flt: EventFilter, *, after_seq: int | None, limit: int
) -> list[LoggedEvent] | None:
    """The records matching ``flt`` after ``after_seq``, ascending seq, at
    most ``limit``; None when the index cannot answer (scan instead).

    ``tree`` and ``exe`` follow the log's order (a fork makes a member of
    the tree and inherits its parent's executable,
    agent.query.match.ProcessTracker) through the forks and the rows that
    set an executable (:func:`_tree_spans`, :func:`_exe_spans`). A filter
    text that is not plain (a byte that was not UTF-8 comes back as a lone
    surrogate, which SQLite cannot bind) is the scan's."""
    texts = (flt.comm, flt.exe, flt.path, flt.container)
    if not all(text is None or is_plain(text) for text in texts):
        return None
    return _with_index(
        state_dir, lambda conn: _answer(conn, state_dir, flt, after_seq, max(limit, 0))
    )


def _with_index(state_dir: Path, ask: Callable[[sqlite3.Connection], _T | None]) -> _T | None:
    """``ask`` on a reading connection to an index that is caught up; None
    when there is none, or it is stale, or asking it fails (then scan)."""
    try:
        if not _caught_up(state_dir):
            return None
        conn = index_db.connect(state_dir, write=False)
        if conn is None:
            return None
        try:
            return ask(conn)
        finally:
            conn.close()
    except (sqlite3.Error, IndexStale, OSError):
        return None


def find_indexed(state_dir: Path, event_id: str) -> list[LoggedEvent] | None:
    """The record with ``id == event_id`` as a list of one (the newest, should
    an id repeat), ``[]`` if the log has none, None when the index cannot
    answer (then :func:`agent.evidence.log_reader.find_event` searches)."""
    key = id_key(event_id)
    if key is None:
        return None  # not the mapper's form of id: the index does not hold it

    def rows_of(
        conn: sqlite3.Connection,
    ) -> tuple[list[tuple[int, int, int, int, int]], dict[int, Path]] | None:
        with transaction(conn, write=False):
            if index_db.meta(conn).get("state") != "ready":
                return None
            listing = segment_files(state_dir / "segments")
            _, kept = index_db.check_segments(index_db.progress(conn), listing)
            rows = conn.execute(
                "SELECT seq, seg, off, len, h FROM rec WHERE rid = ? AND seg >= ?"
                " ORDER BY seq DESC",
                (key, min(kept, default=0)),
            ).fetchall()
        return rows, dict(listing)

    asked = _with_index(state_dir, rows_of)
    if asked is None:
        return None
    rows, paths = asked
    found = _read_back(rows, paths)
    if found is None:
        return None
    return [e for e in found if e.event.get("id") == event_id][:1]


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


#: SQL picking the kept texts that are not plain (they start with NUL).
_MARKED: Final = "(s >= char(0) AND s < char(1))"  # sqlite3 refuses a NUL in SQL text


def _ids_of(ids: Iterable[int]) -> str:
    """Ids as the JSON array ``json_each`` reads."""
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _ids(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> str:
    """The ids a lookup finds, as the JSON array ``json_each`` reads."""
    return _ids_of(row[0] for row in conn.execute(sql, params))


def _string_id(conn: sqlite3.Connection, text: str) -> int | None:
    row = conn.execute("SELECT id FROM strs WHERE s = ?", (text,)).fetchone()
    return None if row is None else int(row[0])


def _conditions(
    conn: sqlite3.Connection, flt: EventFilter
) -> tuple[list[str], list[object]] | None:
    """The WHERE terms and their parameters of everything but the seq range;
    None when nothing can match (a string no record has)."""
    where: list[str] = []
    params: list[object] = []
    if flt.since_ns is not None:
        where.append("t >= ?")
        params.append(flt.since_ns)
    if flt.until_ns is not None:
        where.append("t < ?")
        params.append(flt.until_ns)
    if flt.types:
        marks = ",".join("?" * len(flt.types))
        found = _ids(conn, f"SELECT id FROM strs WHERE s IN ({marks})", sorted(flt.types))
        if found == "[]":
            return None
        where.append("type IN (SELECT value FROM json_each(?))")
        params.append(found)
    if flt.pid is not None and not flt.tree:
        where.append("pid = ?")
        params.append(flt.pid)
    if flt.comm is not None:
        found_id = _string_id(conn, flt.comm)
        if found_id is None:
            return None
        where.append("comm = ?")
        params.append(found_id)
    if flt.container is not None:
        prefix = flt.container
        bound: list[object] = []
        sql = f"SELECT id, s FROM strs WHERE {_prefix_range('s', prefix, bound)} OR {_MARKED}"
        found = _ids_of(
            row[0] for row in conn.execute(sql, bound) if key_text(row[1]).startswith(prefix)
        )
        if found == "[]":
            return None
        where.append("ctr IN (SELECT value FROM json_each(?))")
        params.append(found)
    if flt.path is not None:
        matcher = re.compile(fnmatch.translate(flt.path), re.DOTALL).match
        bound = []
        sql = (
            f"SELECT id, s FROM paths WHERE {_prefix_range('s', _glob_prefix(flt.path), bound)}"
            f" OR {_MARKED}"
        )
        wanted = [str(row[0]) for row in conn.execute(sql, bound) if matcher(key_text(row[1]))]
        if not wanted:
            return None
        where.append(
            "(p1 IN (SELECT value FROM json_each(?)) OR p2 IN (SELECT value FROM json_each(?)))"
        )
        params += ["[" + ",".join(wanted) + "]"] * 2
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
    return where, params


#: The first seq window a query looks in, and how it grows: a selective
#: filter sorts only its window's matches, not the whole log's, and a
#: rare one still needs only a few windows.
_WINDOW: Final = 1 << 16
_GROWTH: Final = 4


def _seq_range(conn: sqlite3.Connection, flt: EventFilter, low: int) -> tuple[int, int] | None:
    """The seqs (exclusive bounds) that may hold the filter's time range."""
    top = conn.execute("SELECT max(seq) FROM rec").fetchone()[0]
    if top is None:
        return None
    high = int(top) + 1
    if flt.since_ns is not None:
        first = conn.execute("SELECT min(b) FROM tblk WHERE tmax >= ?", (flt.since_ns,)).fetchone()
        if first[0] is None:
            return None
        low = max(low, (int(first[0]) << BLOCK_SHIFT) - 1)
    if flt.until_ns is not None:
        last = conn.execute("SELECT max(b) FROM tblk WHERE tmin < ?", (flt.until_ns,)).fetchone()
        if last[0] is None:
            return None
        high = min(high, (int(last[0]) + 1) << BLOCK_SHIFT)
    return (low, high) if low + 1 < high else None


def _answer(
    conn: sqlite3.Connection, state_dir: Path, flt: EventFilter, after_seq: int | None, limit: int
) -> list[LoggedEvent] | None:
    if limit == 0:
        return []
    with transaction(conn, write=False):
        info = index_db.meta(conn)
        if info.get("state") != "ready":
            return None
        listing = segment_files(state_dir / "segments")
        done = index_db.progress(conn)
        pruned, _ = index_db.check_segments(done, listing)
        paths = dict(listing)
        # Rows of segments pruned since the follower last looked are not answers.
        low = max((p.last_seq or -1 for p in done if p.seg in pruned), default=-1)
        kept_from = low  # the tree replays forks from here, whatever the cursor
        if after_seq is not None:
            low = max(low, after_seq)
        span = _seq_range(conn, flt, low)
        terms = _conditions(conn, flt)
        if span is None or terms is None:
            return []
        where, params = terms
        kinds: list[dict[int, list[tuple[int, int]]]] = []
        if flt.pid is not None and flt.tree:
            kinds.append(_tree_spans(conn, flt.pid, kept_from))
        if flt.exe is not None:
            exe_id = _string_id(conn, flt.exe)
            if exe_id is None:
                return []
            kinds.append(_exe_spans(conn, exe_id, kept_from))
        spans: dict[int, list[tuple[int, int]]] | None = None
        if kinds:
            members = set(kinds[0]).intersection(*kinds[1:])
            spans = {pid: kinds[0][pid] for pid in members}
            where.append("pid IN (SELECT value FROM json_each(?))")
            params.append(msgspec.json.encode(sorted(members)).decode())
        sql = (
            "SELECT seq, seg, off, len, h, pid FROM rec WHERE seq > ? AND seq < ?"
            + "".join(" AND " + term for term in where)
            + " ORDER BY seq LIMIT ?"
        )
        low, high = span
        rows: list[tuple[int, int, int, int, int]] = []
        window = _WINDOW
        while len(rows) < limit and low + 1 < high:
            top = min(high, low + window + 1)
            want = limit - len(rows)
            got = conn.execute(sql, [low, top, *params, want]).fetchall()
            rows += [
                (seq, seg, off, length, key)
                for seq, seg, off, length, key, pid in got
                if spans is None or all(_member(k.get(pid, ()), seq) for k in kinds)
            ]
            if len(got) == want:
                low = got[-1][0]  # the window may hold more: on from the last one read
            else:
                low, window = top - 1, window * _GROWTH
    return _read_back(rows, paths)


def _tree_spans(
    conn: sqlite3.Connection, root: int, after: int
) -> dict[int, list[tuple[int, int]]]:
    """pid -> the seq spans ``[from, to)`` in which it was in ``root``'s tree.

    The retained forks (seq > ``after``) are replayed in log order with the
    rules of :class:`agent.query.match.ProcessTracker`: a fork by a member
    makes the child one; a fork by anyone else hands that pid to another
    process (reused), which ends its span; the root is a member throughout.
    Only forks of pids reachable from the root at all (a closure over the
    forks, ignoring order) can change membership, so only those are read."""
    reachable = conn.execute(
        "WITH RECURSIVE tree(p) AS (SELECT ? UNION SELECT child FROM edges, tree"
        " WHERE parent = p AND seq > ?) SELECT json_group_array(p) FROM tree",
        (root, after),
    ).fetchone()[0]
    forks = conn.execute(
        "SELECT seq, parent, child FROM edges WHERE seq > ?"
        " AND child IN (SELECT value FROM json_each(?)) ORDER BY seq",
        (after, reachable),
    ).fetchall()
    spans: dict[int, list[tuple[int, int]]] = {root: [(-1, _ENDLESS)]}
    since: dict[int, int] = {}
    for seq, parent, child in forks:
        if child == root:
            continue
        if parent == root or parent in since:
            if child not in since:
                since[child] = seq
        elif child in since:
            spans.setdefault(child, []).append((since.pop(child), seq))
    for pid, start in since.items():
        spans.setdefault(pid, []).append((start, _ENDLESS))
    return spans


def _exe_spans(
    conn: sqlite3.Connection, exe_id: int, after: int
) -> dict[int, list[tuple[int, int]]]:
    """pid -> the seq spans ``[from, to)`` in which its executable was ``exe_id``.

    The retained rows that set an executable (``rec.exe``: a successful
    exec, a ``process.seen``) and the forks are replayed in seq order with
    the rules of :class:`agent.query.match.ProcessTracker`, its bound on
    remembered processes included (the oldest forgotten first): a fork
    gives the child its parent's executable, or none; a row sets its pid's.
    Ids stand for the strings (one interned id per text)."""
    events = conn.execute(
        "SELECT seq, pid, exe, NULL FROM rec WHERE exe IS NOT NULL AND seq > ?"
        " UNION ALL SELECT seq, parent, NULL, child FROM edges WHERE seq > ? ORDER BY 1",
        (after, after),
    ).fetchall()
    current: dict[int, int] = {}
    since: dict[int, int] = {}  # pid -> where its current span of exe_id began
    spans: dict[int, list[tuple[int, int]]] = {}

    def change(pid: int, exe: int | None, seq: int) -> None:
        before = current.pop(pid, None)
        if exe is not None:
            current[pid] = exe  # newest last, as the tracker keeps them
            if len(current) > MAX_TRACKED:
                oldest = next(iter(current))
                change(oldest, None, seq)
        if before == exe_id and exe != exe_id:
            spans.setdefault(pid, []).append((since.pop(pid), seq))
        elif before != exe_id and exe == exe_id:
            since[pid] = seq

    for seq, pid, exe, child in events:
        if child is None:
            change(pid, exe, seq)
        else:
            change(child, current.get(pid), seq)
    for pid, start in since.items():
        spans.setdefault(pid, []).append((start, _ENDLESS))
    return spans


def _member(spans: Sequence[tuple[int, int]], seq: int) -> bool:
    return any(start <= seq < end for start, end in spans)


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
