"""Prometheus metrics: what an operator scrapes from ``tracehound run``.

The names, types and labels are the contract written at the top of
``deploy/alerts.yml`` (the alert rules and the Grafana dashboard use them):

    tracehound_events_total{kind}                  counter  delivered, by kind
    tracehound_events_generated_total{kind}        counter  made by the kernel, by kind
    tracehound_events_lost_total{kind,stage}       counter  stage: kernel, decode, abandoned, sink,
                                                            evidence:map, evidence:store,
                                                            events:encode
    tracehound_kernel_errors_total{error}          counter  kernel-side counts that are no record's loss
    tracehound_queue_depth{queue}                  gauge    items (ring: bytes) waiting
    tracehound_queue_capacity{queue}               gauge    the same queue's capacity
    tracehound_probe_attached{probe,kind}          gauge    1 attached, 0 missing
    tracehound_evidence_records_total              counter  records appended to the log
    tracehound_evidence_unwritten_records_total    counter  events and records the log lost (store failing)
    tracehound_evidence_store_failed               gauge    1 while the store cannot write
    tracehound_evidence_verify_ok                  gauge    1 passed, 0 failed; absent before any verify
    tracehound_evidence_checkpoint_age_seconds     gauge    absent until the source knows an age
    tracehound_evidence_index_rows                 gauge    records the query index holds (absent: none)
    tracehound_evidence_index_lag_records          gauge    log records it does not hold yet
    tracehound_api_responses_total{code}           counter  local API responses, by HTTP status
    tracehound_api_forbidden_total                 counter  API requests refused by peer credentials (403)
    tracehound_api_clients                         gauge    API connections open now
    tracehound_api_sse_dropped_total               counter  live-tail records a slow client's buffer refused
    tracehound_api_produced_total{outcome}         counter  producers' events (POST /v1/events), by outcome
    tracehound_config_reloads_total{result}        counter  SIGHUP reloads: applied, refused
    tracehound_aggregate_evictions_total{what}     counter  evicted to stay in the snapshot's caps:
                                                            processes, files, endpoints, execs, notes
    tracehound_aggregate_held{what}                gauge    held now: processes, live, files,
                                                            endpoints, execs, bytes (estimated)
    tracehound_aggregate_capacity{what}            gauge    the caps of the same (no ``live``)
    tracehound_aggregate_reaped_total              counter  running processes found gone, exit unseen
    tracehound_cache_entries{cache}                gauge    entries a bounded cache holds (redaction
                                                            memos: events, snapshot)
    tracehound_cache_capacity{cache}               gauge    its most entries
    tracehound_cache_bytes{cache}                  gauge    its estimated bytes
    tracehound_cache_evictions_total{cache}        counter  entries it evicted
    tracehound_fleet_published_records_total       counter  records JetStream acknowledged ([fleet])
    tracehound_fleet_duplicate_records_total       counter  of those, ones it already had (sent again)
    tracehound_fleet_publish_errors_total          counter  failed publishes/acks (each: a new connection)
    tracehound_fleet_reconnects_total              counter  connections made after the first
    tracehound_fleet_lost_records_total            counter  records pruned before they were published
    tracehound_fleet_cursor_resets_total           counter  cursor not in the log: published from its start
    tracehound_fleet_bad_lines_total               counter  log lines that are no chain record (unpublishable)
    tracehound_fleet_oversize_records_total        counter  records over NATS's max_payload (not published)
    tracehound_fleet_publisher_starts_total        counter  publisher processes started
    tracehound_fleet_connected                     gauge    1 while connected to NATS
    tracehound_fleet_lag_records                   gauge    log head seq minus the acknowledged cursor
    tracehound_fleet_lag_seconds                   gauge    age of the oldest unacknowledged record
    tracehound_metrics_source_ok{source}           gauge    0 when a source raised during this scrape
    tracehound_build_info{version}                 gauge    always 1

Nothing is stored here: every scrape calls the sources given to
:func:`make_registry` and reports what they say now. A source that is
``None`` contributes nothing; a source that raises contributes nothing for
that scrape and sets ``tracehound_metrics_source_ok{source}`` to 0, so the
rest of the page is still served.

Counters stay monotonic as long as the sources' numbers only grow: the
``sink`` loss stage is the largest drop count of any sink (a maximum of
counters is a counter), not the drops of the sink the ledger calls worst,
which can change from one scrape to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent import __version__
from agent.capture.ledger import KindAccount
from agent.capture.session import CaptureStats
from agent.fleet.status import FleetTotals
from agent.redact.events import MemoStats
from agent.sinks.aggregating import AggregateStatus
from agent.sinks.streaming import StreamingSink

__all__ = [
    "CONTENT_TYPE",
    "ApiStatus",
    "Bounded",
    "EvidenceStatus",
    "MetricsSources",
    "QueueSample",
    "RingReader",
    "TracehoundCollector",
    "make_registry",
    "queue_of",
    "render",
    "ring_queue",
    "sink_queue",
]

#: The Content-Type of :func:`render`'s output: the classic text format, which
#: ``generate_latest`` writes and every Prometheus version reads (what
#: prometheus_client's own server sends when the scraper asks for nothing else).
CONTENT_TYPE: str = "text/plain; version=0.0.4; charset=utf-8"

#: ``(queue name, depth, capacity)``; the ring's are in bytes, others in items.
QueueSample = tuple[str, int, int]


class EvidenceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The evidence log, as the metrics see it.

    ``records``: records appended so far (must only grow).
    ``last_checkpoint_age_seconds``: seconds since the last sealed
    checkpoint, ``None`` if unknown (the gauge is then absent).
    ``verify_ok``: result of the last chain verification, ``None`` if none ran.
    ``unwritten``: events and records the log lost while the store could not write.
    ``failed``: the store cannot write now (it is retried; 0 again once it can).
    ``index_rows`` / ``index_lag_records``: the query index's rows, and the
    log's records it does not hold yet; None without an index (absent).
    """

    records: int
    last_checkpoint_age_seconds: float | None = None
    verify_ok: bool | None = None
    unwritten: int = 0
    failed: bool = False
    index_rows: int | None = None
    index_lag_records: int | None = None


class ApiStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The local API and the reloads, as the metrics see them (counters only grow)."""

    responses: dict[int, int]
    forbidden: int
    clients: int
    sse_dropped: int
    reloads: dict[str, int]
    #: Producers' events by outcome (accepted, forbidden, malformed, unwritten,
    #: rate_limited, table_full).
    produced: dict[str, int] = {}


@dataclass(frozen=True, kw_only=True)
class MetricsSources:
    """Where each scrape reads its numbers. Each is called once per scrape."""

    stats: Callable[[], CaptureStats] | None = None
    queues: Callable[[], Iterable[QueueSample | None]] | None = None
    evidence: Callable[[], EvidenceStatus | None] | None = None
    api: Callable[[], ApiStatus | None] | None = None
    aggregate: Callable[[], AggregateStatus | None] | None = None
    caches: Callable[[], Mapping[str, MemoStats]] | None = None
    fleet: Callable[[], FleetTotals | None] | None = None


def sink_queue(sink: StreamingSink) -> QueueSample:
    """A streaming sink's queue, named ``stream:<sink name>``."""
    return (f"stream:{sink.name}", sink.depth, sink.capacity)


class RingReader(Protocol):
    """What :func:`ring_queue` reads: :class:`agent.capture.drain.Drain`."""

    def ring_depth(self) -> tuple[int, int] | None: ...


def ring_queue(drain: RingReader) -> QueueSample | None:
    """The kernel ring buffer, in bytes, named ``ring_bytes``; None unless draining."""
    depth = drain.ring_depth()
    return None if depth is None else ("ring_bytes", depth[0], depth[1])


class Bounded(Protocol):
    """Anything with a depth and a capacity: the evidence pipeline's
    publisher queue, a streaming sink, an SSE client's buffer."""

    @property
    def depth(self) -> int: ...

    @property
    def capacity(self) -> int: ...


def queue_of(name: str, queue: Bounded) -> QueueSample:
    """``queue``'s depth and capacity, under ``name``."""
    return (name, queue.depth, queue.capacity)


def _sink_lost(account: KindAccount) -> int:
    """Largest drop count of any sink: monotonic, unlike the worst sink's."""
    return max((s.dropped for s in account.sinks.values()), default=account.dropped_sink)


