"""A commented example configuration: every key, its default and what it is for.

The text is what ``deploy/tracehound.toml.example`` should hold (write it
with ``tracehound config example`` or copy it); the tests load it, so the
example can never drift from the schema unnoticed.
"""

from __future__ import annotations

from string import Template
from typing import Final

from agent import limits

__all__ = ["example_config_text"]

# $NAME is agent.limits.NAME: each bound is written where it is defined.
_EXAMPLE: Final = Template("""\
# /etc/tracehound/tracehound.toml
#
# Every key is optional: what is left out keeps the default shown here, and
# with no file at all tracehound runs on these defaults. Unknown keys and
# values of the wrong type are refused at start-up, naming the key.
# Check a file with:  tracehound config check FILE
# See what is in force: tracehound config show

[capture]
# Ring buffer size in 4 KiB pages: a power of two, at most $MAX_RINGBUF_PAGES
# (1024 pages: 4 MiB).
ringbuf_pages = 1024
# argv entries captured per exec, 1 to $MAX_ARGV.
argv_max = 16
# Probes not to attach; the probes that extend one go with it.
disable_probes = []
# Attach a probe's first handler to another tracepoint (NAME = "CATEGORY:EVENT").
probe_tracepoints = {}
# probe_tracepoints = { "file.openat" = "syscalls:sys_enter_openat" }
# Seconds between stats lines on stderr, at most $MAX_STATS_INTERVAL_S; 0 turns them off.
stats_interval = 5.0
# Identical file and network events of one thread (same operation, paths,
# flags, mode, result) within this many milliseconds become one record
# carrying their exact count; the first is delivered at once. 0 to
# $MAX_FOLD_WINDOW_MS; 0 turns folding off.
fold_window_ms = 100
# Distinct events held for folding, 1 to $MAX_FOLD_CAPACITY; past it events
# pass unfolded (counted in the stats), never lost.
fold_capacity = 4096

[stream]
# Capacity in events of each streaming queue (events file, evidence),
# 1 to $MAX_STREAM_CAPACITY.
capacity = 8192
# When a queue is full: "block" (backpressure) or "drop" (counted as lost).
policy = "block"

[evidence]
# Write every event to the sealed, hash-chained evidence log.
enabled = true
# Where the log lives (systemd's StateDirectory=tracehound).
state_dir = "/var/lib/tracehound/evidence"
# fsync after every record ("always"), every batch ("batch"), or "never".
fsync = "batch"
# Rotate a segment at this size (MiB, at most $MAX_SEGMENT_MB) or age (hours,
# at most $MAX_SEGMENT_HOURS).
segment_mb = 64.0
segment_hours = 24.0
# Prune the oldest segments past this total (MiB, at least segment_mb, at
# most $MAX_RETAIN_MB); the pruning is recorded.
retain_mb = 1024.0
# The log is sealed (a checkpoint) a second after the last seal while records
# come, whatever the rate, and at stop. Also one every this many records, if
# set: 1 to $MAX_CHECKPOINT_EVERY; 0 seals by time only.
checkpoint_every = 0
# Extra redaction rules, applied after the built-in ones. Fields: name,
# privacy ("sensitive": mask group; "forbidden": drop the whole field),
# pattern (a Python regular expression), and optionally group, replacement,
# next_arg, programs, positional (sensitive rules: the Nth positional argv
# entry after a match is the secret) and only_when_cut (forbidden rules:
# only fields the capture cut short). A rule that does not compile stops
# start-up.
redact_rules = [
  { name = "internal-token", privacy = "sensitive", pattern = '--internal-token=(\\S+)', group = 1 },
]

[api]
# Serve the local HTTP API (snapshot, stats, events, live tail) at all.
enabled = true
# The UNIX socket (systemd's RuntimeDirectory=tracehound).
socket = "/run/tracehound/api.sock"
# Socket permissions, as an octal string.
mode = "0660"
# Group owning the socket; "" keeps the daemon's own.
group = ""
# Peers (by SO_PEERCRED) allowed besides root and the daemon's own uid.
allow_uids = []
allow_gids = []
# Limits: request size in bytes ($MIN_REQUEST_BYTES to $MAX_REQUEST_BYTES), header
# lines (1 to $MAX_HEADERS), clients at once (1 to $MAX_CLIENTS), idle seconds
# (above 0, at most $MAX_IDLE_TIMEOUT_S).
max_request_bytes = 16384
max_headers = 64
max_clients = 64
idle_timeout_s = 30.0
# Events buffered per live-tail (SSE) client, 1 to $MAX_SSE_BUFFER; past that
# the client is told.
sse_buffer = 1024

[metrics]
# Serve Prometheus metrics at http://LISTEN/metrics.
enabled = true
# HOST:PORT; loopback by default, so only this host can scrape.
listen = "127.0.0.1:9464"
""").substitute(vars(limits))


def example_config_text() -> str:
    """A commented example configuration, every key shown (evidence and one
    redaction rule switched on, to show their form); it loads as it is."""
    return _EXAMPLE
