"""Boot-clock nanoseconds as wall-clock time a person can read, defined once.

Events carry ``ts_ns``: CLOCK_BOOTTIME nanoseconds. They order events
exactly and do not jump when the wall clock is set, but "4398046511104"
means nothing to a reader. Text outputs show :func:`human_time` instead:
RFC 3339, UTC, milliseconds, with a ``Z`` (``2024-05-01T12:00:00.123Z``).
UTC rather than the local offset: the same output reads the same on every
host and in every log it is pasted into, and sorts as text.

The conversion is pure: :func:`human_time` is fed the boot offset
(CLOCK_REALTIME - CLOCK_BOOTTIME), which :func:`measure_boot_offset` reads
once at start (the only I/O here). So a test can drive it with any offset,
and every time one run prints is on the same footing: a wall-clock step
after start does not move them (the error is the wall clock's at start,
plus drift since), as with the evidence anchor (agent.evidence.types.Anchor).

What can go wrong: a time that is not in years 1 to 9999 once converted
(a garbage timestamp, a wrong offset) has no RFC 3339 form; it is shown as
``boot+<ns>ns`` rather than raising, so one bad value cannot cost a report.
"""

from __future__ import annotations

import time
from typing import Final

from agent.evidence.types import format_rfc3339_ns

__all__ = ["boot_to_wall_ns", "human_time", "measure_boot_offset"]

_NS_PER_MS: Final = 1_000_000


def measure_boot_offset() -> int:
    """CLOCK_REALTIME - CLOCK_BOOTTIME now, in ns: the wall clock read on
    both sides of the boot clock, their midpoint taken (the reads are
    tens of ns apart, far below the millisecond shown)."""
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    return before + (after - before) // 2 - boot


def boot_to_wall_ns(ts_ns: int, offset_ns: int) -> int:
    """A CLOCK_BOOTTIME time as ns since the Unix epoch."""
    return ts_ns + offset_ns


def human_time(ts_ns: int, offset_ns: int) -> str:
    """A CLOCK_BOOTTIME time as RFC 3339 UTC to the millisecond (floored:
    an event in the last ms of a second stays in that second)."""
    wall = boot_to_wall_ns(ts_ns, offset_ns)
    try:
        full = format_rfc3339_ns(wall - wall % _NS_PER_MS)
    except ValueError:
        return f"boot+{ts_ns}ns"
    return full[:23] + "Z"  # YYYY-MM-DDTHH:MM:SS.mmm of ...SS.nnnnnnnnnZ
