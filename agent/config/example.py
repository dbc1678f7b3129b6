"""A commented example configuration: every key, its default and what it is for.

The text is what ``deploy/tracehound.toml.example`` should hold (write it
with ``tracehound config example`` or copy it); the tests load it, so the
example can never drift from the schema unnoticed.
"""

from __future__ import annotations

from string import Template
from typing import Final

from agent import limits
from agent.config.load import toml_value
from agent.config.schema import DEFAULT_EVIDENCE_DIR, Config, EvidenceConfig

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
# (4 KiB each).
ringbuf_pages = $capture_ringbuf_pages
# argv entries captured per exec, 1 to $MAX_ARGV.
argv_max = $capture_argv_max
# Probes not to attach; the probes that extend one go with it.
disable_probes = $capture_disable_probes
# Attach a probe's first handler to another tracepoint (NAME = "CATEGORY:EVENT").
probe_tracepoints = $capture_probe_tracepoints
# probe_tracepoints = { "file.openat" = "syscalls:sys_enter_openat" }
# Seconds between stats lines on stderr, at most $MAX_STATS_INTERVAL_S; 0 turns them off.
stats_interval = $capture_stats_interval
# Identical file and network events of one thread (same operation, paths,
# flags, mode, result) within this many milliseconds become one record
# carrying their exact count; the first is delivered at once. 0 to
# $MAX_FOLD_WINDOW_MS; 0 turns folding off.
fold_window_ms = $capture_fold_window_ms
# Distinct events held for folding, 1 to $MAX_FOLD_CAPACITY; past it events
# pass unfolded (counted in the stats), never lost.
fold_capacity = $capture_fold_capacity
# Resolve each file event's absolute path in the kernel: the file an open
# installed, else the working directory or dirfd joined with the name (cut
# beyond 4096 bytes, flagged). false: only the path as the process passed it.
resolve_paths = $capture_resolve_paths

[stream]
# Capacity in events of each streaming queue (events file, evidence),
# 1 to $MAX_STREAM_CAPACITY.
capacity = $stream_capacity
# When a queue is full: "block" (backpressure) or "drop" (counted as lost).
policy = $stream_policy

[evidence]
# Write every event to the sealed, hash-chained evidence log.
enabled = $evidence_enabled
# Where the log lives (systemd's StateDirectory=tracehound).
state_dir = $evidence_state_dir
# fsync after every record ("always"), every batch ("batch"), or "never".
fsync = $evidence_fsync
# Rotate a segment at this size (MiB, at most $MAX_SEGMENT_MB) or age (hours,
# at most $MAX_SEGMENT_HOURS).
segment_mb = $evidence_segment_mb
segment_hours = $evidence_segment_hours
# Prune the oldest segments past this total (MiB, at least segment_mb, at
# most $MAX_RETAIN_MB); the pruning is recorded.
retain_mb = $evidence_retain_mb
# The log is sealed (a checkpoint) a second after the last seal while records
# come, whatever the rate, and at stop. Also one every this many records, if
# set: 1 to $MAX_CHECKPOINT_EVERY; 0 seals by time only.
checkpoint_every = $evidence_checkpoint_every
# Extra redaction rules, applied after the built-in ones. Fields: name,
# privacy ("sensitive": mask group; "forbidden": drop the whole field),
# pattern (a Python regular expression), and optionally group, replacement,
# next_arg, programs, positional (sensitive rules: the Nth positional argv
# entry after a match is the secret) and only_when_cut (forbidden rules:
# only fields the capture cut short). A rule that does not compile stops
# start-up. For example:
# redact_rules = [
#   { name = "internal-token", privacy = "sensitive", pattern = '--internal-token=(\\S+)', group = 1 },
# ]
redact_rules = $evidence_redact_rules
# Keep the SQLite index (index.sqlite in state_dir) that answers queries
# (events, /v1/events, report) without a scan. A process of its own feeds it
# from the committed log at the lowest CPU priority, so capture and commits
# never wait on it; it is rebuilt from the log when missing or damaged
# (tracehound evidence reindex rebuilds it on demand). false: queries scan.
index = $evidence_index

[api]
# Serve the local HTTP API (snapshot, stats, events, live tail) at all.
enabled = $api_enabled
# The UNIX socket (systemd's RuntimeDirectory=tracehound).
socket = $api_socket
# Socket permissions, as an octal string.
mode = $api_mode
# Group owning the socket; "" keeps the daemon's own.
group = $api_group
# Peers (by SO_PEERCRED) allowed besides root and the daemon's own uid.
allow_uids = $api_allow_uids
allow_gids = $api_allow_gids
# Limits: request size in bytes ($MIN_REQUEST_BYTES to $MAX_REQUEST_BYTES), header
# lines (1 to $MAX_HEADERS), clients at once (1 to $MAX_CLIENTS), idle seconds
# (above 0, at most $MAX_IDLE_TIMEOUT_S).
max_request_bytes = $api_max_request_bytes
max_headers = $api_max_headers
max_clients = $api_max_clients
idle_timeout_s = $api_idle_timeout_s
# Events buffered per live-tail (SSE) client, 1 to $MAX_SSE_BUFFER; past that
# the client is told.
sse_buffer = $api_sse_buffer
# Peers (by SO_PEERCRED) that may append application events to the log
# (POST /v1/events, tracehound mark) besides root and the daemon's own uid,
# and how often: producer_burst at once (1 to $MAX_PRODUCER_BURST), then
# producer_rate per second (above 0, at most $MAX_PRODUCER_RATE), per uid.
producer_uids = $api_producer_uids
producer_gids = $api_producer_gids
producer_rate = $api_producer_rate
producer_burst = $api_producer_burst

