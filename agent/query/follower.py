"""The index follower: a process of its own that keeps the index up with the log.

``python -m agent.query.follower STATE_DIR`` (the daemon starts it when
``[evidence] index`` is on). Why a process and not a task or a thread:
indexing is CPU work in Python, and in the daemon's process (capture) or
the evidence worker's (the commit path) it would hold their GIL; here it
holds its own, at the lowest CPU priority (:data:`NICE`), and touches
neither. It reads
only committed bytes of the segments (the log is the outbox), so its
backlog is the log itself: it can fall behind, never lose anything, and
a query asks the index only when it is close enough
(:data:`agent.query.index.CATCH_UP_BYTES`).

At start it opens (or makes) the index and rebuilds it if it is missing,
damaged, of another schema or of another log; then every
:data:`INTERVAL_S` it indexes what was committed since. It ends at SIGTERM
(after one last catch-up) or when the daemon that started it is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Final

from agent.query import index_db
from agent.query.index_db import IndexStale
from agent.query.index_writer import IndexWriter, open_writer

__all__ = ["INTERVAL_S", "follow", "main"]

INTERVAL_S: Final = 0.25
"""How often the follower looks for new records (also its lag, idle)."""
NICE: Final = 19
"""The follower's niceness: capture and the commit path come first; under
full load the index falls behind (queries then scan) rather than slow them."""


def _fresh(state_dir: Path, *, rebuild: bool) -> IndexWriter:
    """A writer on an index that describes the log: rebuilt if it must be
    (or if ``rebuild``); a file SQLite cannot read is removed first."""
    try:
        writer, stale = open_writer(state_dir)
    except sqlite3.DatabaseError:
        index_db.remove_index(state_dir)
        writer, stale = open_writer(state_dir)
    if stale or rebuild:
        writer.rebuild()
    return writer


def follow(state_dir: Path, *, stop: list[bool], parent: int | None) -> None:
    """Index ``state_dir``'s log until ``stop[0]`` or ``parent`` is gone."""
    writer = _fresh(state_dir, rebuild=False)
    try:
        while True:
            last = stop[0] or (parent is not None and os.getppid() != parent)
            try:
                if writer.replaced():
                    writer.close()
                    writer = _fresh(state_dir, rebuild=False)
                writer.catch_up()
            except (IndexStale, sqlite3.DatabaseError) as err:
                print(f"tracehound: index: rebuilding ({err})", file=sys.stderr, flush=True)
                writer.close()
                if isinstance(err, sqlite3.DatabaseError):
                    index_db.remove_index(state_dir)
                writer = _fresh(state_dir, rebuild=True)
            if last:
                return
            time.sleep(INTERVAL_S)
    finally:
        writer.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0]:
        print(
            "tracehound: index follower: expected one argument, the state directory",
            file=sys.stderr,
        )
        return 2
    stop = [False]

    def on_term(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon's Ctrl-C is the daemon's
    with contextlib.suppress(OSError):
        os.nice(NICE)
    follow(Path(argv[0]), stop=stop, parent=os.getppid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
