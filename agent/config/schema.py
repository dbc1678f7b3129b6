"""The configuration's shape: one frozen msgspec Struct per TOML table.

Every field has a built-in default, so an empty document (or no file at
all) is a working configuration. msgspec checks the types and refuses
unknown keys (a typo such as ``ringbuf_page`` would otherwise be ignored
silently and the operator would run with a value they did not choose).
What types cannot say (ranges, a power of two, a parseable address, a
redaction rule that compiles) is checked in each section's
``__post_init__``, which raises :class:`ConfigError` naming the dotted key
(``capture.ringbuf_pages``) and what was expected. The loader
(:mod:`agent.config.load`) puts the file name in front.

``__post_init__`` also runs when code builds a section directly, so no
unchecked configuration can exist, whichever way it was made.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Final, Literal, TypeAlias

import msgspec

from agent.capture.probes import PROBES
from agent.config.errors import ConfigError
from agent.config.fleet import CollectConfig, FleetConfig
from agent.limits import (
    MAX_ARGV,
    MAX_CHECKPOINT_EVERY,
    MAX_CLIENTS,
    MAX_FOLD_CAPACITY,
    MAX_FOLD_WINDOW_MS,
    MAX_HEADERS,
    MAX_IDLE_TIMEOUT_S,
    MAX_PRODUCER_BURST,
    MAX_PRODUCER_RATE,
    MAX_REQUEST_BYTES,
    MAX_RETAIN_MB,
    MAX_RINGBUF_PAGES,
    MAX_SEGMENT_HOURS,
    MAX_SEGMENT_MB,
    MAX_SSE_BUFFER,
    MAX_STATS_INTERVAL_S,
    MAX_STREAM_CAPACITY,
    MIN_REQUEST_BYTES,
)
from agent.redact import RedactionConfigError, Redactor, Rule

__all__ = [
    "DEFAULT_EVIDENCE_DIR",
    "DEFAULT_PATH",
    "EVIDENCE_DIR_ENV",
    "ApiConfig",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "EvidenceConfig",
    "FsyncPolicy",
    "MetricsConfig",
    "StreamConfig",
    "StreamPolicy",
    "parse_listen",
    "parse_mode",
]

DEFAULT_PATH: Final = "/etc/tracehound/tracehound.toml"
"""Where the daemon looks for its configuration when none is named."""

DEFAULT_EVIDENCE_DIR: Final = "/var/lib/tracehound/evidence"
"""Where the evidence log lives unless configured (systemd's StateDirectory)."""

EVIDENCE_DIR_ENV: Final = "TRACEHOUND_EVIDENCE_DIR"
"""An environment variable that moves the *default* evidence directory (a
file's ``state_dir`` and ``--evidence`` still win): for tests and
throw-away runs, so two daemons never share, and fight over, one log."""

StreamPolicy: TypeAlias = Literal["block", "drop"]
"""When a streaming queue is full: block the producer (backpressure) or drop (counted)."""

FsyncPolicy: TypeAlias = Literal["always", "batch", "never"]
"""When the evidence log is fsynced: after every record, every batch, or never."""

_PROBE_NAMES: Final = frozenset(p.name for p in PROBES)
_MAX_ID: Final = 2**32 - 2  # (uid_t)-1 means "no id"
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes with the NUL
_MODE: Final = re.compile(r"(?:0o)?[0-7]{1,4}")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*")
_GROUP: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]+")
_TRACEPOINT: Final = re.compile(r"[A-Za-z0-9_]+:[A-Za-z0-9_]+")
_REDACTION_MESSAGE: Final = re.compile(r"redaction rule \$\[(\d+)\] \((.*?)\): (.*)", re.DOTALL)


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {expected}")


def _positive(value: float, high: float, key: str) -> None:
    """Above 0 and at most ``high``; nan and the infinities never pass
    (a nan compares false with both bounds, so it is tested first)."""
    _require(
        math.isfinite(value) and 0 < value <= high,
        key,
        f"expected a number above 0, at most {high}, got {value}",
    )


def _in_range(value: int, low: int, high: int, key: str) -> None:
    _require(low <= value <= high, key, f"expected {low} to {high}, got {value}")


