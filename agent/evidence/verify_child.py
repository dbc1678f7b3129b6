"""Verify a log's extent in a child process, off the daemon's GIL.

The daemon verifies its own log 10 s after start and every 15 minutes.
Verifying is pure Python over every line: in a worker thread it holds the
GIL for most of its run, and each time the trio thread gives the GIL up
(every syscall) it waits a switch interval to get it back, so a drain pass
that makes a few dozen syscalls took hundreds of milliseconds, and the live
tail stalled for that long. A child process verifies on the other core.

Protocol: the parent writes the extent as JSON (``[[path, size], ...]``) to
the child's stdin; the child writes the :class:`VerifyReport` as JSON to
stdout, or one line to stderr and exits 1 when the extent cannot be read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from agent.evidence.verify import VerifyInputError, VerifyReport, verify_extent

__all__ = ["decode_report", "main"]

_EXTENT = msgspec.json.Decoder(list[tuple[str, int]])


def decode_report(data: bytes) -> VerifyReport:
    """The child's answer. Raises :class:`msgspec.ValidationError` for
    anything else."""
    return msgspec.json.decode(data, type=VerifyReport)


def main(argv: Sequence[str] = ()) -> int:
    """Verify the extent read from stdin (``argv``: none)."""
    extent = [(Path(path), size) for path, size in _EXTENT.decode(sys.stdin.buffer.read())]
    try:
        report = verify_extent(extent)
    except (VerifyInputError, OSError) as err:
        print(f"could not read the log: {err}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(msgspec.json.encode(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
