"""Index figures for ``bench/evidence_bench.py`` (issue 11's targets).

* the pipeline's records/s with the index follower running beside it and
  without (the follower is the daemon's: a process of its own);
* a full reindex's records/s, and the index's bytes per record;
* on a log of ``--index-log-mb`` MiB (default 1024) made through the real
  mapper and store (cached in ``--index-cache``, reused while its size and
  seed match), the latency of :func:`agent.query.index.query_index` for
  ``--since 10m --path '/etc/*'`` and ``--pid N --tree``: the first page
  (limit 1000) and the whole answer.

The big log's events are the evidence bench's mix in chunks of 100,000,
each chunk shifted 3 minutes later than the one before, so the log spans
hours and ``--since 10m`` is its newest few chunks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore
from agent.query import index_db
from agent.query.filter import EventFilter
from agent.query.index import query_index
from agent.query.index_writer import reindex
from agent.query.scan import search

CHUNK = 100_000
CHUNK_SPAN_NS = 180 * 10**9
PAGE = 1000


def start_follower(state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agent.query.follower", str(state)])


def stop_follower(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def index_bytes(state: Path) -> int:
    """Bytes of the index's pages in use (a rebuild in place leaves free
    pages in the file, which SQLite reuses: the file's size is a high-water
    mark)."""
    conn = index_db.connect(state, write=False)
    assert conn is not None
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return int((pages - free) * size)


def make_big_log(state: Path, mb: int, seed: int, make_events: Any, host: str, anchor: Any) -> int:
    """Fill ``state`` with at least ``mb`` MiB of log; the records written."""
    store = EvidenceStore(state, fsync="never", retain_max_bytes=max(2 * mb, 1024) << 20)
    mapper = Mapper(host=host, anchor=anchor)
    store.append_bodies([mapper.anchor_record()], [])
    records, chunk = 1, 0
    target = mb << 20
    try:
        while _size(state) < target:
            events = make_events(CHUNK, seed + chunk)
            shift = chunk * CHUNK_SPAN_NS
            mapped = [
                mapper.map(
                    msgspec.structs.replace(e, ts_ns=e.ts_ns + shift) if hasattr(e, "ts_ns") else e
                )
                for e in events
            ]
            for start in range(0, len(mapped), 512):
                store.append_bodies(mapped[start : start + 512], [])
                store.commit()
            records += len(mapped)
            chunk += 1
            print(f"  big log: {_size(state) >> 20} MiB, {records:,} records", flush=True)
    finally:
        store.close()
    return records


def _size(state: Path) -> int:
    return sum(p.stat().st_size for p in (state / "segments").glob("*.ndjson"))


def _timed_query(state: Path, flt: EventFilter, limit: int) -> tuple[float, int, bool]:
    """Best of 5: seconds, records, and whether the index answered (else
    :func:`agent.query.scan.search` scanned the log, as the CLI and API do)."""
    best = float("inf")
    count = 0
    indexed = query_index(state, flt, after_seq=None, limit=1) is not None
    for _ in range(5):
        began = time.perf_counter()
        found = search(state, flt, limit=limit).events
        took = time.perf_counter() - began
        best, count = min(best, took), len(found)
    return best, count, indexed


def big_log_figures(
    cache: Path, mb: int, seed: int, make_events: Any, host: str, anchor: Any
) -> dict[str, Any]:
    state = cache / f"log-{mb}mb-seed{seed}"
    done = state / "complete"
    if not done.exists():
        if state.exists():
            subprocess.run(["rm", "-rf", str(state)], check=True)
        state.mkdir(parents=True)
        make_big_log(state, mb, seed, make_events, host, anchor)
        done.write_text("ok\n")
    log_bytes = _size(state)
    rebuilt = reindex(state)
    figures: dict[str, Any] = {
        "log_bytes": log_bytes,
        "records": rebuilt.records,
        "reindex_records_per_s": rebuilt.records / rebuilt.seconds,
        "reindex_seconds": rebuilt.seconds,
        "index_bytes": index_bytes(state),
    }
    figures["index_bytes_per_record"] = figures["index_bytes"] / max(rebuilt.records, 1)
    conn = index_db.connect(state, write=False)
    assert conn is not None
    t_max = conn.execute("SELECT max(tmax) FROM tblk").fetchone()[0]
    # A pid with forks: the tree's root.
    fork_id = conn.execute(
        "SELECT id FROM strs WHERE s = 'dev.tracehound.process.fork.v1'"
    ).fetchone()[0]
    root = conn.execute(
        "SELECT pid FROM rec WHERE type = ? ORDER BY seq DESC LIMIT 1", (fork_id,)
    ).fetchone()[0]
    conn.close()
    since = EventFilter(since_ns=t_max - 600 * 10**9, path="/etc/*")
    tree = EventFilter(pid=root, tree=True)
    for name, flt in (("since_10m_path_etc", since), ("pid_tree", tree)):
        page_s, page_n, by_index = _timed_query(state, flt, PAGE)
        all_s, all_n, _ = _timed_query(state, flt, 10**9)
        figures[name] = {
            "answered_by": "index" if by_index else "scan",
            "page_ms": page_s * 1e3,
            "page_records": page_n,
            "all_ms": all_s * 1e3,
            "all_records": all_n,
        }
    return figures


def report(figures: dict[str, Any], with_index: float | None, without: float | None) -> str:
    lines = ["index (issue 11 targets):"]
    if with_index is not None and without is not None:
        lines.append(
            f"  pipeline records/s: {without:,.0f} without the index, {with_index:,.0f} with"
            f" ({(1 - with_index / without) * 100:+.1f}% cost; target <= 10%)"
        )
    lines.append(
        f"  big log: {figures['log_bytes'] / 2**30:.2f} GiB, {figures['records']:,} records;"
        f" reindex {figures['reindex_records_per_s']:,.0f} records/s ({figures['reindex_seconds']:.1f} s;"
        " target >= 100k/s)"
    )
    lines.append(
        f"  index: {figures['index_bytes'] / 2**20:.0f} MiB, {figures['index_bytes_per_record']:.0f} bytes/record"
    )
    for name, label in (
        ("since_10m_path_etc", "--since 10m --path '/etc/*'"),
        ("pid_tree", "--pid N --tree"),
    ):
        f = figures[name]
        lines.append(
            f"  {label} (by the {f['answered_by']}): first page ({f['page_records']}) {f['page_ms']:.1f} ms;"
            f" whole answer ({f['all_records']:,}) {f['all_ms']:.1f} ms (target <= 100 ms)"
        )
    return "\n".join(lines)
