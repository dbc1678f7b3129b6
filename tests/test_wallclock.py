"""Boot-clock ns to wall-clock text (agent.wallclock): one pure conversion, one measurement."""

from __future__ import annotations

import time

import pytest

from agent.wallclock import boot_to_wall_ns, human_time, measure_boot_offset

# 2024-05-01T12:00:00Z is 1714564800 s since the epoch.
EPOCH_S = 1_714_564_800
OFFSET = EPOCH_S * 10**9 - 7 * 10**9  # boot time 7 s is 12:00:00 exactly


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (7 * 10**9, "2024-05-01T12:00:00.000Z"),
        (7 * 10**9 + 123_456_789, "2024-05-01T12:00:00.123Z"),
        (7 * 10**9 + 999_999_999, "2024-05-01T12:00:00.999Z"),  # floored, not rounded up
        (7 * 10**9 + 86_400 * 10**9 * 245 + 1, "2025-01-01T12:00:00.000Z"),
        (0, "2024-05-01T11:59:53.000Z"),
    ],
)
def test_human_time_is_rfc3339_utc_milliseconds(ts_ns: int, text: str) -> None:
    assert human_time(ts_ns, OFFSET) == text
    assert boot_to_wall_ns(ts_ns, OFFSET) == ts_ns + OFFSET


def test_a_time_with_no_rfc3339_form_says_what_it_was() -> None:
    assert human_time(5, -(10**20)) == "boot+5ns"
    assert human_time(5, 300_000 * 365 * 86_400 * 10**9) == "boot+5ns"


def test_the_measured_offset_is_this_machine_s() -> None:
    """Checked against the kernel's own view, /proc/uptime (CLOCK_BOOTTIME in
    seconds, to the hundredth) and the wall clock read here."""
    offset = measure_boot_offset()
    wall = time.time_ns()
    with open("/proc/uptime") as f:
        uptime_ns = int(float(f.read().split()[0]) * 10**9)
    assert abs((wall - uptime_ns) - offset) < 50_000_000  # /proc/uptime: 10 ms steps
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(boot_to_wall_ns(now, offset) - time.time_ns()) < 5_000_000
