"""The SQLite index beside the evidence log: its file, schema, and checks.

The index is ``<state_dir>/index.sqlite`` (WAL mode, so readers never wait
for the writer). It is never the source of truth: it is a cache of where
each record is and what a filter looks at, and anything wrong with it
(missing, another schema, garbage bytes, segments that are not the ones it
indexed) makes it rebuilt from the log, never trusted.

Schema (no JSON, no text of a record but interned strings):

- ``rec``: one row per CloudEvent: ``seq`` (the rowid), ``seg``/``off``/
  ``len`` (where its line is), ``h`` (60 bits of its hash, to check the
  line read back), ``t`` (time, ns), ``type``/``comm``/``exe``/``ctr``
  (ids into ``strs``), ``pid``, ``uid``, ``p1``/``p2`` (ids into ``paths``),
  ``ra``/``rp`` (remote address as 4 or 16 bytes, port), ``rid`` (60 bits
  of the record id: :func:`~agent.query.index_rows.id_key`).
- ``edges``: ``(seq, parent, child, seg)`` of each fork record: the trees.
- ``tblk``: the min and max time of each block of 1024 seqs: a time range
  becomes a seq range without an index on time (times follow seq closely
  but not exactly, so rows are checked too).
- ``segs``: per segment, how far it is indexed (``end``), the hash keys of
  its first line and of the last line indexed (where that line starts, its
  seq: a pruned segment's rows are a seq range):
  what tells a log rewritten or pruned under the index, or another log.
- ``meta``: ``version``, ``state`` (``building`` while a rebuild runs:
  queries then say "cannot answer"), ``generation`` (bumped by every
  rebuild, so a writer's caches of string ids are dropped), ``last_seq``
  (the last line indexed), ``rows`` (kept as rows come and go: a count of
  ``rec`` would read it all).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from agent.evidence.layout import segment_files
from agent.query.index_rows import hash_key
from agent.state_dir import INDEX_FILES, INDEX_NAME

__all__ = [
    "INDEX_NAME",
    "SECONDARY_INDEXES",
    "IndexStale",
    "IndexStatus",
    "SegProgress",
    "check_segments",
    "connect",
    "create_schema",
    "index_path",
    "index_status",
    "key_of_line",
    "remove_index",
    "seq_of_line",
]

SCHEMA_VERSION: Final = 4
BLOCK_SHIFT: Final = 10
"""``tblk`` blocks hold ``1 << BLOCK_SHIFT`` seqs."""
_FIRST_LINE_MAX: Final = 1 << 20  # a segment.start line is ~200 bytes
_TAIL: Final = 1 << 20  # a record's line is far shorter

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strs(id INTEGER PRIMARY KEY, s TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS paths(id INTEGER PRIMARY KEY, s TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS rec(
    seq INTEGER PRIMARY KEY, seg INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,
    h INTEGER NOT NULL, t INTEGER, type INTEGER NOT NULL, pid INTEGER, comm INTEGER,
    uid INTEGER, exe INTEGER, ctr INTEGER, p1 INTEGER, p2 INTEGER, ra BLOB, rp INTEGER, rid INTEGER
);
CREATE TABLE IF NOT EXISTS edges(
    seq INTEGER PRIMARY KEY, parent INTEGER NOT NULL, child INTEGER NOT NULL,
    seg INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tblk(b INTEGER PRIMARY KEY, tmin INTEGER, tmax INTEGER);
CREATE TABLE IF NOT EXISTS segs(
    seg INTEGER PRIMARY KEY, first_key INTEGER, end INTEGER NOT NULL,
    last_off INTEGER, last_key INTEGER, last_seq INTEGER
);
"""

SECONDARY_INDEXES: Final = (
    ("rec_type", "rec(type)"),
    ("rec_pid", "rec(pid)"),
    ("rec_comm", "rec(comm)"),
    ("rec_uid", "rec(uid)"),
    ("rec_exe", "rec(exe) WHERE exe IS NOT NULL"),
    ("rec_ctr", "rec(ctr) WHERE ctr IS NOT NULL"),
    ("rec_p1", "rec(p1) WHERE p1 IS NOT NULL"),
    ("rec_p2", "rec(p2) WHERE p2 IS NOT NULL"),
    ("rec_ra", "rec(ra) WHERE ra IS NOT NULL"),
    ("rec_rp", "rec(rp) WHERE rp IS NOT NULL"),
    ("rec_rid", "rec(rid)"),
    ("edges_seg", "edges(seg)"),
    ("edges_parent", "edges(parent)"),
    ("edges_child", "edges(child)"),
)
"""Dropped for a rebuild and made again at its end (a sort beats row-by-row)."""