[metrics]
# Serve Prometheus metrics at http://LISTEN/metrics.
enabled = $metrics_enabled
# HOST:PORT; loopback by default, so only this host can scrape.
listen = $metrics_listen
# An address that cannot be listened on (in use, say) stops the start; false:
# a warning, and the daemon runs without metrics.
required = $metrics_required
[fleet]
# Publish the committed log to NATS JetStream: each record once acknowledged
# (the log is the outbox; capture never waits for the network).
enabled = $fleet_enabled
# nats://HOST:PORT or tls://HOST:PORT; several, comma-separated, for a cluster.
nats_url = $fleet_nats_url
# A NATS .creds file, or a file holding a token (not both).
credentials_file = $fleet_credentials_file
token_file = $fleet_token_file
# TLS: the CA to verify the server with; a client certificate and key.
tls_ca_file = $fleet_tls_ca_file
tls_cert_file = $fleet_tls_cert_file
tls_key_file = $fleet_tls_key_file
# Subjects: PREFIX.evidence.HOST.TYPE and PREFIX.heads.HOST.
subject_prefix = $fleet_subject_prefix
# This host's fleet name; "" for the records' own host name.
host = $fleet_host
# Seconds between chain-head messages (0.5 to 3600).
heads_interval_s = $fleet_heads_interval_s
# Records sent and not yet acknowledged, at most (1 to 65536).
max_in_flight = $fleet_max_in_flight

[collect]
# Read by `tracehound collect` only: JetStream into PostgreSQL.
nats_url = $collect_nats_url
credentials_file = $collect_credentials_file
token_file = $collect_token_file
tls_ca_file = $collect_tls_ca_file
tls_cert_file = $collect_tls_cert_file
tls_key_file = $collect_tls_key_file
subject_prefix = $collect_subject_prefix
# PostgreSQL: libpq "host=... dbname=..." or a postgresql:// URL.
dsn = $collect_dsn
# The stream and durable consumer, made if missing; collectors with the same
# durable name share the work.
stream = $collect_stream
durable = $collect_durable
# Records per INSERT (1 to 65536) and the longest wait to fill one (ms).
batch_size = $collect_batch_size
batch_time_ms = $collect_batch_time_ms
# Batches fetched and not yet written, at most (1 to 1024).
channel_batches = $collect_channel_batches
# The stream's duplicate window (s) and limits (0: unlimited).
duplicate_window_s = $collect_duplicate_window_s
stream_max_age_hours = $collect_stream_max_age_hours
stream_max_mb = $collect_stream_max_mb
# Copies of each message across a NATS cluster (1 to 5; 3 on three nodes).
stream_replicas = $collect_stream_replicas
# Days of records kept in PostgreSQL, by daily partition (0: all).
retain_days = $collect_retain_days
# Body fields never stored, as dotted paths ("data.env").
never_store = $collect_never_store
# Seal verification keys by host: { "web1" = "thk1-..." }.
verify_keys = $collect_verify_keys
# Seconds before an unacknowledged message is redelivered (1 to 3600).
ack_wait_s = $collect_ack_wait_s
# Seconds a missing seq may stay missing after a later one is stored before
# it is a "gap" chain event (another collector may still hold it, or
# JetStream redeliver it: keep it above ack_wait_s).
gap_grace_s = $collect_gap_grace_s
# A message larger than this many bytes goes to dead_letters (1 KiB to 64 MiB).
max_record_bytes = $collect_max_record_bytes
# HOST:PORT of the collector's /metrics; "" for none.
metrics_listen = $collect_metrics_listen
""")


def _defaults() -> dict[str, str]:
    """``SECTION_KEY`` -> the schema's default as TOML, for every key: the
    example quotes the defaults, it never restates them. The evidence
    directory is the built-in one, whatever TRACEHOUND_EVIDENCE_DIR says."""
    builtin = Config(evidence=EvidenceConfig(state_dir=DEFAULT_EVIDENCE_DIR))
    out: dict[str, str] = {}
    for section in builtin.__struct_fields__:
        table = getattr(builtin, section)
        for key in table.__struct_fields__:
            out[f"{section}_{key}"] = toml_value(getattr(table, key))
    return out


def example_config_text() -> str:
    """A commented example configuration, every key shown with its default
    (and one redaction rule, commented out, to show their form); it loads as
    it is, and loads as the defaults."""
    return _EXAMPLE.substitute(vars(limits), **_defaults())