class TracehoundCollector:
    """A prometheus_client collector reading :class:`MetricsSources` live."""

    def __init__(self, sources: MetricsSources, *, version: str = __version__) -> None:
        self.sources = sources
        self.version = version

    def describe(self) -> Iterable[Metric]:
        # Registering must not call the sources (they may not be ready yet).
        return ()

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "tracehound_build_info", "tracehound build; always 1", labels=["version"]
        )
        build.add_metric([self.version], 1)
        yield build

        ok = GaugeMetricFamily(
            "tracehound_metrics_source_ok",
            "0 when reading this source failed during the scrape",
            labels=["source"],
        )
        readers: list[tuple[str, Callable[[], list[Metric]]]] = []
        if (stats := self.sources.stats) is not None:
            readers.append(("stats", lambda: _stats_families(stats())))
        if (queues := self.sources.queues) is not None:
            readers.append(("queues", lambda: _queue_families(queues())))
        if (evidence := self.sources.evidence) is not None:
            readers.append(("evidence", lambda: _evidence_families(evidence())))
        if (api := self.sources.api) is not None:
            readers.append(("api", lambda: _api_families(api())))
        if (aggregate := self.sources.aggregate) is not None:
            readers.append(("aggregate", lambda: _aggregate_families(aggregate())))
        if (caches := self.sources.caches) is not None:
            readers.append(("caches", lambda: _cache_families(caches())))
        if (fleet := self.sources.fleet) is not None:
            readers.append(("fleet", lambda: _fleet_families(fleet())))
        families: list[Metric] = []
        for name, read in readers:
            try:
                families.extend(read())
            except Exception:
                ok.add_metric([name], 0)
            else:
                ok.add_metric([name], 1)
        yield from families
        yield ok


def _stats_families(stats: CaptureStats) -> list[Metric]:
    events = CounterMetricFamily("tracehound_events", "Events delivered, by kind", labels=["kind"])
    generated = CounterMetricFamily(
        "tracehound_events_generated", "Events made by the kernel probes, by kind", labels=["kind"]
    )
    lost = CounterMetricFamily(
        "tracehound_events_lost",
        "Events lost, by kind and stage (kernel: ring buffer or map full; "
        "decode: malformed record; abandoned: received, never given to a sink; sink: dropped by the sink that dropped most; "
        "evidence:map, evidence:store, events:encode: taken from a sink, then failed)",
        labels=["kind", "stage"],
    )
    for kind, account in stats.kinds.items():
        events.add_metric([kind], account.delivered)
        generated.add_metric([kind], account.generated)
        lost.add_metric([kind, "kernel"], account.lost_kernel)
        lost.add_metric([kind, "decode"], account.decode_errors)
        lost.add_metric([kind, "abandoned"], account.abandoned)
        lost.add_metric([kind, "sink"], _sink_lost(account))
    for kind, stages in stats.downstream.items():
        for stage, count in stages.items():
            lost.add_metric([kind, stage], count)
    errors = CounterMetricFamily(
        "tracehound_kernel_errors",
        "Kernel-side counts that are no record's loss (scope_full, exit_status_full, connects_full)",
        labels=["error"],
    )
    for error, count in sorted(stats.errors.items()):
        errors.add_metric([error], count)
    probes = GaugeMetricFamily(
        "tracehound_probe_attached",
        "1 when the probe is attached, 0 when it is missing",
        labels=["probe", "kind"],
    )
    for probe in stats.probes:
        probes.add_metric([probe.name, probe.kind], 1 if probe.attached else 0)
    families: list[Metric] = [events, generated, lost, errors, probes]
    if stats.cache is not None:
        cache = GaugeMetricFamily(
            "tracehound_program_cache",
            "1 for how this start got its BPF programs: hit (the program cache,"
            " no compile), miss (compiled) or off (no cache)",
            labels=["state"],
        )
        for state in ("hit", "miss", "off"):
            cache.add_metric([state], 1 if stats.cache.state == state else 0)
        families.append(cache)
    return [*families, *_fold_families(stats)]


def _fold_families(stats: CaptureStats) -> list[Metric]:
    """The drain's fold table (none when folding is off): repeats held, records
    that stand for several events, the repeats inside them, events passed
    unfolded because the table was full."""
    fold = stats.fold
    if fold is None:
        return []
    held = GaugeMetricFamily(
        "tracehound_fold_pending", "Repeats held to be folded, not yet delivered", labels=["kind"]
    )
    folded = CounterMetricFamily(
        "tracehound_fold_records", "Folded records delivered (count above 1)", labels=["kind"]
    )
    absorbed = CounterMetricFamily(
        "tracehound_fold_absorbed", "Repeats delivered inside folded records", labels=["kind"]
    )
    overflow = CounterMetricFamily(
        "tracehound_fold_overflow",
        "Events passed unfolded because the fold table was full (never lost)",
        labels=["kind"],
    )
    for kind in ("file", "net"):
        held.add_metric([kind], fold.pending.get(kind, 0))
        folded.add_metric([kind], fold.folded.get(kind, 0))
        absorbed.add_metric([kind], fold.absorbed.get(kind, 0))
        overflow.add_metric([kind], fold.overflow.get(kind, 0))
    return [held, folded, absorbed, overflow]