class IndexStale(Exception):
    """The index does not describe this log (another log's, or the log was
    rewritten under it): it must be rebuilt."""


class SegProgress(NamedTuple):
    """How far one segment is indexed (a ``segs`` row)."""

    seg: int
    first_key: int | None
    end: int
    last_off: int | None
    last_key: int | None
    last_seq: int | None


def index_path(state_dir: Path) -> Path:
    """Where the index of the log in ``state_dir`` lives."""
    return state_dir / INDEX_NAME


def remove_index(state_dir: Path) -> None:
    """Delete the index and its WAL files (a corrupt one is not repaired)."""
    for name in INDEX_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_dir / name)


def _create_file(state_dir: Path) -> None:
    """Make the index file with the segments' mode and group, so whoever may
    read the log may read its index, and nobody else (SQLite gives its WAL
    files the database file's mode)."""
    path = index_path(state_dir)
    like = state_dir / "segments"
    mode, gid = 0o600, -1
    with contextlib.suppress(OSError):
        for _, seg in segment_files(like)[:1]:
            st = seg.stat()
            mode, gid = st.st_mode & 0o640, st.st_gid
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if gid >= 0:
            with contextlib.suppress(OSError):
                os.fchown(fd, -1, gid)
        os.fchmod(fd, mode | 0o600)
    finally:
        os.close(fd)


def connect(state_dir: Path, *, write: bool, busy_s: float = 5.0) -> sqlite3.Connection | None:
    """A connection to the index, or None if there is none to read.

    ``busy_s``: how long a write waits for another writer's batch. With
    ``write``, a missing index file is created (schema not yet). The
    connection is in autocommit mode: callers open their transactions
    (``BEGIN IMMEDIATE`` to write) themselves. Raises
    :class:`sqlite3.DatabaseError` for a file that is not a database.
    """
    path = index_path(state_dir)
    if not path.exists():
        if not write:
            return None
        with contextlib.suppress(FileExistsError):
            _create_file(state_dir)
    uri = f"file:{path}?mode={'rw' if write else 'ro'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_s)
    try:
        conn.execute("PRAGMA journal_mode=WAL" if write else "PRAGMA query_only=1").fetchall()
        conn.execute("PRAGMA synchronous=OFF")  # a crash loses an index, never evidence
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MiB
        conn.execute("PRAGMA mmap_size=268435456")
    except BaseException:
        conn.close()
        raise
    return conn


TABLES: Final = ("meta", "strs", "paths", "rec", "edges", "tblk", "segs")


