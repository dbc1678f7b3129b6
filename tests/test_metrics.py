"""agent.metrics: the Prometheus page, parsed back with prometheus_client's parser."""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable
from pathlib import Path

import prometheus_client
import trio
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.api.metrics_server import MetricsServerStats, serve_metrics
from agent.capture.events import KINDS, ExitEvent, ForkEvent
from agent.capture.ledger import Ledger
from agent.capture.loader import CacheReport, ProbeStatus
from agent.capture.session import CaptureStats
from agent.metrics import (
    CONTENT_TYPE,
    EvidenceStatus,
    MetricsSources,
    QueueSample,
    make_registry,
    queue_of,
    render,
    ring_queue,
    sink_queue,
)
from agent.sinks.aggregating import EVICTION_KINDS, AggregatingSink
from agent.sinks.streaming import StreamingSink

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "alerts.yml"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PROBES = [
    ProbeStatus("sched_process_fork", "fork", True),
    ProbeStatus("tcp_connect", "net", False, "kprobe not found"),
]


def fork(i: int) -> ForkEvent:
    return ForkEvent(pid=1, tid=1, ts_ns=i, uid=0, gid=0, cgroup_id=0, comm="p", child_pid=i,
                     clone_flags=0)  # fmt: skip


class World:
    """Real ledger and streaming sink; the kernel's counters by value."""

    def __init__(self) -> None:
        self.sink = StreamingSink(capacity=2, policy="drop", name="evidence")
        self.ledger = Ledger()
        self.kernel: dict[str, tuple[int, int]] = {}
        self.errors: dict[str, int] = {"scope_full": 1}
        self.cache = CacheReport("miss", "no entry", "stored")

    async def produce(self, n: int, lost: int = 0) -> None:
        """``n`` fork events reach the drain and the sink; ``lost`` more never left the kernel."""
        generated, lost_before = self.kernel.get("fork", (0, 0))
        self.kernel["fork"] = (generated + n + lost, lost_before + lost)
        for i in range(n):
            self.ledger.received["fork"] += 1
            await self.sink.record(fork(i))

    def consume(self, n: int) -> None:
        """Take what is queued; it must be ``n`` events."""
        assert len(self.sink.receive_channel.receive_nowait()) == n

    def stats(self) -> CaptureStats:
        books = self.ledger.account(self.kernel, self.sink.accounting())
        return CaptureStats(
            kinds=books,
            probes=PROBES,
            balanced=all(b.balanced for b in books.values()),
            errors=dict(self.errors),
            uptime_s=1.0,
            cache=self.cache,
        )

    def queues(self) -> list[QueueSample | None]:
        return [
            sink_queue(self.sink),
            ("ring_bytes", 4096, 65536),
            ("publisher", 3, 4096),
            None,  # a queue not running now
        ]


def evidence_ok() -> EvidenceStatus:
    return EvidenceStatus(records=7, last_checkpoint_age_seconds=12.5, verify_ok=True)


def sources(
    world: World, evidence: Callable[[], EvidenceStatus | None] = evidence_ok
) -> MetricsSources:
    return MetricsSources(stats=world.stats, queues=world.queues, evidence=evidence)