def parse_mode(value: int | str) -> int:
    """Permission bits from ``0o660`` (an int, as TOML's ``0o660`` gives) or ``"0660"``.

    A decimal int such as ``660`` is taken as it is (and refused: above
    0o777), never re-read as octal: that guess is how sockets end up
    world-writable.

    Raises:
        ValueError: not octal digits, or outside 0 to 0o777.
    """
    if isinstance(value, str):
        if not _MODE.fullmatch(value):
            raise ValueError(f'expected an octal mode such as "0660", got {value!r}')
        bits = int(value.removeprefix("0o"), 8)
    else:
        bits = value
    if not 0 <= bits <= 0o777:
        raise ValueError(f"expected a mode from 0 to 0777, got {value!r}")
    return bits


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` to its parts: an IPv4 address, ``[IPv6]`` or a host name, then 1-65535.

    Raises:
        ValueError: the text is not of that form.
    """
    expected = f'expected HOST:PORT such as "127.0.0.1:9464" or "[::1]:9464", got {value!r}'
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(expected) from None
        return host[1:-1], int(port)
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(expected)
    return host, int(port)


class CaptureConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[capture]``: what the kernel side attaches and how big its buffer is."""

    # Ring buffer size in 4 KiB pages, a power of two, at most 262144 (1 GiB); 1024: 4 MiB.
    ringbuf_pages: int = 1024
    # argv entries captured per exec, 1 to 64.
    argv_max: int = 16
    # Probes not to attach (e.g. "syscalls.count"); probes that extend them go too.
    disable_probes: tuple[str, ...] = ()
    # Probe name to "CATEGORY:EVENT": attach that probe's first handler elsewhere.
    probe_tracepoints: dict[str, str] = {}
    # Seconds between stats lines on stderr, at most 86400; 0 turns them off.
    stats_interval: float = 5.0
    # Identical file/network events of a thread within this many ms become one
    # record carrying their count, 0 to 60000; 0 turns folding off.
    fold_window_ms: int = 100
    # Distinct events the fold table holds, 1 to 65536; past it events pass unfolded (counted).
    fold_capacity: int = 4096
    # Resolve every file event's absolute path in the kernel (from the file an
    # open installed, else the cwd or dirfd joined with the name); false: the
    # path as passed only, the absolute path empty and flagged "off".
    resolve_paths: bool = True

    def __post_init__(self) -> None:
        pages = self.ringbuf_pages
        _require(
            1 <= pages <= MAX_RINGBUF_PAGES and not pages & (pages - 1),
            "capture.ringbuf_pages",
            f"expected a power of two from 1 to {MAX_RINGBUF_PAGES}, got {pages}",
        )
        _in_range(self.argv_max, 1, MAX_ARGV, "capture.argv_max")
        known = ", ".join(sorted(_PROBE_NAMES))
        for name in self.disable_probes:
            _require(
                name in _PROBE_NAMES,
                "capture.disable_probes",
                f"unknown probe {name!r}; expected one of: {known}",
            )
        for name, tracepoint in self.probe_tracepoints.items():
            _require(
                name in _PROBE_NAMES,
                "capture.probe_tracepoints",
                f"unknown probe {name!r}; expected one of: {known}",
            )
            _require(
                bool(_TRACEPOINT.fullmatch(tracepoint)),
                f'capture.probe_tracepoints."{name}"',
                f'expected "CATEGORY:EVENT" such as "syscalls:sys_enter_openat", got {tracepoint!r}',
            )
        interval = self.stats_interval
        _require(
            math.isfinite(interval) and 0 <= interval <= MAX_STATS_INTERVAL_S,
            "capture.stats_interval",
            f"expected 0 (never) to {MAX_STATS_INTERVAL_S} seconds, got {interval}",
        )
        _require(
            0 <= self.fold_window_ms <= MAX_FOLD_WINDOW_MS,
            "capture.fold_window_ms",
            f"expected 0 (no folding) to {MAX_FOLD_WINDOW_MS} milliseconds,"
            f" got {self.fold_window_ms}",
        )
        _in_range(self.fold_capacity, 1, MAX_FOLD_CAPACITY, "capture.fold_capacity")


class StreamConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[stream]``: the bounded queue between the drain and the slow consumers."""

    # Capacity in events of each streaming sink (events file, evidence), 1 to 16777216.
    capacity: int = 8192
    # When it is full: "block" (backpressure onto the ring buffer) or "drop" (counted).
    policy: StreamPolicy = "block"

    def __post_init__(self) -> None:
        _in_range(self.capacity, 1, MAX_STREAM_CAPACITY, "stream.capacity")


def default_evidence_dir() -> str:
    """:data:`DEFAULT_EVIDENCE_DIR`, or what :data:`EVIDENCE_DIR_ENV` says.

    Read each time a section is built, so a test can set it per process.

    Raises:
        ConfigError: the variable is set but not an absolute path (fail
            closed: an empty value would otherwise mean the current directory).
    """
    value = os.environ.get(EVIDENCE_DIR_ENV)
    if value is None:
        return DEFAULT_EVIDENCE_DIR
    _require(
        value.startswith("/"),
        EVIDENCE_DIR_ENV,
        f"expected an absolute directory path, got {value!r}",
    )
    return value


class EvidenceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[evidence]``: the sealed, hash-chained log and what is redacted before it."""

    # Write every event to the sealed evidence log in state_dir.
    enabled: bool = True
    # Directory of the log's segments and checkpoints (systemd's StateDirectory);
    # TRACEHOUND_EVIDENCE_DIR moves this default.
    state_dir: str = msgspec.field(default_factory=default_evidence_dir)
    # fsync after every record ("always"), every batch ("batch") or "never".
    fsync: FsyncPolicy = "batch"
    # Rotate a segment at this size in MiB, above 0, at most 1024.
    segment_mb: float = 64.0
    # Rotate a segment at this age in hours, above 0, at most 8784 (a year).
    segment_hours: float = 24.0
    # Prune the oldest segments past this total in MiB, at least segment_mb, at
    # most 1048576 (1 TiB); the pruning is recorded.
    retain_mb: float = 1024.0
    # Seals come a second after the last while records do, and at stop; also
    # one every this many records if set, 1 to 1048576 (0: by time only).
    checkpoint_every: int = 0
    # Extra redaction rules, after the built-in ones (fields as agent.redact.Rule).
    redact_rules: tuple[Rule, ...] = ()
    # Keep the SQLite index beside the log (index.sqlite in state_dir) that
    # answers queries without a scan; a separate process feeds it from the
    # committed log, so capture and commits do not wait on it. Off: queries scan.
    index: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.state_dir), "evidence.state_dir", "expected a directory path")
        _positive(self.segment_mb, MAX_SEGMENT_MB, "evidence.segment_mb")
        _positive(self.segment_hours, MAX_SEGMENT_HOURS, "evidence.segment_hours")
        _positive(self.retain_mb, MAX_RETAIN_MB, "evidence.retain_mb")
        _require(
            self.retain_mb >= self.segment_mb,
            "evidence.retain_mb",
            f"expected at least evidence.segment_mb ({self.segment_mb}), got {self.retain_mb}",
        )
        _in_range(self.checkpoint_every, 0, MAX_CHECKPOINT_EVERY, "evidence.checkpoint_every")
        if self.redact_rules:  # a bad rule is refused now, not at the first event
            self.redactor()  # (the built-in ones alone are checked by their tests)

    def redactor(self) -> Redactor:
        """The built-in redaction rules followed by :attr:`redact_rules`, compiled.

        Raises:
            ConfigError: a rule's pattern or group is wrong, or its name is
                taken (the message says which rule and what was expected).
        """
        try:
            return Redactor.from_config(msgspec.to_builtins(self.redact_rules))
        except RedactionConfigError as err:
            found = _REDACTION_MESSAGE.fullmatch(str(err))
            if found is None:
                raise ConfigError(f"evidence.redact_rules: {err}") from None
            index, label, problem = found.groups()
            raise ConfigError(f"evidence.redact_rules[{index}]: rule {label}: {problem}") from None


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[api]``: the local HTTP/1.1 API on a UNIX socket, and its limits."""

    # Serve the API at all.
    enabled: bool = True
    # Path of the UNIX socket (systemd's RuntimeDirectory is /run/tracehound).
    socket: str = "/run/tracehound/api.sock"
    # Socket permission bits, "0660" or 0o660; always read back as a "0NNN" string.
    mode: int | str = "0660"
    # Group that owns the socket (name or number); "" leaves the daemon's own.
    group: str = ""
    # Peer uids (SO_PEERCRED) allowed besides root and the daemon's own uid.
    allow_uids: tuple[int, ...] = ()
    # Peer primary gids (SO_PEERCRED) allowed.
    allow_gids: tuple[int, ...] = ()
    # Largest request (request line and headers) in bytes, 1024 to 1048576; larger is refused (4xx).
    max_request_bytes: int = 16384
    # Most header lines in a request, 1 to 1000.
    max_headers: int = 64
    # Most clients connected at once, 1 to 65536; more are refused.
    max_clients: int = 64
    # Seconds a client may stay silent before it is disconnected (not SSE streams), at most 3600.
    idle_timeout_s: float = 30.0
    # Events buffered per SSE client, 1 to 1048576; on overflow the client is told and it is counted.
    sse_buffer: int = 1024
    # Peer uids (SO_PEERCRED) that may append events (POST /v1/events, tracehound mark),
    # besides root and the daemon's own uid.
    producer_uids: tuple[int, ...] = ()
    # Peer primary gids (SO_PEERCRED) that may append events.
    producer_gids: tuple[int, ...] = ()
    # Events per second each producer uid may append once its burst is spent, at most 10000.
    producer_rate: float = 10.0
    # Events a producer uid may append at once, 1 to 100000.
    producer_burst: int = 100

    def __post_init__(self) -> None:
        path = self.socket
        _require(
            path.startswith("/") and len(os.fsencode(path)) <= _SUN_PATH_MAX,
            "api.socket",
            f"expected an absolute path of at most {_SUN_PATH_MAX} bytes, got {path!r}",
        )
        try:
            bits = parse_mode(self.mode)
        except ValueError as err:
            raise ConfigError(f"api.mode: {err}") from None
        msgspec.structs.force_setattr(self, "mode", f"0{bits:03o}")
        _require(
            not self.group or bool(_GROUP.fullmatch(self.group)),
            "api.group",
            f'expected a group name or number, or "" for the daemon\'s own, got {self.group!r}',
        )
        for key, ids in (
            ("api.allow_uids", self.allow_uids),
            ("api.allow_gids", self.allow_gids),
            ("api.producer_uids", self.producer_uids),
            ("api.producer_gids", self.producer_gids),
        ):
            for value in ids:
                _in_range(value, 0, _MAX_ID, key)
        _in_range(
            self.max_request_bytes, MIN_REQUEST_BYTES, MAX_REQUEST_BYTES, "api.max_request_bytes"
        )
        _in_range(self.max_headers, 1, MAX_HEADERS, "api.max_headers")
        _in_range(self.max_clients, 1, MAX_CLIENTS, "api.max_clients")
        timeout = self.idle_timeout_s
        _require(
            math.isfinite(timeout) and 0 < timeout <= MAX_IDLE_TIMEOUT_S,
            "api.idle_timeout_s",
            f"expected a number of seconds above 0, at most {MAX_IDLE_TIMEOUT_S}, got {timeout}",
        )
        _in_range(self.sse_buffer, 1, MAX_SSE_BUFFER, "api.sse_buffer")
        rate = self.producer_rate
        _require(
            math.isfinite(rate) and 0 < rate <= MAX_PRODUCER_RATE,
            "api.producer_rate",
            f"expected events per second above 0, at most {MAX_PRODUCER_RATE}, got {rate}",
        )
        _in_range(self.producer_burst, 1, MAX_PRODUCER_BURST, "api.producer_burst")

    @property
    def mode_bits(self) -> int:
        """:attr:`mode` as an int, for ``os.chmod``."""
        return parse_mode(self.mode)


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[metrics]``: the Prometheus endpoint."""

    # Serve /metrics at all.
    enabled: bool = True
    # HOST:PORT to listen on; loopback by default, so only the host can scrape.
    listen: str = "127.0.0.1:9464"
    # A listen address that cannot be bound stops the start (one line); false:
    # a warning, and the daemon runs without metrics.
    required: bool = True

    def __post_init__(self) -> None:
        try:
            parse_listen(self.listen)
        except ValueError as err:
            raise ConfigError(f"metrics.listen: {err}") from None

    @property
    def address(self) -> tuple[str, int]:
        """:attr:`listen` as ``(host, port)``, for binding."""
        return parse_listen(self.listen)


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration: one field per TOML table, each with its defaults."""

    # Kernel-side capture: probes, ring buffer, stats.
    capture: CaptureConfig = CaptureConfig()
    # The bounded streaming queues.
    stream: StreamConfig = StreamConfig()
    # The sealed evidence log and redaction.
    evidence: EvidenceConfig = msgspec.field(default_factory=EvidenceConfig)
    # The local UNIX-socket API.
    api: ApiConfig = ApiConfig()
    # The Prometheus endpoint.
    metrics: MetricsConfig = MetricsConfig()
    # Publishing the committed log to NATS JetStream (off by default).
    fleet: FleetConfig = FleetConfig()
    # `tracehound collect`: JetStream into PostgreSQL (read by the collector only).
    collect: CollectConfig = CollectConfig()
