"""``[fleet]`` (the agent's publisher) and ``[collect]`` (the collector).

Both talk to NATS the same way, so they share :class:`NatsSettings`; each
is checked when the file loads (fail closed): a key of the wrong shape is
one line naming it. Whether the servers are really there is found at
start, also as one line (the publisher retries; the collector exits).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from agent.config.errors import ConfigError

__all__ = ["CollectConfig", "FleetConfig", "NatsSettings", "nats_servers"]

_URL: Final = re.compile(r"(nats|tls)://[^\s/,]+")
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")


def _fail(key: str, expected: str) -> None:
    raise ConfigError(f"{key}: {expected}")


def nats_servers(value: str, key: str) -> list[str]:
    """``nats_url`` as a list: one URL or several separated by commas (a cluster)."""
    servers = [part.strip() for part in value.split(",") if part.strip()]
    if not servers:
        _fail(key, "expected a nats:// or tls:// URL (several: comma-separated)")
    for server in servers:
        if _URL.fullmatch(server) is None:
            _fail(key, f"expected a nats://HOST:PORT or tls://HOST:PORT URL, got {server!r}")
    return servers


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to reach NATS: servers, credentials, TLS, and the subjects' prefix."""

    # Server URL(s), nats://HOST:PORT or tls://HOST:PORT, comma-separated for a cluster.
    nats_url: str = ""
    # A NATS .creds file (user JWT and NKey seed); "" for none.
    credentials_file: str = ""
    # A file holding an auth token (one line); "" for none. A file, not the
    # token itself, so the config can be world-readable.
    token_file: str = ""
    # TLS: CA bundle to verify the server with, and a client certificate and key.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Subjects are <subject_prefix>.evidence.<host>.<type> and <subject_prefix>.heads.<host>.
    subject_prefix: str = "tracehound"

    def _check_nats(self, section: str) -> None:
        if _PREFIX.fullmatch(self.subject_prefix) is None:
            _fail(
                f"{section}.subject_prefix",
                "expected 1 to 8 dot-separated tokens of A-Z, a-z, 0-9, _ and -,"
                f" got {self.subject_prefix!r}",
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            _fail(f"{section}.tls_key_file", "expected tls_cert_file and tls_key_file together")
        if self.credentials_file and self.token_file:
            _fail(f"{section}.token_file", "expected credentials_file or token_file, not both")


class FleetConfig(NatsSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[fleet]``: publish the committed log to NATS JetStream (off by default)."""

    # Publish at all (needs nats_url).
    enabled: bool = False
    # This host's name on the fleet; "" for the evidence records' host (thhost).
    host: str = ""
    # Seconds between chain-head messages, 0.5 to 3600.
    heads_interval_s: float = 5.0
    # Records published but not yet acknowledged, at most (1 to 65536).
    max_in_flight: int = 1024

    def __post_init__(self) -> None:
        self._check_nats("fleet")
        if self.enabled or self.nats_url:
            nats_servers(self.nats_url, "fleet.nats_url")
        if not 0.5 <= self.heads_interval_s <= 3600:
            _fail("fleet.heads_interval_s", f"expected 0.5 to 3600, got {self.heads_interval_s}")
        if not 1 <= self.max_in_flight <= 65536:
            _fail("fleet.max_in_flight", f"expected 1 to 65536, got {self.max_in_flight}")


class CollectConfig(NatsSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[collect]``: ``tracehound collect``, from JetStream into PostgreSQL."""

    # PostgreSQL connection string (libpq form or postgresql:// URL).
    dsn: str = ""
    # JetStream stream and durable consumer (made if missing; collectors
    # sharing a durable name share the work).
    stream: str = "TRACEHOUND"
    durable: str = "collector"
    # Records per INSERT, 1 to 65536, and the longest wait to fill one, in ms.
    batch_size: int = 2000
    batch_time_ms: int = 200
    # Batches fetched but not yet written, at most (a slow database makes the
    # collector fetch less, never drop).
    channel_batches: int = 4
    # The stream's duplicate window in seconds (a republished record inside
    # it is dropped by NATS; outside it, by the database's keys).
    duplicate_window_s: float = 120.0
    # Stream limits: oldest messages go first past either (0: unlimited).
    stream_max_age_hours: float = 72.0
    stream_max_mb: float = 0.0
    # Copies of each message the stream keeps across a NATS cluster (1 to 5;
    # 3 on a three-node cluster survives the loss of a node).
    stream_replicas: int = 1
    # Drop a day's partition of records older than this many days (0: keep all).
    retain_days: int = 30
    # Body fields never stored, as dotted paths into the record's body
    # ("data.env"); stripped before the redaction pass.
    never_store: tuple[str, ...] = ()
    # Seal verification keys by host ("thk1-..." as `evidence keygen` prints).
    verify_keys: dict[str, str] = {}
    # HOST:PORT for the collector's /metrics; "" for none.
    metrics_listen: str = "127.0.0.1:9465"
    # Seconds a fetched message may stay unacknowledged before JetStream
    # gives it to another fetch (a collector killed mid-batch delays its batch
    # by this much; a wait on the database renews it), 1 to 3600. Applies
    # when the collector makes the consumer.
    ack_wait_s: float = 15.0
    # Seconds a missing seq may stay missing once a later one is stored
    # before it is a "gap" chain event (another collector may hold it, or
    # JetStream redeliver it: above ack_wait_s), 0 to 86400.
    gap_grace_s: float = 60.0
    # A message larger than this goes to dead_letters unread (1 KiB to 64 MiB).
    max_record_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        self._check_nats("collect")
        if self.nats_url:
            nats_servers(self.nats_url, "collect.nats_url")
        for key, value in (("collect.stream", self.stream), ("collect.durable", self.durable)):
            if _NAME.fullmatch(value) is None:
                _fail(key, f"expected 1 to 64 of A-Z, a-z, 0-9, _ and -, got {value!r}")
        if not 1 <= self.batch_size <= 65536:
            _fail("collect.batch_size", f"expected 1 to 65536, got {self.batch_size}")
        if not 1 <= self.batch_time_ms <= 60_000:
            _fail("collect.batch_time_ms", f"expected 1 to 60000, got {self.batch_time_ms}")
        if not 1 <= self.channel_batches <= 1024:
            _fail("collect.channel_batches", f"expected 1 to 1024, got {self.channel_batches}")
        if not 1 <= self.stream_replicas <= 5:
            _fail("collect.stream_replicas", f"expected 1 to 5, got {self.stream_replicas}")
        if not 1 <= self.ack_wait_s <= 3600:
            _fail("collect.ack_wait_s", f"expected 1 to 3600, got {self.ack_wait_s}")
        if not 0 <= self.gap_grace_s <= 86_400:
            _fail("collect.gap_grace_s", f"expected 0 to 86400, got {self.gap_grace_s}")
        if not 1024 <= self.max_record_bytes <= 1 << 26:
            _fail(
                "collect.max_record_bytes",
                f"expected 1024 to 67108864, got {self.max_record_bytes}",
            )
        if not 0 <= self.retain_days <= 36_600:
            _fail("collect.retain_days", f"expected 0 to 36600, got {self.retain_days}")