def scrape(registry: prometheus_client.CollectorRegistry) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, labels) -> value)."""
    text = render(registry).decode("utf-8")
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names_of(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def test_page_from_live_objects() -> None:
    world = World()
    await world.produce(3, lost=2)  # 2 queued, 1 dropped by the full sink
    world.ledger.decode_errors["net"] += 1
    world.ledger.received["net"] += 1
    world.kernel["net"] = (1, 0)
    types, s = scrape(make_registry(sources(world)))

    assert value(s, "tracehound_events_total", kind="fork") == 2
    assert value(s, "tracehound_events_generated_total", kind="fork") == 5
    assert value(s, "tracehound_events_lost_total", kind="fork", stage="kernel") == 2
    assert value(s, "tracehound_events_lost_total", kind="fork", stage="decode") == 0
    assert value(s, "tracehound_events_lost_total", kind="fork", stage="sink") == 1
    assert value(s, "tracehound_events_lost_total", kind="net", stage="decode") == 1
    for kind in KINDS:  # every kind is on the page, zero or not
        assert ("tracehound_events_total", frozenset({("kind", kind)})) in s
        for stage in ("kernel", "decode", "sink"):
            assert (
                "tracehound_events_lost_total",
                frozenset({("kind", kind), ("stage", stage)}),
            ) in s
    assert value(s, "tracehound_kernel_errors_total", error="scope_full") == 1

    assert value(s, "tracehound_queue_depth", queue="stream:evidence") == 2
    assert value(s, "tracehound_queue_capacity", queue="stream:evidence") == 2
    assert value(s, "tracehound_queue_depth", queue="ring_bytes") == 4096
    assert value(s, "tracehound_queue_capacity", queue="ring_bytes") == 65536
    assert value(s, "tracehound_queue_depth", queue="publisher") == 3
    assert value(s, "tracehound_queue_capacity", queue="publisher") == 4096
    depth_labels = {dict(k)["queue"] for n, k in s if n == "tracehound_queue_depth"}
    capacity_labels = {dict(k)["queue"] for n, k in s if n == "tracehound_queue_capacity"}
    assert depth_labels == capacity_labels == {"stream:evidence", "ring_bytes", "publisher"}

    assert value(s, "tracehound_probe_attached", probe="sched_process_fork", kind="fork") == 1
    assert value(s, "tracehound_probe_attached", probe="tcp_connect", kind="net") == 0
    assert value(s, "tracehound_program_cache", state="miss") == 1
    assert value(s, "tracehound_program_cache", state="hit") == 0
    world.cache = CacheReport("hit")
    _, s = scrape(make_registry(sources(world)))
    assert value(s, "tracehound_program_cache", state="hit") == 1
    assert value(s, "tracehound_program_cache", state="miss") == 0

    assert value(s, "tracehound_evidence_records_total") == 7
    assert value(s, "tracehound_evidence_verify_ok") == 1
    assert value(s, "tracehound_evidence_checkpoint_age_seconds") == 12.5
    assert value(s, "tracehound_evidence_unwritten_records_total") == 0
    assert value(s, "tracehound_evidence_store_failed") == 0

    assert value(s, "tracehound_build_info", version=__version__) == 1
    for source in ("stats", "queues", "evidence"):
        assert value(s, "tracehound_metrics_source_ok", source=source) == 1

    assert types["tracehound_events"] == "counter"
    assert types["tracehound_queue_depth"] == "gauge"


def contract() -> dict[str, tuple[str, frozenset[str]]]:
    """The header of deploy/alerts.yml: name -> (type, labels)."""
    rows = re.findall(
        r"^#\s+(tracehound_[a-z_]+)(?:\{([a-z_,]*)\})?\s+(counter|gauge)\b",
        ALERTS.read_text(),
        re.M,
    )
    return {name: (kind, frozenset(filter(None, labels.split(",")))) for name, labels, kind in rows}


async def test_every_name_in_alerts_yml_is_exported_with_its_type_and_labels() -> None:
    from agent.fleet.collect_metrics import CollectMetrics
    from agent.fleet.status import FleetTotals

    world = World()
    await world.produce(1)
    totals = FleetTotals()
    daemon = MetricsSources(
        stats=world.stats, queues=world.queues, evidence=evidence_ok, fleet=lambda: totals
    )
    # The rules read the daemon's /metrics (with a publisher) and the collector's.
    types, s = scrape(make_registry(daemon))
    collector_types, collector_samples = scrape(CollectMetrics().registry)
    types.update(collector_types)
    s.update(collector_samples)
    used = set(re.findall(r"\btracehound_[a-z_]+\b", ALERTS.read_text()))
    assert used, "no metric names found in deploy/alerts.yml"
    assert used <= names_of(s), used - names_of(s)

    table = contract()
    assert set(table) == used  # the header documents every name the rules use
    for name, (kind, labels) in table.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert types[family] == kind, name
        for sample_name, sample_labels in s:
            if sample_name == name:
                assert {k for k, _ in sample_labels} == labels, (name, sample_labels)


async def test_counters_are_monotonic_across_scrapes() -> None:
    world = World()
    records = [5]
    registry = make_registry(
        MetricsSources(
            stats=world.stats,
            queues=world.queues,
            evidence=lambda: EvidenceStatus(records=records[0]),
        )
    )
    await world.produce(4, lost=1)
    types, first = scrape(registry)
    world.consume(2)
    await world.produce(3, lost=2)
    world.ledger.decode_errors["fork"] += 1
    world.ledger.received["fork"] += 1
    world.ledger.abandoned["fork"] += 1
    world.ledger.received["fork"] += 1
    world.errors["scope_full"] += 4
    records[0] += 10
    _, second = scrape(registry)

    counters = {
        k
        for k in first
        if k[0].removesuffix("_total") in types and types[k[0].removesuffix("_total")] == "counter"
    }
    assert counters and counters <= set(second)
    grew = {k for k in counters if second[k] > first[k]}
    assert all(second[k] >= first[k] for k in counters)
    assert ("tracehound_events_total", frozenset({("kind", "fork")})) in grew
    assert (
        "tracehound_events_lost_total",
        frozenset({("kind", "fork"), ("stage", "kernel")}),
    ) in grew
    assert (
        "tracehound_events_lost_total",
        frozenset({("kind", "fork"), ("stage", "decode")}),
    ) in grew
    assert (
        "tracehound_events_lost_total",
        frozenset({("kind", "fork"), ("stage", "abandoned")}),
    ) in grew
    assert (
        "tracehound_events_lost_total",
        frozenset({("kind", "fork"), ("stage", "sink")}),
    ) in grew
    assert ("tracehound_evidence_records_total", frozenset()) in grew
    assert ("tracehound_kernel_errors_total", frozenset({("error", "scope_full")})) in grew


def constant(stats: CaptureStats) -> Callable[[], CaptureStats]:
    return lambda: stats


def test_sink_loss_is_the_largest_drop_so_it_never_goes_down() -> None:
    """The ledger's "worst" sink (fewest delivered) can change between
    scrapes; the sink stage must not follow it down."""
    ledger = Ledger()
    readings = [
        # tee: a has dropped 2 and is the worst (fewest delivered) ...
        (12, {"a": {"exec": (10, 2)}, "b": {"exec": (11, 0)}}),
        # ... then a catches up, b is behind (in flight) and becomes the worst
        (15, {"a": {"exec": (13, 2)}, "b": {"exec": (12, 0)}}),
    ]
    worst, seen = [], []
    for received, sinks in readings:
        ledger.received["exec"] = received
        books = ledger.account({"exec": (received, 0)}, sinks)
        worst.append(books["exec"].dropped_sink)
        stats = CaptureStats(kinds=books, probes=[], balanced=False, errors={}, uptime_s=0.0)
        _, s = scrape(make_registry(MetricsSources(stats=constant(stats))))
        seen.append(value(s, "tracehound_events_lost_total", kind="exec", stage="sink"))
    assert worst == [2, 0]  # the ledger's single-line view goes down ...
    assert seen == [2, 2]  # ... the counter does not


def test_unknown_evidence_facts_are_absent_not_zero() -> None:
    """No verify yet and no checkpoint yet: the alerts must not fire on a made-up 0."""
    _, s = scrape(make_registry(MetricsSources(evidence=lambda: EvidenceStatus(records=0))))
    assert "tracehound_evidence_verify_ok" not in names_of(s)
    assert "tracehound_evidence_checkpoint_age_seconds" not in names_of(s)
    assert value(s, "tracehound_evidence_records_total") == 0

    failing = EvidenceStatus(records=3, verify_ok=False, unwritten=4, failed=True)
    _, s = scrape(make_registry(MetricsSources(evidence=lambda: failing)))
    assert value(s, "tracehound_evidence_verify_ok") == 0
    assert value(s, "tracehound_evidence_unwritten_records_total") == 4
    assert value(s, "tracehound_evidence_store_failed") == 1

    _, s = scrape(make_registry(MetricsSources(evidence=lambda: None)))
    assert not any(n.startswith("tracehound_evidence_") for n in names_of(s))


def test_no_sources_still_serves_build_info() -> None:
    _, s = scrape(make_registry(MetricsSources(), version="9.9.9"))
    assert s == {("tracehound_build_info", frozenset({("version", "9.9.9")})): 1.0}


def test_a_failing_source_does_not_take_the_page_down() -> None:
    def broken() -> CaptureStats:
        raise OSError("bpf map gone")

    registry = make_registry(
        MetricsSources(stats=broken, queues=lambda: [("publisher", 1, 8)], evidence=evidence_ok)
    )
    _, s = scrape(registry)
    assert value(s, "tracehound_metrics_source_ok", source="stats") == 0
    assert value(s, "tracehound_metrics_source_ok", source="queues") == 1
    assert value(s, "tracehound_queue_depth", queue="publisher") == 1
    assert value(s, "tracehound_evidence_verify_ok") == 1
    assert "tracehound_events_total" not in names_of(s)


def test_registry_is_private_and_sources_are_read_per_scrape() -> None:
    calls = []

    def queues() -> list[QueueSample]:
        calls.append(1)
        return [("publisher", len(calls), 8)]

    registry = make_registry(MetricsSources(queues=queues))
    assert calls == []  # registering reads nothing
    assert value(scrape(registry)[1], "tracehound_queue_depth", queue="publisher") == 1
    assert value(scrape(registry)[1], "tracehound_queue_depth", queue="publisher") == 2
    assert b"tracehound_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    make_registry(MetricsSources(queues=queues))  # a second one registers without clashing


def test_queue_helpers_and_duplicates() -> None:
    sink = StreamingSink(capacity=5, name="sse:client-1")
    assert sink_queue(sink) == ("stream:sse:client-1", 0, 5)
    assert queue_of("sse:client-1", sink) == ("sse:client-1", 0, 5)

    class Ring:  # stands in for a Drain: only ring_depth is read
        def __init__(self, depth: tuple[int, int] | None) -> None:
            self.depth = depth

        def ring_depth(self) -> tuple[int, int] | None:
            return self.depth

    assert ring_queue(Ring((100, 4096))) == ("ring_bytes", 100, 4096)
    assert ring_queue(Ring(None)) is None

    _, s = scrape(make_registry(MetricsSources(queues=lambda: [("q", 1, 2), ("q", 9, 9)])))
    assert value(s, "tracehound_queue_depth", queue="q") == 1


def test_label_values_are_escaped() -> None:
    odd = 'sse:a"b\\c\nd'
    _, s = scrape(make_registry(MetricsSources(queues=lambda: [(odd, 1, 2)])))
    assert value(s, "tracehound_queue_depth", queue=odd) == 1


def test_process_metrics_and_content_type() -> None:
    _, s = scrape(make_registry(MetricsSources(), process=True))
    assert "process_resident_memory_bytes" in names_of(s)


async def test_the_endpoint_serves_the_exposition_with_its_content_type() -> None:
    """Over a real socket: 200 with CONTENT_TYPE and a body Prometheus'
    parser reads; another path is 404; the server's counters say so."""
    registry = make_registry(MetricsSources(), process=True)
    stats = MetricsServerStats()

    async def ask(port: int, path: str) -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
        return reply

    async with trio.open_nursery() as nursery:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        await nursery.start(
            functools.partial(serve_metrics, stats=stats), registry, "127.0.0.1", port
        )
        reply = await ask(port, "/metrics")
        missing = await ask(port, "/other")
        nursery.cancel_scope.cancel()
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert f"Content-Type: {CONTENT_TYPE}" in lines
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "process_resident_memory_bytes" in families
    assert missing.startswith(b"HTTP/1.1 404 ")
    assert (stats.served, stats.rejected, stats.refused) == (1, 1, 0)