def _queue_families(queues: Iterable[QueueSample | None]) -> list[Metric]:
    depth = GaugeMetricFamily(
        "tracehound_queue_depth", "Items waiting in the queue (ring_bytes: bytes)", labels=["queue"]
    )
    capacity = GaugeMetricFamily(
        "tracehound_queue_capacity", "Capacity of the queue (ring_bytes: bytes)", labels=["queue"]
    )
    seen: set[str] = set()
    for sample in queues:
        if sample is None or sample[0] in seen:
            continue  # a queue not running now; a name given twice keeps the first
        name, items, size = sample
        seen.add(name)
        depth.add_metric([name], items)
        capacity.add_metric([name], size)
    return [depth, capacity]


def _evidence_families(status: EvidenceStatus | None) -> list[Metric]:
    if status is None:
        return []
    records = CounterMetricFamily(
        "tracehound_evidence_records", "Records appended to the evidence log"
    )
    records.add_metric([], status.records)
    unwritten = CounterMetricFamily(
        "tracehound_evidence_unwritten_records",
        "Events and records the evidence log lost while its store could not write",
    )
    unwritten.add_metric([], status.unwritten)
    failed = GaugeMetricFamily(
        "tracehound_evidence_store_failed", "1 while the evidence store cannot write"
    )
    failed.add_metric([], 1 if status.failed else 0)
    out: list[Metric] = [records, unwritten, failed]
    if status.verify_ok is not None:
        verify = GaugeMetricFamily(
            "tracehound_evidence_verify_ok",
            "1 when the last evidence chain verification passed, 0 when it failed",
        )
        verify.add_metric([], 1 if status.verify_ok else 0)
        out.append(verify)
    if status.index_rows is not None:
        rows = GaugeMetricFamily("tracehound_evidence_index_rows", "Records the query index holds")
        rows.add_metric([], status.index_rows)
        out.append(rows)
    if status.index_lag_records is not None:
        lag = GaugeMetricFamily(
            "tracehound_evidence_index_lag_records",
            "Records of the evidence log the query index does not hold yet",
        )
        lag.add_metric([], status.index_lag_records)
        out.append(lag)
    if status.last_checkpoint_age_seconds is not None:
        age = GaugeMetricFamily(
            "tracehound_evidence_checkpoint_age_seconds",
            "Seconds since the last sealed checkpoint",
        )
        age.add_metric([], status.last_checkpoint_age_seconds)
        out.append(age)
    return out


_FLEET_COUNTERS = (
    ("published", "published_records", "Records JetStream acknowledged"),
    ("duplicates", "duplicate_records", "Acknowledged records JetStream already had (sent again)"),
    (
        "errors",
        "publish_errors",
        "Publishes or acknowledgements that failed (each ends the connection)",
    ),
    ("reconnects", "reconnects", "Connections to NATS made after the first"),
    ("lost", "lost_records", "Records pruned from the log before they were published"),
    ("resets", "cursor_resets", "Times the cursor was not in the log and publishing started over"),
    ("bad_lines", "bad_lines", "Log lines that are no chain record (cannot be published)"),
    (
        "oversize",
        "oversize_records",
        "Records larger than the server's max_payload (not published)",
    ),
)


def _fleet_families(totals: FleetTotals | None) -> list[Metric]:
    if totals is None:
        return []
    status = totals.snapshot()
    out: list[Metric] = []
    for field, name, text in _FLEET_COUNTERS:
        counter = CounterMetricFamily(f"tracehound_fleet_{name}", text)
        counter.add_metric([], getattr(status, field))
        out.append(counter)
    starts = CounterMetricFamily(
        "tracehound_fleet_publisher_starts", "Fleet publisher processes the daemon started"
    )
    starts.add_metric([], totals.starts)
    connected = GaugeMetricFamily("tracehound_fleet_connected", "1 while connected to NATS")
    connected.add_metric([], 1 if status.connected else 0)
    lag = GaugeMetricFamily(
        "tracehound_fleet_lag_records", "Newest log seq minus the last acknowledged seq"
    )
    lag.add_metric([], status.lag_records)
    age = GaugeMetricFamily(
        "tracehound_fleet_lag_seconds", "Age of the oldest record not yet acknowledged (0: none)"
    )
    age.add_metric([], status.lag_seconds)
    return [*out, starts, connected, lag, age]


