"""The largest value each setting may take, defined once.

The configuration schema (:mod:`agent.config.schema`) and the command-line
types (:mod:`agent.commands.arguments`) both check against these, so a
value the file refuses is refused on the command line too, in the same
range. Each bound says why it is where it is: past it, the value is a typo
(or an attack on memory), not a setting.

No imports beyond ``typing``: anything may depend on this module.
"""

from __future__ import annotations

from typing import Final

MAX_RINGBUF_PAGES: Final = 1 << 18
"""Ring buffer size in 4 KiB pages: 1 GiB of locked kernel memory."""

MAX_ARGV: Final = 64
"""argv entries captured per exec: every exec record holds this many slots
of ``arg_len`` bytes, and the BPF loop over them must pass the verifier."""

MAX_STATS_INTERVAL_S: Final = 86400
"""Seconds between stats lines: a day; 0 turns them off."""

MAX_FOLD_WINDOW_MS: Final = 60_000
"""Fold window in ms: a minute. A folded record is delivered when its window
closes, so a longer one only delays what the live tail and the log see."""

MAX_FOLD_CAPACITY: Final = 1 << 16
"""Keys in the drain's fold table: about 1 KiB each at worst (a key and its
decoded first event), 64 MiB in all."""

MAX_STREAM_CAPACITY: Final = 1 << 24
"""Events per streaming queue: 16 Mi events is already gigabytes of RAM."""

MAX_SEGMENT_MB: Final = 1024
"""MiB per evidence segment: the last segment is read whole at start-up."""

MAX_SEGMENT_HOURS: Final = 366 * 24
"""Hours before an evidence segment rotates: a year."""

MAX_RETAIN_MB: Final = 1 << 20
"""MiB of evidence kept before the oldest segments are pruned: 1 TiB."""

MAX_CHECKPOINT_EVERY: Final = 1 << 20
"""Records between sealed checkpoints (there is one every 15 minutes too)."""

MAX_DURATION_S: Final = 366 * 86400
"""``run --duration``: a year, in seconds."""

MAX_PID: Final = (1 << 22) - 1
"""The largest pid Linux hands out: pids are below pid_max, at most 2**22."""

MAX_CGROUP_ID: Final = 2**64 - 1
"""A cgroup id is the kernfs node id, a u64."""

MAX_SEQ: Final = 2**53 - 1
"""Evidence sequence numbers: the I-JSON integer range (the chain's ``Seq``)."""

MAX_INPUT_FILE_BYTES: Final = 1 << 20
"""Configuration, redaction-rule and key files: 1 MiB is far past any real one."""

MAX_PROFILE_BYTES: Final = 1 << 30
"""A profile read by ``profile diff``: the aggregating sink's own caps keep a
real one well under this; it is held in memory whole."""

# The API's limits (``[api]`` only; no command-line option sets them).

MIN_REQUEST_BYTES: Final = 1024
MAX_REQUEST_BYTES: Final = 1 << 20
"""A request's line and headers, in bytes: read into memory before parsing."""

MAX_HEADERS: Final = 1000
"""Header lines in one request."""

MAX_CLIENTS: Final = 65536
"""API clients connected at once: each holds a file descriptor."""

MAX_IDLE_TIMEOUT_S: Final = 3600
"""Seconds a silent API client is kept."""

MAX_SSE_BUFFER: Final = 1 << 20
"""Events buffered per live-tail client."""

MAX_PRODUCER_RATE: Final = 10_000
"""Events per second one producer uid may append (``api.producer_rate``):
past this the kernel's records would be the minority of the log."""

MAX_PRODUCER_BURST: Final = 100_000
"""Events one producer uid may append at once (``api.producer_burst``)."""

MAX_EVENT_BODY_BYTES: Final = 16384
"""A producer's event (``POST /v1/events``, ``mark --data``), in bytes: a
message and a few dozen fields; the whole body is read before it is checked."""
