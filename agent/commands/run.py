"""``tracehound run``: host-wide capture in the foreground.

One trio nursery holds the capture session (drain, syscall poller, stats
line), the /proc seeding, the optional event stream writer and the signal
watcher. SIGINT or SIGTERM: detach, deliver everything in flight, write the
final stats, exit 0.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry

from agent import failpoints, notify
from agent.api.app import DaemonApi
from agent.api.live import LiveTail
from agent.api.metrics_server import serve_metrics
from agent.api.server import ApiServerStats, bind_socket, group_id, serve_api
from agent.capture.cgroups import CgroupResolver, resolve_periodically
from agent.capture.events import event_count, kind_of
from agent.capture.ledger import DownstreamLosses
from agent.capture.loader import LoadedCapture, check_privileges, load
from agent.capture.procfs import ProcessInfoCache, gone_processes, seed_processes
from agent.capture.session import CaptureSession
from agent.commands.arguments import bounded_float, bounded_int
from agent.commands.evidence_wiring import (
    add_evidence_arguments,
    check_evidence_arguments,
    evidence_directory,
    evidence_source,
    open_evidence,
    redactor_from_args,
    store_options,
)
from agent.commands.metrics_address import (
    check_metrics_address,
    metrics_bind_problem,
    raise_or_warn,
)
from agent.commands.options import add_capture_arguments, fold_from_args, load_options_from_args
from agent.config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    EvidenceConfig,
    apply_defaults,
    dump_config,
    load_config,
)
from agent.config.reload import plan_reload
from agent.config.schema import DEFAULT_EVIDENCE_DIR, default_evidence_dir
from agent.errors import RunError, UsageError, shown
from agent.evidence.worker import EvidenceWorker, WorkerProcess
from agent.evidence.worker import spawn as spawn_worker
from agent.failpoints import Failpoints
from agent.fleet.nats_options import NatsSetupError, connect_options
from agent.fleet.publisher_process import keep_publishing
from agent.fleet.status import FleetTotals
from agent.limits import MAX_DURATION_S, MAX_SEGMENT_MB, MAX_STATS_INTERVAL_S, MAX_STREAM_CAPACITY
from agent.memory import TRIM_EVERY_S, release_free_memory
from agent.metrics import (
    ApiStatus,
    EvidenceStatus,
    MetricsSources,
    QueueSample,
    make_registry,
    queue_of,
    ring_queue,
)
from agent.output_rotation import Rotation, open_rotating_stream
from agent.output_target import (
    OutputError,
    OutputTarget,
    check_output,
    write_output,
)
from agent.query.follower_process import keep_index
from agent.query.index_db import index_status
from agent.redact import Redactor
from agent.redact.events import MemoStats, rules_summary
from agent.runtime import Runtime
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.event_lines import EventLines
from agent.sinks.profile import Profile, encode_profile
from agent.sinks.redacted_profile import ProfileRedactor
from agent.sinks.streaming import StreamingSink
from agent.wallclock import measure_boot_offset

#: The daemon verifies its own log this long after start, then this often;
#: the result is ``tracehound_evidence_verify_ok``. Each run reads the whole
#: log in a worker thread (about 40 MiB/s here: a full 1 GiB retention is
#: ~25 s of one CPU), so not more often than that.
FIRST_VERIFY_S = 10.0
VERIFY_EVERY_S = 900.0
#: This often the daemon looks in /proc for processes the snapshot holds as
#: running; one gone at two looks in a row (its exit record lost) is retired.
REAP_EVERY_S = 30.0

#: ``run``'s exit status when the evidence log lost events because its store
#: could not write (disk full, I/O error): the capture ran, the record has a
#: counted hole. 1 and 2 mean the command failed or was misused.
EXIT_EVIDENCE_LOST = 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="capture host-wide until interrupted",
        description="Capture exec, file, network and syscall activity host-wide.",
    )
    # The defaults are the schema's; the help only quotes them.
    builtin = Config(evidence=EvidenceConfig(state_dir=DEFAULT_EVIDENCE_DIR))
    parser.add_argument("--stats-interval", metavar="SECONDS",
                        type=bounded_float(0, MAX_STATS_INTERVAL_S, unit="seconds"),
                        help=f"print a stats line this often, 0 (never) to {MAX_STATS_INTERVAL_S}"
                             f" (default {builtin.capture.stats_interval:g})")  # fmt: skip
    parser.add_argument("--stats-file", metavar="FILE",
                        help="on exit, write the final stats (per-kind accounting, probes) as JSON")  # fmt: skip
    parser.add_argument("--ready-file", metavar="FILE",
                        help="create FILE once the probes are attached and draining")  # fmt: skip
    parser.add_argument("--profile-file", metavar="FILE",
                        help="on exit, write the aggregated profile as JSON")  # fmt: skip
    parser.add_argument("--events", metavar="FILE",
                        help="also stream every event as NDJSON to FILE (through the streaming sink)")  # fmt: skip
    parser.add_argument("--events-max-size-mb", metavar="MB", type=bounded_float(0, MAX_SEGMENT_MB, unit="MiB"),
                        default=10.0, dest="events_max_size_mb",
                        help="rotate the --events file at this size, as Tetragon's export: FILE"
                             f" becomes FILE.1 and so on; 0 never rotates, at most {MAX_SEGMENT_MB}"
                             " (default 10)")  # fmt: skip
    parser.add_argument("--events-max-backups", metavar="N", type=bounded_int(0, 1000),
                        default=5, dest="events_max_backups",
                        help="rotated --events files kept (FILE.1 newest), 0 to 1000 (default 5)")  # fmt: skip
    parser.add_argument("--stream-capacity", metavar="N",
                        type=bounded_int(1, MAX_STREAM_CAPACITY),
                        help=f"streaming sink capacity in events, 1 to {MAX_STREAM_CAPACITY}"
                             f" (default {builtin.stream.capacity})")  # fmt: skip
    parser.add_argument("--stream-policy", choices=("block", "drop"),
                        help="when the stream is full: block (backpressure) or drop (counted;"
                             f" default {builtin.stream.policy})")  # fmt: skip
    parser.add_argument("--duration", metavar="SECONDS",
                        type=bounded_float(0, MAX_DURATION_S, above=True, unit="seconds"),
                        help=f"stop by itself after this long, above 0, at most {MAX_DURATION_S}"
                             " (a year)")  # fmt: skip
    parser.add_argument("--no-seed", action="store_true",
                        help="do not seed already-running processes from /proc")  # fmt: skip
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default /etc/tracehound/tracehound.toml if it"
                             " exists); options given here win over it")  # fmt: skip
    add_capture_arguments(parser)
    add_evidence_arguments(parser, what="every event", default_on=True)
    parser.set_defaults(handler=main)


def _check_fleet(config: Config, evidence_dir: Path | None) -> None:
    """``[fleet] enabled`` needs a log to publish and files it can read: one
    line at start (fail closed), not a publisher that exits every few seconds.
    Whether NATS answers is not checked: that is delivery, retried."""
    if evidence_dir is None:
        raise ConfigError(
            "fleet.enabled: expected [evidence] enabled too (the fleet publishes the evidence log)"
        )
    try:
        connect_options(config.fleet, "fleet")
    except NatsSetupError as err:
        raise ConfigError(str(err)) from None


def main(args: argparse.Namespace) -> int:
    config_path = Path(args.config) if args.config else None
    default_evidence_dir()  # raises ConfigError naming the variable, not the file
    try:
        config = load_config(config_path)
    except ConfigError as err:  # the daemon's stderr is the journal: no values there
        raise ConfigError(_value_free(str(err), shown(config_path or DEFAULT_PATH))) from None
    as_given = copy.copy(args)  # before the file fills it in: what a reload re-applies to
    from_file = apply_defaults(args, config)
    api_gid = group_id(config.api.group) if config.api.enabled else None
    stats_file = check_output("--stats-file", args.stats_file)
    profile_file = check_output("--profile-file", args.profile_file)
    events_file = check_output("--events", args.events)
    ready_file = check_output("--ready-file", args.ready_file)
    check_evidence_arguments(args)
    redactor = redactor_from_args(args) if args.redact_rules else config.evidence.redactor()
    options = load_options_from_args(args, scoped=False)
    faults = failpoints.from_environment()
    config_file = str(config_path or DEFAULT_PATH) if "evidence" in from_file else None
    source = evidence_source(args.evidence, config_file) if args.evidence else ""
    # Before the state directory is made: on its defaults, run makes one in
    # /var/lib, and a user without root must hear what is really wrong.
    check_privileges()
    if config.metrics.enabled:  # in use: said now, not after the BPF compile
        check_metrics_address(config.metrics)
    evidence_dir = evidence_directory(args.evidence, source, gid=api_gid)
    if config.fleet.enabled:
        _check_fleet(config, evidence_dir)
    # Started before the BPF compile, so its interpreter start overlaps it.
    worker = spawn_worker() if evidence_dir is not None else None
    try:
        capture = load(options)
    except BaseException:
        if worker is not None:
            worker.close()
        raise
    try:
        return trio.run(
            _run,
            capture,
            args,
            _Outputs(stats_file, profile_file, events_file, ready_file),
            evidence_dir,
            worker,
            source,
            _Settings(
                config=config,
                path=config_path,
                as_given=as_given,
                api_gid=api_gid,
                redactor=redactor,
                faults=faults,
            ),
        )
    finally:
        if worker is not None:
            worker.close()
        capture.close()


class _Outputs:
    """The output options, as checked before capture started."""

    def __init__(
        self,
        stats: OutputTarget | None,
        profile: OutputTarget | None,
        events: OutputTarget | None,
        ready: OutputTarget | None,
    ) -> None:
        self.stats = stats
        self.profile = profile
        self.events = events
        self.ready = ready


class _Settings:
    """The running configuration, which a SIGHUP reload may replace."""

    def __init__(
        self,
        *,
        config: Config,
        path: Path | None,
        as_given: argparse.Namespace,
        api_gid: int | None,
        redactor: Redactor,
        faults: Failpoints,
    ) -> None:
        self.config = config
        self.path = path
        self.as_given = as_given
        self.api_gid = api_gid
        #: The redaction rules every output applies now (a reload replaces it).
        self.redactor = redactor
        #: Fault injection for tests (TRACEHOUND_FAILPOINTS); none by default.
        self.faults = faults
        self.generation = 1
        self.reloads = {"applied": 0, "refused": 0}
        self.last_reload_error: str | None = None

    def info(self) -> dict[str, Any]:
        return {
            "file": str(self.path) if self.path else None,
            "generation": self.generation,
            "reloads": dict(self.reloads),
            "last_reload_error": self.last_reload_error,
        }


def _queues(
    session: CaptureSession,
    evidence_stream: StreamingSink | None,
    pipeline: EvidenceWorker | None,
    tail: LiveTail,
) -> list[QueueSample | None]:
    """Every bounded queue now: the ring, the streaming sinks, the mapper's
    input, the publisher's, and all SSE clients' buffers together."""
    out: list[QueueSample | None] = [ring_queue(session.drain)]
    if evidence_stream is not None:
        out.append(queue_of(f"stream:{evidence_stream.name}", evidence_stream))
    if pipeline is not None:
        out.append(queue_of("publisher", pipeline))
    clients = tail.clients
    out.append(
        (
            "sse_clients",
            sum(len(c.buffer) for c in clients),
            sum(c.buffer.capacity for c in clients),
        )
    )
    return out


def _metrics_sources(
    session: CaptureSession,
    queues: Callable[[], list[QueueSample | None]],
    pipeline: EvidenceWorker | None,
    api: DaemonApi,
    server_stats: ApiServerStats,
    settings: _Settings,
    fleet: FleetTotals | None,
) -> MetricsSources:
    def evidence() -> EvidenceStatus | None:
        if pipeline is None:
            return None
        index = (
            index_status(api.state_dir)
            if settings.config.evidence.index and api.state_dir is not None
            else None
        )
        return EvidenceStatus(
            index_rows=None if index is None else index.rows,
            index_lag_records=None if index is None else index.lag_records,
            records=pipeline.published,
            last_checkpoint_age_seconds=pipeline.checkpoint_age_s,
            verify_ok=None if api.last_verify is None else api.last_verify.ok,
            unwritten=pipeline.unwritten,
            failed=pipeline.failed is not None,
        )

    def api_status() -> ApiStatus:
        return ApiStatus(
            responses=dict(server_stats.responses),
            forbidden=server_stats.forbidden,
            clients=server_stats.active,
            sse_dropped=api.tail.dropped,
            reloads=dict(settings.reloads),
            produced=server_stats.producer_outcomes(),
        )

    return MetricsSources(
        stats=session.stats,
        queues=queues,
        evidence=evidence,
        api=api_status,
        aggregate=api.aggregate.status,
        caches=api.caches,
        fleet=None if fleet is None else lambda: fleet,
    )


async def _start_metrics(
    nursery: trio.Nursery, config: Config, registry: CollectorRegistry
) -> None:
    """Serve /metrics. A port that cannot be bound stops the start with one
    line (``metrics.required``, the default: an operator who configured a
    scrape must not find out from a dashboard gone flat), or, with
    ``required = false``, costs the metrics only, never the capture, and
    says so."""
    host, port = config.metrics.address
    try:
        await nursery.start(serve_metrics, registry, host, port)
    except OSError as err:
        raise_or_warn(metrics_bind_problem(config.metrics, err), config.metrics.required, _say)
    else:
        _say(f"metrics on http://{config.metrics.listen}/metrics")


async def _start_api(
    nursery: trio.Nursery, settings: _Settings, api: DaemonApi, stats: ApiServerStats
) -> None:
    """Serve the local API; a socket that cannot be made costs the API, never
    the capture (fail safe), and says so."""
    config = settings.config.api
    path = Path(config.socket)
    try:
        sock = bind_socket(path, config.mode_bits, settings.api_gid)
    except OSError as err:
        _say(f"api: cannot serve on {path} ({err.strerror or err}); going on without")
        return
    await nursery.start(
        functools.partial(serve_api, stats=stats), lambda: settings.config.api, api, sock, path
    )
    _say(f"api on {path} (mode {config.mode}{', group ' + config.group if config.group else ''})")


async def _verify_periodically(api: DaemonApi) -> None:
    await trio.sleep(FIRST_VERIFY_S)
    while True:
        try:
            result = await api.verify()
        except Exception as err:  # e.g. a segment pruned mid-read: next time
            _say(f"evidence: periodic verify could not run: {err}")
        else:
            if not result.ok:
                _say(f"evidence: VERIFY FAILED: {result.summary.splitlines()[0]}")
        await trio.sleep(VERIFY_EVERY_S)


async def _reap_periodically(aggregate: AggregatingSink, interval: float = REAP_EVERY_S) -> None:
    """Retire the processes whose exit was lost, so they never fill the
    snapshot's process cap. Gone twice in a row, not once: an exit record
    may still be in the ring buffer at the first look."""
    suspects: set[tuple[int, int | None]] = set()
    while True:
        await trio.sleep(interval)
        gone = set(await trio.to_thread.run_sync(gone_processes, aggregate.running()))
        twice = sorted(gone & suspects, key=lambda g: (g[0], g[1] or 0))
        aggregate.reap(twice, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        suspects = gone - set(twice)


def cgroup_cache(cgroups: CgroupResolver) -> MemoStats:
    """The cgroup resolver's cache as the caches' stats and metrics show them."""
    stats = cgroups.stats()
    return MemoStats(
        entries=stats.entries, capacity=stats.capacity, bytes=stats.bytes,
        max_bytes=stats.max_bytes, hits=stats.hits,
        misses=stats.misses, evictions=stats.evictions,
    )  # fmt: skip


async def _reload(settings: _Settings, pipeline: EvidenceWorker | None) -> None:
    """SIGHUP: read the file again; apply it, or keep what runs and say why.

    Either way the outcome goes into the evidence as a ``capture.config``
    record, so the log shows which rules applied to which records.
    """
    source = shown(settings.path) if settings.path else "built-in defaults"
    restart: list[str] = []
    try:
        new = load_config(settings.path)
        plan = plan_reload(settings.config, new)
        if plan.refusal is not None:
            restart = plan.restart
            raise ConfigError(f"{source}: {plan.refusal}")
        effective = copy.copy(settings.as_given)
        apply_defaults(effective, new)
        check_evidence_arguments(effective)
        redactor = redactor_from_args(effective) if effective.redact_rules else None
        if redactor is None and "evidence.redact_rules" in plan.changed:
            redactor = new.evidence.redactor()
    except UsageError as err:  # ConfigError is one
        # Where it went wrong, never the value: a refused value may be a
        # secret pasted into the wrong key, and this line goes to the
        # journal, /v1/stats and the evidence. `config check` shows it.
        keys = restart or [_refused_key(str(err), source)]
        why = "needs a restart" if restart else "invalid"
        reason = str(err) if restart else _value_free(str(err), source)
        settings.reloads["refused"] += 1
        settings.last_reload_error = reason
        _say(f"SIGHUP: reload refused, the running configuration stays: {reason}")
        if pipeline is not None:
            await pipeline.reconfigure({"reload": "refused", "keys": keys, "why": why})
        return
    options = store_options(effective)
    if pipeline is not None:
        rules = redactor if redactor is not None else settings.redactor
        record = {
            "reload": "applied",
            "generation": settings.generation + 1,
            "changed": plan.changed,
            # As TOML text (the evidence takes no floats), without the
            # redaction patterns: "redaction" names them by digest.
            "config": dump_config(msgspec.structs.replace(
                new, evidence=msgspec.structs.replace(new.evidence, redact_rules=()))),
            "redaction": rules_summary(rules),
        }  # fmt: skip
        await pipeline.reconfigure(record, redactor, options)
    if redactor is not None:
        settings.redactor = redactor
    settings.config = new
    settings.generation += 1
    settings.reloads["applied"] += 1
    settings.last_reload_error = None
    changed = ", ".join(plan.changed) or "nothing changed"
    _say(f"SIGHUP: configuration reloaded (generation {settings.generation}): {changed}")


def _value_free(message: str, source: str) -> str:
    """A configuration error without the value it refused (``..., got X``):
    a value may be a secret pasted into the wrong key, and the daemon's
    messages go to the journal and /v1/stats. ``config check`` shows it."""
    head, sep, _ = message.partition(", got ")
    if not sep:
        return message
    return f"{head} (the value is not shown here: tracehound config check {source} shows it)"


def _refused_key(message: str, source: str) -> str:
    """The dotted key (or ``line N``) a configuration error names, from its
    ``SOURCE: KEY: problem`` form; ``unknown`` when it names none."""
    rest = message.removeprefix(f"{source}: ")
    key = rest.split(": ", 1)[0]
    return key if _CONFIG_KEY.fullmatch(key) else "unknown"


_CONFIG_KEY = re.compile(r'line \d+|[a-z_]+(?:\.[a-z_]+|\[\d+\]|\."[A-Za-z0-9_.]+")*')


def _report(line: str) -> None:
    _say(line)
    notify.status(line)


async def _watchdog(session: CaptureSession, interval: float) -> None:
    """Ping systemd's watchdog while the drain makes progress: a stuck drain
    (not just a live event loop) gets the service restarted."""
    last = -1
    while True:
        passes = session.drain.passes
        if passes != last:
            notify.watchdog()
            last = passes
        await trio.sleep(interval)


async def _release_memory_periodically() -> None:
    """Return freed heap pages to the system once a minute (agent.memory)."""
    while True:
        await trio.sleep(TRIM_EVERY_S)
        await trio.to_thread.run_sync(release_free_memory)


def _say(line: str) -> None:
    print(f"tracehound: {line}", file=sys.stderr, flush=True)


async def _write_events(
    stream: StreamingSink,
    target: OutputTarget,
    lines: EventLines,
    losses: DownstreamLosses,
    rotation: Rotation,
) -> None:
    """The stream's consumer: NDJSON, redacted and escaped (EventLines),
    written in batches in a worker thread.

    An event that cannot be encoded is counted (stage ``events:encode``) and
    skipped. Opening (a FIFO waits for its reader) and writing run in
    threads. A target that fails (changed since checked, disk full, I/O
    error, the FIFO's reader gone) ends the consumer, never the capture:
    what it held and what was queued for it is counted (``events:write``),
    and the stream then counts every later event as dropped (fail safe on
    delivery), so the stats say so.
    """
    held: Counter[str] = Counter()  # kinds of the events in the buffer
    try:
        out = await trio.to_thread.run_sync(open_rotating_stream, target, rotation)
        try:
            buffer = bytearray()
            async for batch in stream.receive_channel:
                for event in batch:
                    try:
                        buffer += lines.line(event)
                    except Exception:  # one record must not end the stream
                        losses.count(kind_of(event), "events:encode", event_count(event))
                        continue
                    held[kind_of(event)] += event_count(event)
                if len(buffer) >= 1 << 16 or not stream.depth:
                    await trio.to_thread.run_sync(out.write, bytes(buffer))
                    buffer.clear()
                    held.clear()
            if buffer:
                await trio.to_thread.run_sync(out.write, bytes(buffer))
                held.clear()
        finally:
            await trio.to_thread.run_sync(out.close)
    except (OutputError, BrokenPipeError) as err:
        why = f"{target.label}: the reader went away" if isinstance(err, BrokenPipeError) else err
        _say(f"{why}; what was not written and later events are counted as lost")
        for kind, n in held.items():
            losses.count(kind, "events:write", n)
        while True:  # taken from the sink already: lost here, not dropped there
            try:
                for event in stream.receive_channel.receive_nowait():
                    losses.count(kind_of(event), "events:write", event_count(event))
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        await stream.receive_channel.aclose()


async def _run(
    capture: LoadedCapture,
    args: argparse.Namespace,
    outputs: _Outputs,
    evidence_dir: Path | None,
    worker: WorkerProcess | None,
    source: str,
    settings: _Settings,
) -> int:
    config = settings.config
    cgroups = CgroupResolver()
    aggregate = AggregatingSink.for_daemon(cgroups, boot_offset_ns=measure_boot_offset())
    event_lines = EventLines(lambda: settings.redactor, settings.faults)

    async def write_events(stream: StreamingSink) -> None:
        assert outputs.events is not None
        rotation = Rotation(int(args.events_max_size_mb * 2**20), args.events_max_backups)
        await _write_events(
            stream, outputs.events, event_lines, runtime.session.ledger.downstream, rotation
        )

    def open_log(stream: StreamingSink, session: CaptureSession) -> EvidenceWorker:
        assert evidence_dir is not None and worker is not None
        return open_evidence(
            evidence_dir, stream, session, capture, args, settings.redactor, worker,
            source=source, group=settings.api_gid,
        )  # fmt: skip

    runtime = Runtime(
        capture,
        aggregate,
        stream_capacity=args.stream_capacity,
        stream_policy=args.stream_policy,
        events=write_events if outputs.events is not None else None,
        evidence=open_log if evidence_dir is not None else None,
        stats_interval=args.stats_interval or None,
        report=_report,
        fold=fold_from_args(args),
    )
    session, pipeline, stream = runtime.session, runtime.pipeline, runtime.events_stream
    attached = sum(1 for s in capture.statuses if s.attached)
    if attached == 0:
        # Running blind must fail, so a supervisor restarts and alerts fire.
        raise RunError("no probe attached: nothing can be captured (see the reasons above)")
    for status in capture.statuses:
        if not status.attached:
            _say(f"probe {status.name} missing: {status.reason}")
    tail = LiveTail()
    server_stats = ApiServerStats()
    present = ProfileRedactor(lambda: settings.redactor)
    if pipeline is not None:
        pipeline.on_published = tail.publish

    def caches() -> dict[str, MemoStats]:
        """Every bounded cache (the redaction memos), for stats and metrics."""
        found = {"redact:snapshot": present.memo_stats(), "cgroups:snapshot": cgroup_cache(cgroups)}
        if pipeline is not None:
            found["redact:evidence"] = pipeline.memo_stats()
        if stream is not None:
            found["redact:events"] = event_lines.memo_stats()
        return {name: stats for name, stats in found.items() if stats is not None}

    def queues() -> list[QueueSample | None]:
        return _queues(session, runtime.evidence_stream, pipeline, tail)

    api = DaemonApi(
        aggregate=aggregate,
        session=session,
        pipeline=pipeline,
        state_dir=evidence_dir if pipeline is not None else None,
        tail=tail,
        registry=None,
        server_stats=server_stats,
        sse_buffer=config.api.sse_buffer,
        queues=queues,
        config_info=settings.info,
        present=present,
        caches=caches,
    )
    # The fleet publisher is a process of its own (asyncio + nats-py): see
    # agent.fleet.publisher_process; only its status lines reach this process.
    fleet = FleetTotals() if config.fleet.enabled and evidence_dir is not None else None
    registry = make_registry(
        _metrics_sources(session, queues, pipeline, api, server_stats, settings, fleet),
        process=True,
    )
    if config.metrics.enabled:
        api.registry = registry
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    with trio.open_signal_receiver(*stop_signals, signal.SIGHUP) as signals:
        # Tasks that live until capture stops: one nursery, cancelled at the
        # stop signal (stopping must not wait on them), inside the runtime.
        async with runtime.running(), trio.open_nursery() as helpers:
            if pipeline is not None and pipeline.sealed is False:
                _say(
                    f"evidence: {evidence_dir} has no sealing key: the log is chained, not"
                    f" sealed (tracehound evidence keygen --state-dir {evidence_dir} > verify.key)"
                )
            if config.api.enabled:
                await _start_api(helpers, settings, api, server_stats)
            if not args.no_seed:
                cache = ProcessInfoCache()
                for seen in await trio.to_thread.run_sync(seed_processes, cache):
                    await runtime.sink.record(seen)
            if outputs.ready is not None:
                # In a thread: a FIFO's open waits for its reader.
                ready = f"{os.getpid()}\n".encode()
                await trio.to_thread.run_sync(write_output, outputs.ready, ready)
            if config.metrics.enabled:
                await _start_metrics(helpers, config, registry)
            if pipeline is not None:
                helpers.start_soon(_verify_periodically, api)
            if pipeline is not None and evidence_dir is not None and config.evidence.index:
                helpers.start_soon(keep_index, evidence_dir)
            if fleet is not None and evidence_dir is not None:
                config_file = settings.path or Path(DEFAULT_PATH)
                helpers.start_soon(keep_publishing, config_file, evidence_dir, fleet)
            helpers.start_soon(_release_memory_periodically)
            helpers.start_soon(_reap_periodically, aggregate)
            helpers.start_soon(resolve_periodically, aggregate.resolve_cgroups)
            _say(f"capturing host-wide: {attached}/{len(capture.statuses)} probes attached")
            notify.status(f"capturing: {attached}/{len(capture.statuses)} probes attached")
            api.ready = True
            notify.ready()
            interval = notify.watchdog_interval()
            if interval is not None:
                helpers.start_soon(_watchdog, session, interval)
            with trio.move_on_after(args.duration if args.duration else float("inf")):
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        notify.reloading()
                        try:
                            await _reload(settings, pipeline)
                        except Exception as err:  # a reload bug must not end capture
                            settings.reloads["refused"] += 1
                            _say(f"SIGHUP: reload failed ({err!r}); nothing changed")
                        notify.ready()
                        continue
                    _say(f"{signal.Signals(signum).name}: stopping, draining what is in flight")
                    break
            api.ready = False
            notify.stopping()
            notify.status("stopping: draining what is in flight")
            helpers.cancel_scope.cancel()
        # The runtime stopped the session, ended the streams and waited for
        # their consumers (Runtime.running).
    # The evidence pipeline and the --events writer are done, so what they
    # lost at the very end is in these books too.
    stats = runtime.stats()
    tail.close()
    profile: Profile = aggregate.snapshot()
    if outputs.stats is not None:
        write_output(outputs.stats, msgspec.json.encode(stats) + b"\n")
    if outputs.profile is not None:
        write_output(outputs.profile, encode_profile(present(profile)))
    _say("final " + session.stats_line())
    if not stats.balanced:
        _say("WARNING: the books do not balance: " + ", ".join(
            k for k, b in stats.kinds.items() if not b.balanced))  # fmt: skip
    if pipeline is not None and pipeline.died is not None:
        _say(
            f"evidence: {pipeline.died}: {pipeline.lost_to_worker} events never reached the"
            " log (counted by kind at evidence:worker; the next start records the unclean end)"
        )
        return EXIT_EVIDENCE_LOST
    if pipeline is not None and pipeline.lost_to_store:
        where = "the next start writes it" if pipeline.owes_the_log else "it is in the log"
        _say(
            f"evidence: {pipeline.lost_to_store} events and records could not be written while"
            f" the log's disk refused writes (counted by kind; {where})"
        )
        return EXIT_EVIDENCE_LOST
    return 0
