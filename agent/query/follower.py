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

__all__ = ["INTERVAL_S", "NICE", "RETRY_S", "follow", "main"]

INTERVAL_S: Final = 0.25
"""How often the follower looks for new records (also its lag, idle)."""
RETRY_S: Final = 5.0
"""How long it waits after the index could not be written (a full disk)."""
NICE: Final = 19
"""The follower's niceness: capture and the commit path come first; under
full load the index falls behind (queries then scan) rather than slow them."""


def _fresh(state_dir: Path, *, rebuild: bool) -> IndexWriter:
    """A writer on an index that describes the log: rebuilt if it must be
    (or if ``rebuild``); a file SQLite cannot read is replaced
    (:func:`~agent.query.index_writer.open_writer`)."""
    writer, stale = open_writer(state_dir)
    if stale or rebuild:
        writer.rebuild()
    return writer


def follow(state_dir: Path, *, stop: list[bool], parent: int | None) -> None:
    """Index ``state_dir``'s log until ``stop[0]`` or ``parent`` is gone.

    Fails safe: a full disk, a lock held too long or an I/O error leaves
    the index as it is (queries scan meanwhile) and is tried again after
    :data:`RETRY_S`; a damaged file is removed and rebuilt; another log's
    index is rebuilt. Each cause is said once, in one line, not per try.
    """
    writer: IndexWriter | None = None
    rebuild = False
    said: str | None = None

    def say(line: str) -> None:
        nonlocal said
        if line != said:
            print(f"tracehound: index: {line}", file=sys.stderr, flush=True)
            said = line

    try:
        while True:
            last = stop[0] or (parent is not None and os.getppid() != parent)
            pause = INTERVAL_S
            try:
                if writer is not None and writer.replaced():
                    writer.close()
                    writer = None
                if writer is None:
                    writer = _fresh(state_dir, rebuild=rebuild)
                    rebuild = False
                writer.catch_up()
                said = None
            except IndexStale as err:
                say(f"rebuilding: {err}")
                rebuild = True
            except (sqlite3.OperationalError, OSError) as err:
                say(f"cannot write it now ({err}); trying again every {RETRY_S:g} s")
                pause = RETRY_S
            except sqlite3.DatabaseError as err:
                say(f"rebuilding a damaged index ({err})")
                if writer is not None:
                    writer.close()
                    writer = None
                index_db.remove_index(state_dir)
                rebuild = True
            if rebuild and writer is not None:
                writer.close()
                writer = None
            if last and not rebuild:
                return  # a rebuild owed is done first, even at the stop
            time.sleep(0 if rebuild else pause)
    finally:
        if writer is not None:
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
    try:
        follow(Path(argv[0]), stop=stop, parent=os.getppid())
    except Exception as err:  # a bug: one line, and the daemon starts another
        print(f"tracehound: index: the follower failed: {err!r}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
