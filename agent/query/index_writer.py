"""Feed the SQLite index from the log: follow the committed bytes, or rebuild from 0.

The log is the outbox. :meth:`IndexWriter.catch_up` reads each segment
from where the index stopped (its ``segs`` row) to the last complete line,
and inserts the rows (:func:`~agent.query.index_rows.row_of_line`) in
batches, one transaction each, the progress in the same transaction: a
crash or a kill between two batches loses nothing and repeats nothing.
:meth:`IndexWriter.rebuild` is the same code from offset 0, on an emptied
index whose secondary indexes are made again at the end (one sort each,
faster than keeping them up row by row).

Several writers may run (the daemon's follower, a query catching up the
last few records, ``evidence reindex``): ``BEGIN IMMEDIATE`` serialises
their batches and each batch re-reads the progress inside its transaction.

What can go wrong, and what happens:

- the file is not a database, or SQLite finds it malformed: it is deleted
  and made again, then rebuilt (:func:`open_writer`);
- it is another log's, or the log was rewritten under it
  (:class:`~agent.query.index_db.IndexStale`): rebuilt;
- retention pruned segments: their rows are deleted;
- a line that is not a record: no row, but its bytes count as indexed.

Memory is bounded: one chunk (:data:`READ_BYTES`) of one segment at a
time and two caches of string ids (cleared past :data:`CACHE_MAX`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Final

from agent.evidence.layout import segment_files
from agent.query import index_db
from agent.query.index_db import BLOCK_SHIFT, IndexStale, transaction
from agent.query.index_rows import Chunk, rows_of_chunk

__all__ = ["READ_BYTES", "IndexWriter", "open_writer", "reindex"]

READ_BYTES: Final = 16 << 20
"""How much of a segment one batch reads (and so at most holds)."""
MAX_SORT_THREADS: Final = 8
"""Helper threads SQLite's sorter may use for a rebuild's CREATE INDEX, at most."""
CACHE_MAX: Final = 200_000
"""String ids cached per table before the cache starts over."""

_INSERT: Final = "INSERT INTO rec VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"


class IndexWriter:
    """The one writer of a state directory's index (per process)."""

    def __init__(self, state_dir: Path, conn: sqlite3.Connection) -> None:
        self.state_dir = state_dir
        self._conn = conn
        #: The file this writer has open: a reindex or a person may replace
        #: or delete it, and writing on into the old one would help nobody.
        self.inode = os.stat(index_db.index_path(state_dir)).st_ino
        self._generation: object = None
        self._strs: dict[str, int] = {}
        self._paths: dict[str, int] = {}

    def close(self) -> None:
        self._conn.close()

    def replaced(self) -> bool:
        """Whether the index file is gone or another one than this writer's."""
        try:
            return os.stat(index_db.index_path(self.state_dir)).st_ino != self.inode
        except FileNotFoundError:
            return True

    # --- the two ways in -------------------------------------------------------

    def catch_up(self, *, max_batches: int | None = None) -> int:
        """Index what the log committed since the last batch; the records added.

        Raises :class:`IndexStale` when the index is not this log's (the
        caller rebuilds) and :class:`sqlite3.DatabaseError` when the file is
        damaged (the caller removes it and rebuilds).
        """
        added, batches = 0, 0
        while max_batches is None or batches < max_batches:
            with transaction(self._conn, write=True):
                step = self._batch()
            if step is None:
                break
            added += step
            batches += 1
        return added

    def rebuild(self) -> int:
        """Empty the index and index the whole log again; the records indexed."""
        conn = self._conn
        with transaction(conn, write=True):
            old = index_db.meta(conn).get("generation")
            generation = old + 1 if isinstance(old, int) else 1
            # Dropped, not emptied: an index of another schema is made anew.
            for table in index_db.TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            index_db.create_schema(conn, indexes=False)
            conn.execute("UPDATE meta SET v = ? WHERE k = 'generation'", (generation,))
            conn.execute("UPDATE meta SET v = 'building' WHERE k = 'state'")
        added = self.catch_up()
        # CREATE INDEX sorts; SQLite's sorter may use helper threads for it.
        conn.execute(f"PRAGMA threads = {max(1, min(os.cpu_count() or 1, MAX_SORT_THREADS))}")
        with transaction(conn, write=True):
            index_db.create_indexes(conn)
            conn.execute("UPDATE meta SET v = 'ready' WHERE k = 'state'")
        added += self.catch_up()  # what came while the indexes were made
        return added

    # --- one batch -------------------------------------------------------------

    def _batch(self) -> int | None:
        """Index one chunk of the first segment with unindexed bytes, in the
        caller's transaction; None if there is nothing new."""
        conn = self._conn
        info = index_db.meta(conn)
        if not info:
            index_db.create_schema(conn)
            info = index_db.meta(conn)
        if info.get("version") != index_db.SCHEMA_VERSION:
            raise IndexStale(f"schema version {info.get('version')!r}")
        if info.get("generation") != self._generation:
            self._strs.clear()
            self._paths.clear()
            self._generation = info.get("generation")
        listing = segment_files(self.state_dir / "segments")
        pruned, kept = index_db.check_segments(index_db.progress(conn), listing)
        for seg in pruned:
            self._drop_segment(seg)
        for seg, path in listing:
            done = kept.get(seg)
            start = 0 if done is None else done.end
            try:
                with open(path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read(READ_BYTES)
                    cut = data.rfind(b"\n") + 1
                    while cut == 0 and len(data) >= READ_BYTES:  # one line longer than a chunk
                        more = handle.read(READ_BYTES)
                        if not more:
                            break
                        data += more
                        cut = data.rfind(b"\n") + 1
            except FileNotFoundError:
                continue  # pruned since the listing: the next batch sees it gone
            if cut == 0:
                continue
            return self._insert(seg, path, start, data[:cut], done)
        return None

    def _insert(
        self, seg: int, path: Path, start: int, data: bytes, done: index_db.SegProgress | None
    ) -> int:
        return self._store(seg, path, rows_of_chunk(data, start, BLOCK_SHIFT), done)

    def _store(self, seg: int, path: Path, chunk: Chunk, done: index_db.SegProgress | None) -> int:
        """Insert one chunk's rows and the segment's progress past it, in the
        caller's transaction; the rows inserted."""
        strs, paths = self._intern_str, self._intern_path
        values = [
            (seq, seg, off, length, key, t, strs(kind), pid,
             None if comm is None else strs(comm), uid,
             None if exe is None else strs(exe), None if ctr is None else strs(ctr),
             None if p1 is None else paths(p1), None if p2 is None else paths(p2),
             ra, rp, rid)
            for (seq, off, length, key, t, kind, pid, comm, uid, exe, ctr, p1, p2, ra, rp, rid)
            in chunk.rows
        ]  # fmt: skip
        conn = self._conn
        conn.executemany(_INSERT, values)
        if chunk.edges:
            conn.executemany(
                "INSERT OR IGNORE INTO edges VALUES(?,?,?,?)",
                [(seq, parent, child, seg) for seq, parent, child in chunk.edges],
            )
        conn.executemany(
            "INSERT INTO tblk VALUES(?,?,?) ON CONFLICT(b) DO UPDATE SET"
            " tmin = min(tmin, excluded.tmin), tmax = max(tmax, excluded.tmax)",
            [(block, low, high) for block, (low, high) in chunk.blocks.items()],
        )
        first = done.first_key if done is not None else index_db.first_key(path)
        line = chunk.last_line
        last_seq = index_db.seq_of_line(line)
        conn.execute(
            "INSERT OR REPLACE INTO segs VALUES(?,?,?,?,?,?)",
            (seg, first, chunk.end, chunk.last_off, index_db.key_of_line(line), last_seq),
        )
        if last_seq is not None:
            conn.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'last_seq'", (last_seq,))
        conn.execute("UPDATE meta SET v = v + ? WHERE k = 'rows'", (len(values),))
        return len(values)

    def _intern_str(self, text: str) -> int:
        found = self._strs.get(text)
        if found is None:
            found = self._intern("strs", text)
            if len(self._strs) >= CACHE_MAX:
                self._strs.clear()
            self._strs[text] = found
        return found

    def _intern_path(self, text: str) -> int:
        found = self._paths.get(text)
        if found is None:
            found = self._intern("paths", text)
            if len(self._paths) >= CACHE_MAX:
                self._paths.clear()
            self._paths[text] = found
        return found

    def _intern(self, table: str, text: str) -> int:
        conn = self._conn
        hit = conn.execute(f"SELECT id FROM {table} WHERE s = ?", (text,)).fetchone()
        if hit is not None:
            return int(hit[0])
        cursor = conn.execute(f"INSERT INTO {table}(s) VALUES(?)", (text,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _drop_segment(self, seg: int) -> None:
        """Forget a segment retention pruned (its rows are the seqs up to its last)."""
        conn = self._conn
        row = conn.execute("SELECT last_seq FROM segs WHERE seg = ?", (seg,)).fetchone()
        if row is not None and row[0] is not None:
            gone = conn.execute("DELETE FROM rec WHERE seq <= ?", (row[0],)).rowcount
            conn.execute("UPDATE meta SET v = v - ? WHERE k = 'rows'", (gone,))
            conn.execute("DELETE FROM tblk WHERE b < ?", ((row[0] + 1) >> BLOCK_SHIFT,))
        conn.execute("DELETE FROM edges WHERE seg = ?", (seg,))
        conn.execute("DELETE FROM segs WHERE seg = ?", (seg,))
        # Paths no row names any more go too, or names seen once (mkstemp's)
        # would grow the index past retention. Every writer's cache of path
        # ids is then stale: the generation says so.
        conn.execute(
            "DELETE FROM paths WHERE NOT EXISTS (SELECT 1 FROM rec WHERE p1 = paths.id)"
            " AND NOT EXISTS (SELECT 1 FROM rec WHERE p2 = paths.id)"
        )
        conn.execute("UPDATE meta SET v = v + 1 WHERE k = 'generation'")
        self._paths.clear()
        self._strs.clear()


def open_writer(state_dir: Path) -> tuple[IndexWriter, bool]:
    """A writer for ``state_dir``'s index and whether it must be rebuilt.

    A file that is not a database (garbage, truncated to a torn header) is
    removed and made again, empty: the caller rebuilds. An
    :class:`sqlite3.OperationalError` (a full disk, a lock held) is raised:
    it says nothing against the file.
    """
    for attempt in (0, 1):
        conn: sqlite3.Connection | None = None
        try:
            conn = index_db.connect(state_dir, write=True)
            assert conn is not None
            with transaction(conn, write=True):
                info = index_db.meta(conn)
                fresh = not info
                if fresh:
                    index_db.create_schema(conn)
                elif conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
                    raise sqlite3.DatabaseError("quick_check failed")
            stale = fresh or info.get("version") != index_db.SCHEMA_VERSION
            stale = stale or info.get("state") != "ready"
            return IndexWriter(state_dir, conn), stale or attempt == 1
        except sqlite3.OperationalError:
            if conn is not None:
                conn.close()  # a full disk, a lock: nothing says the file is bad
            raise
        except sqlite3.DatabaseError:
            if conn is not None:
                conn.close()
            if attempt == 1:
                raise
            index_db.remove_index(state_dir)
    raise AssertionError("unreachable")


class Reindexed:
    """What a rebuild did: records indexed, seconds taken."""

    __slots__ = ("records", "seconds")

    def __init__(self, records: int, seconds: float) -> None:
        self.records, self.seconds = records, seconds


def reindex(state_dir: Path) -> Reindexed:
    """Rebuild ``state_dir``'s index from its log (``tracehound evidence reindex``)."""
    began = time.monotonic()
    writer, _ = open_writer(state_dir)
    try:
        try:
            records = writer.rebuild()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            writer.close()
            index_db.remove_index(state_dir)
            writer, _ = open_writer(state_dir)
            records = writer.rebuild()
    finally:
        writer.close()
    return Reindexed(records, time.monotonic() - began)
