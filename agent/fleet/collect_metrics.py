"""The collector's Prometheus metrics, on ``[collect] metrics_listen``.

    tracehound_collect_records_total                 counter  records written (new rows)
    tracehound_collect_duplicates_total              counter  records already stored (dropped by the keys)
    tracehound_collect_batches_total                 counter  batches committed
    tracehound_collect_batch_seconds                 histogram  a batch's time, sanitising to commit
    tracehound_collect_write_errors_total            counter  failed database writes (each retried)
    tracehound_collect_fetch_errors_total            counter  failed fetches (each retried)
    tracehound_collect_channel_depth                 gauge    batches fetched, not yet written
    tracehound_collect_dead_letters_total{reason}    counter  messages not stored, by reason
    tracehound_collect_unknown_fields_total          counter  unknown top-level record fields dropped
    tracehound_collect_never_store_total             counter  never_store fields stripped
    tracehound_collect_redactions_total              counter  records the redaction pass changed
    tracehound_collect_chain_events_total{kind}      counter  chain events found, by kind

A registry of its own (not the process-global one), served by
prometheus-client's HTTP server in a thread of its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from agent.errors import RunError
from agent.fleet.sanitise import SanitiseStats
from agent.fleet.writer import BatchResult

__all__ = ["CollectMetrics"]


class CollectMetrics:
    """The metric objects; :meth:`batch` moves them after each commit."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("tracehound_collect_records", "records written", registry=r)
        self.duplicates = Counter(
            "tracehound_collect_duplicates", "records already stored", registry=r
        )
        self.batches = Counter("tracehound_collect_batches", "batches committed", registry=r)
        self.batch_seconds = Histogram(
            "tracehound_collect_batch_seconds",
            "batch time, sanitising to commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.write_errors = Counter(
            "tracehound_collect_write_errors", "failed database writes", registry=r
        )
        self.fetch_errors = Counter(
            "tracehound_collect_fetch_errors", "failed fetches from JetStream", registry=r
        )
        self.channel_depth = Gauge(
            "tracehound_collect_channel_depth", "batches fetched, not yet written", registry=r
        )
        self.dead_letters = Counter(
            "tracehound_collect_dead_letters", "messages not stored", ["reason"], registry=r
        )
        self.unknown_fields = Counter(
            "tracehound_collect_unknown_fields", "unknown record fields dropped", registry=r
        )
        self.never_store = Counter(
            "tracehound_collect_never_store", "never_store fields stripped", registry=r
        )
        self.redactions = Counter(
            "tracehound_collect_redactions", "records the redaction pass changed", registry=r
        )
        self.chain_events = Counter(
            "tracehound_collect_chain_events", "chain events found", ["kind"], registry=r
        )
        for kind in ("hash", "link", "gap", "fork", "rollback", "seal"):
            self.chain_events.labels(kind=kind)
        self._seen = SanitiseStats()

    def batch(self, result: BatchResult, seconds: float, stats: SanitiseStats) -> None:
        self.records.inc(result.written)
        self.duplicates.inc(result.duplicates)
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        for event in result.events:
            self.chain_events.labels(kind=event.kind).inc()
        seen = self._seen
        for reason, count in stats.dead_letters.items():
            before = seen.dead_letters.get(reason, 0)
            if count > before:
                self.dead_letters.labels(reason=reason).inc(count - before)
                seen.dead_letters[reason] = count
        self.unknown_fields.inc(stats.unknown_fields - seen.unknown_fields)
        self.never_store.inc(stats.never_store - seen.never_store)
        self.redactions.inc(stats.redacted - seen.redacted)
        seen.unknown_fields, seen.never_store = stats.unknown_fields, stats.never_store
        seen.redacted = stats.redacted

    def serve(self, listen: str) -> None:
        """Serve /metrics on ``HOST:PORT``; RunError naming the key if it cannot bind."""
        host, _, port = listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
        except (OSError, ValueError) as err:
            raise RunError(f"collect.metrics_listen: cannot serve on {listen!r}: {err}") from None