def _api_families(status: ApiStatus | None) -> list[Metric]:
    if status is None:
        return []
    responses = CounterMetricFamily(
        "tracehound_api_responses", "Local API responses, by HTTP status", labels=["code"]
    )
    for code, count in sorted(status.responses.items()):
        responses.add_metric([str(code)], count)
    forbidden = CounterMetricFamily(
        "tracehound_api_forbidden", "API requests refused because of the peer's uid/gid"
    )
    forbidden.add_metric([], status.forbidden)
    clients = GaugeMetricFamily("tracehound_api_clients", "API connections open now")
    clients.add_metric([], status.clients)
    dropped = CounterMetricFamily(
        "tracehound_api_sse_dropped",
        "Live-tail records refused by a slow client's full buffer (the client is told)",
    )
    dropped.add_metric([], status.sse_dropped)
    reloads = CounterMetricFamily(
        "tracehound_config_reloads", "SIGHUP configuration reloads, by result", labels=["result"]
    )
    for result, count in sorted(status.reloads.items()):
        reloads.add_metric([result], count)
    produced = CounterMetricFamily(
        "tracehound_api_produced",
        "Producers' events (POST /v1/events, tracehound mark), by outcome",
        labels=["outcome"],
    )
    for outcome, count in sorted(status.produced.items()):
        produced.add_metric([outcome], count)
    return [responses, forbidden, clients, dropped, reloads, produced]


def _cache_families(caches: Mapping[str, MemoStats]) -> list[Metric]:
    entries = GaugeMetricFamily(
        "tracehound_cache_entries", "Entries a bounded cache holds now", labels=["cache"]
    )
    capacity = GaugeMetricFamily(
        "tracehound_cache_capacity", "Most entries the cache may hold", labels=["cache"]
    )
    size = GaugeMetricFamily(
        "tracehound_cache_bytes", "Estimated bytes the cache holds now", labels=["cache"]
    )
    evictions = CounterMetricFamily(
        "tracehound_cache_evictions", "Entries evicted to stay within the caps", labels=["cache"]
    )
    for name, stats in sorted(caches.items()):
        entries.add_metric([name], stats.entries)
        capacity.add_metric([name], stats.capacity)
        size.add_metric([name], stats.bytes)
        evictions.add_metric([name], stats.evictions)
    return [entries, capacity, size, evictions]


def _aggregate_families(status: AggregateStatus | None) -> list[Metric]:
    if status is None:
        return []
    evictions = CounterMetricFamily(
        "tracehound_aggregate_evictions",
        "Evicted from the snapshot's aggregate to stay within its caps (oldest exited"
        " processes first; records refused when nothing exited is left)",
        labels=["what"],
    )
    for what, count in sorted(status.evictions.items()):
        evictions.add_metric([what], count)
    held = GaugeMetricFamily(
        "tracehound_aggregate_held",
        "What the snapshot's aggregate holds now (bytes: estimated memory)",
        labels=["what"],
    )
    for what, count in sorted(status.held.items()):
        held.add_metric([what], count)
    capacity = GaugeMetricFamily(
        "tracehound_aggregate_capacity",
        "The caps of the snapshot's aggregate (bytes: estimated memory)",
        labels=["what"],
    )
    for what, count in sorted(status.caps.items()):
        capacity.add_metric([what], count)
    reaped = CounterMetricFamily(
        "tracehound_aggregate_reaped",
        "Processes held as running that were found gone, their exit record never seen"
        " (lost in the kernel): retired so they never fill the process cap",
    )
    reaped.add_metric([], status.reaped)
    return [evictions, held, capacity, reaped]


def make_registry(
    sources: MetricsSources, *, version: str = __version__, process: bool = False
) -> CollectorRegistry:
    """A registry of its own (never the global one) with tracehound's
    collector; ``process`` adds prometheus_client's process_* metrics (CPU,
    memory, open fds of this process, read from /proc)."""
    registry = CollectorRegistry()
    registry.register(TracehoundCollector(sources, version=version))
    if process:
        from prometheus_client import ProcessCollector

        ProcessCollector(namespace="", registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (serve with :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