def exit_event(pid: int) -> ExitEvent:
    return ExitEvent(pid=pid, tid=pid, ts_ns=pid, uid=0, gid=0, cgroup_id=0, comm="p",
                     exit_code=0, signal=0, have_code=True, have_signal=False)  # fmt: skip


def test_aggregate_caps_held_and_evictions_from_the_live_sink() -> None:
    sink = AggregatingSink(max_processes=3, max_bytes=1 << 20)
    registry = make_registry(MetricsSources(aggregate=sink.status))
    for i in range(2, 7):  # children of 1 that exit: the oldest go to make room
        sink.apply(fork(i))
        sink.apply(exit_event(i))
    types, first = scrape(registry)
    assert types["tracehound_aggregate_evictions"] == "counter"
    assert types["tracehound_aggregate_held"] == types["tracehound_aggregate_capacity"] == "gauge"
    status = sink.status()
    assert status.evictions["processes"] == 3  # 5 children, 1 parent, 3 held
    for what in EVICTION_KINDS:
        assert (
            value(first, "tracehound_aggregate_evictions_total", what=what)
            == (status.evictions[what])
        )
    for what, held in status.held.items():
        assert value(first, "tracehound_aggregate_held", what=what) == held
    assert value(first, "tracehound_aggregate_held", what="processes") == 3
    assert value(first, "tracehound_aggregate_capacity", what="processes") == 3
    assert value(first, "tracehound_aggregate_capacity", what="bytes") == 1 << 20
    assert value(first, "tracehound_metrics_source_ok", source="aggregate") == 1
    assert value(first, "tracehound_aggregate_reaped_total") == 0
    sink.apply(fork(9))
    sink.reap([(9, 9)], now_ns=10)
    _, second = scrape(registry)
    assert value(second, "tracehound_aggregate_evictions_total", what="processes") == 4
    assert value(second, "tracehound_aggregate_reaped_total") == 1