def create_schema(conn: sqlite3.Connection, *, indexes: bool = True) -> None:
    """The tables, the indexes (unless not ``indexes``) and the meta rows,
    if not there yet (in the caller's transaction)."""
    for statement in _TABLES.split(";"):  # not executescript: it would COMMIT first
        if statement.strip():
            conn.execute(statement)
    if indexes:
        create_indexes(conn)
    conn.execute("INSERT OR IGNORE INTO meta VALUES('version', ?)", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO meta VALUES('state', 'ready')")
    conn.execute("INSERT OR IGNORE INTO meta VALUES('generation', 0)")
    conn.execute("INSERT OR IGNORE INTO meta VALUES('last_seq', -1)")
    conn.execute("INSERT OR IGNORE INTO meta VALUES('rows', 0)")


def create_indexes(conn: sqlite3.Connection) -> None:
    """The secondary indexes, if not there."""
    for name, what in SECONDARY_INDEXES:
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {what}")


def meta(conn: sqlite3.Connection) -> dict[str, object]:
    """The ``meta`` rows; {} if there is no such table (a new file)."""
    try:
        return dict(conn.execute("SELECT k, v FROM meta").fetchall())
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return {}
        raise


def progress(conn: sqlite3.Connection) -> list[SegProgress]:
    """Every ``segs`` row, oldest segment first."""
    return [
        SegProgress(*row)
        for row in conn.execute(
            "SELECT seg, first_key, end, last_off, last_key, last_seq FROM segs ORDER BY seg"
        )
    ]


def line_key(path: Path, offset: int, length: int) -> int | None:
    """The hash key of the line at ``offset`` (``length`` bytes, ``\\n``
    excluded) of a segment, or None if it is not there or not a record."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length + 1)
    except OSError:
        return None
    if len(data) != length + 1 or data[-1:] != b"\n":
        return None
    return key_of_line(data[:-1])


def first_key(path: Path) -> int | None:
    """The hash key of a segment's first line (None: not complete yet)."""
    try:
        with open(path, "rb") as handle:
            line = handle.readline(_FIRST_LINE_MAX)
    except OSError:
        return None
    return key_of_line(line[:-1]) if line.endswith(b"\n") else None


class IndexStatus(NamedTuple):
    """The index as metrics and ``stats`` show it: rows held, and records
    the log has that it does not yet (including the store's own)."""

    rows: int
    lag_records: int


def index_status(state_dir: Path) -> IndexStatus | None:
    """Rows and lag of ``state_dir``'s index; None if there is none to read."""
    try:
        conn = connect(state_dir, write=False)
        if conn is None:
            return None
        try:
            info = meta(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    rows, indexed = info.get("rows"), info.get("last_seq")
    if not isinstance(rows, int) or not isinstance(indexed, int):
        return None
    head = _head_seq(state_dir)
    return IndexStatus(rows=rows, lag_records=max(0, head - indexed) if head is not None else 0)


def _head_seq(state_dir: Path) -> int | None:
    """The seq of the log's last complete line (its newest segment's tail)."""
    listing = segment_files(state_dir / "segments")
    if not listing:
        return None
    try:
        with open(listing[-1][1], "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL))
            tail = handle.read(_TAIL)
    except OSError:
        return None
    end = tail.rfind(b"\n")
    if end < 0:
        return None
    return seq_of_line(tail[tail.rfind(b"\n", 0, end) + 1 : end])


def seq_of_line(line: bytes) -> int | None:
    """The chain seq of a line without decoding it: the last ``"seq":`` is
    the top-level member (canonical order puts it after body, hash, prev;
    the type after it is a JSON string, which cannot hold ``"``)."""
    at = line.rfind(b'"seq":')
    if at < 0:
        return None
    end = line.find(b",", at)
    digits = line[at + 6 : end if end >= 0 else len(line)]
    return int(digits) if digits.isdigit() else None


def key_of_line(line: bytes) -> int | None:
    # The hash is a fixed-width field of a canonical line: '"hash":"<64 hex>"'.
    at = line.find(b'"hash":"')
    if at < 0:
        return None
    try:
        return hash_key(line[at + 8 : at + 8 + 64].decode("ascii"))
    except UnicodeDecodeError:
        return None


def check_segments(
    done: list[SegProgress], listing: list[tuple[int, Path]]
) -> tuple[list[int], dict[int, SegProgress]]:
    """Compare the index's progress with the segments on disk.

    Returns the segments the index holds that retention pruned (older than
    every segment left: their rows go) and the progress of those still
    there, by index. Raises :class:`IndexStale` when the index is not of
    this log: a segment it indexed is gone but newer ones are not, is now
    shorter than what was indexed, or starts or ends (where indexing
    stopped) with another record than the one indexed.
    """
    present = dict(listing)
    oldest = listing[0][0] if listing else None
    pruned: list[int] = []
    kept: dict[int, SegProgress] = {}
    for entry in done:
        path = present.get(entry.seg)
        if path is None:
            if oldest is None or entry.seg < oldest:
                pruned.append(entry.seg)
                continue
            raise IndexStale(f"segment {entry.seg} was indexed but is gone")
        if entry.end > 0:
            if first_key(path) != entry.first_key:
                raise IndexStale(f"segment {entry.seg} starts with another record")
            if entry.last_off is not None and (
                line_key(path, entry.last_off, entry.end - entry.last_off - 1) != entry.last_key
            ):
                raise IndexStale(f"segment {entry.seg} no longer holds what was indexed")
        kept[entry.seg] = entry
    if kept and listing and min(kept) > listing[0][0] and any(s < min(kept) for s, _ in listing):
        # Segments older than the first indexed one appeared: not this log's index.
        raise IndexStale("segments older than the indexed ones are there")
    return pruned, kept


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
