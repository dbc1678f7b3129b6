"""Progress bars for the long offline commands (``evidence verify``/``export``).

A bar is drawn by tqdm (a small, well-kept library with no dependencies of
its own) on stderr, and only when stderr is a terminal and the work is
large enough to wait for: a pipe, a file or a CI log never gets carriage
returns and half-lines mixed into what it keeps, and a small log finishes
before a bar would mean anything. What the bar shows is counted bytes of
the log, never a file name (those are the host's, attacker-chosen bytes).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from tqdm import tqdm

__all__ = ["LARGE_BYTES", "byte_progress", "total_size"]

LARGE_BYTES: Final = 32 << 20
"""Logs smaller than this are verified or exported without a bar."""


def total_size(files: Sequence[Path]) -> int:
    """The bytes of ``files`` now (a file gone meanwhile counts 0)."""
    total = 0
    for path in files:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


@contextlib.contextmanager
def byte_progress(
    total: int, what: str, *, force: bool | None = None
) -> Iterator[Callable[[int], None] | None]:
    """A feed for a bar of ``total`` bytes labelled ``what``, or None when no
    bar is wanted (stderr not a terminal, or ``total`` under
    :data:`LARGE_BYTES`; ``force`` overrides both, for tests). The bar is
    closed, and its line finished, when the block ends, however it ends."""
    wanted = sys.stderr.isatty() and total >= LARGE_BYTES if force is None else force
    if not wanted:
        yield None
        return
    # A terminal that reports no size (a bare pty: 0 x 0) would get a bar cut
    # to nothing, or none (tqdm skips bars below the last row): draw one for
    # 80 x 24 there instead.
    sized = _columns() > 0
    bar = tqdm(total=total, desc=what, unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, leave=False, dynamic_ncols=sized,
               ncols=None if sized else 80, nrows=None if sized else 24)  # fmt: skip
    try:
        yield bar.update
    finally:
        bar.close()


def _columns() -> int:
    """stderr's terminal width, 0 if it reports none."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0
