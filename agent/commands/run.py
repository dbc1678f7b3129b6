"""``tracehound run``: host-wide capture in the foreground.

One trio nursery holds the capture session (drain, syscall poller, stats
line), the /proc seeding, the optional event stream writer and the signal
watcher. SIGINT or SIGTERM: detach, deliver everything in flight, write the
final stats, exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import msgspec
import trio

from agent import notify
from agent.api.metrics_server import serve_metrics
from agent.capture.loader import LoadedCapture, check_privileges, load
from agent.capture.procfs import ProcessInfoCache, seed_processes
from agent.capture.session import CaptureSession
from agent.commands.evidence_wiring import (
    add_evidence_arguments,
    check_evidence_arguments,
    evidence_directory,
    open_evidence,
    redactor_from_args,
)
from agent.commands.options import (
    add_capture_arguments,
    load_options_from_args,
    output_path,
    write_output,
)
from agent.config import Config, apply_defaults, load_config
from agent.errors import RunError, UsageError
from agent.evidence.pipeline import EvidencePipeline
from agent.metrics import (
    EvidenceStatus,
    MetricsSources,
    QueueSample,
    make_registry,
    queue_of,
    ring_queue,
)
from agent.redact import Redactor
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.base import EventSink
from agent.sinks.profile import Profile, encode_profile
from agent.sinks.streaming import StreamingSink
from agent.sinks.tee import TeeSink


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="capture host-wide until interrupted",
        description="Capture exec, file, network and syscall activity host-wide.",
    )
    parser.add_argument("--stats-interval", type=float, default=5.0, metavar="SECONDS",
                        help="print a stats line this often (0: never; default 5)")  # fmt: skip
    parser.add_argument("--stats-file", metavar="FILE",
                        help="on exit, write the final stats (per-kind accounting, probes) as JSON")  # fmt: skip
    parser.add_argument("--ready-file", metavar="FILE",
                        help="create FILE once the probes are attached and draining")  # fmt: skip
    parser.add_argument("--profile-file", metavar="FILE",
                        help="on exit, write the aggregated profile as JSON")  # fmt: skip
    parser.add_argument("--events", metavar="FILE",
                        help="also stream every event as NDJSON to FILE (through the streaming sink)")  # fmt: skip
    parser.add_argument("--stream-capacity", type=int, default=8192, metavar="N",
                        help="streaming sink capacity in events (default 8192)")  # fmt: skip
    parser.add_argument("--stream-policy", choices=("block", "drop"), default="block",
                        help="when the stream is full: block (backpressure) or drop (counted)")  # fmt: skip
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop by itself after this long")  # fmt: skip
    parser.add_argument("--no-seed", action="store_true",
                        help="do not seed already-running processes from /proc")  # fmt: skip
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default /etc/tracehound/tracehound.toml if it"
                             " exists); options given here win over it")  # fmt: skip
    add_capture_arguments(parser)
    add_evidence_arguments(parser, what="every event")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config) if args.config else None)
    apply_defaults(args, config)
    stats_file = output_path("--stats-file", args.stats_file)
    profile_file = output_path("--profile-file", args.profile_file)
    events_file = output_path("--events", args.events)
    ready_file = output_path("--ready-file", args.ready_file)
    evidence_dir = evidence_directory(args.evidence)
    check_evidence_arguments(args)
    redactor = redactor_from_args(args) if args.redact_rules else config.evidence.redactor()
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration: expected a number of seconds above 0, got {args.duration}")
    if args.stream_capacity < 1:
        raise UsageError(f"--stream-capacity: expected at least 1, got {args.stream_capacity}")
    if args.stats_interval < 0:
        raise UsageError(f"--stats-interval: expected 0 or more seconds, got {args.stats_interval}")
    options = load_options_from_args(args, scoped=False)
    check_privileges()
    capture = load(options)
    try:
        return trio.run(
            _run,
            capture,
            args,
            stats_file,
            profile_file,
            events_file,
            ready_file,
            evidence_dir,
            redactor,
            config,
        )
    finally:
        capture.close()


async def _start_metrics(
    nursery: trio.Nursery,
    config: Config,
    session: CaptureSession,
    evidence_stream: StreamingSink | None,
    pipeline: EvidencePipeline | None,
) -> None:
    """Serve /metrics; a port that cannot be bound costs the metrics, never
    the capture (fail safe), and says so."""

    def queues() -> list[QueueSample | None]:
        out: list[QueueSample | None] = [ring_queue(session.drain)]
        if evidence_stream is not None:
            out.append(queue_of(f"stream:{evidence_stream.name}", evidence_stream))
        if pipeline is not None:
            out.append(queue_of("publisher", pipeline))
        return out

    def evidence() -> EvidenceStatus | None:
        if pipeline is None:
            return None
        return EvidenceStatus(
            records=pipeline.published,
            last_checkpoint_age_seconds=None,
            verify_ok=None,
            unwritten=pipeline.unwritten,
            failed=pipeline.failed is not None,
        )

    registry = make_registry(
        MetricsSources(stats=session.stats, queues=queues, evidence=evidence), process=True
    )
    host, port = config.metrics.address

    try:
        await nursery.start(serve_metrics, registry, host, port)
    except OSError as err:
        _say(
            f"metrics: cannot listen on {config.metrics.listen} ({err.strerror}); going on without"
        )
    else:
        _say(f"metrics on http://{config.metrics.listen}/metrics")


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


def _say(line: str) -> None:
    print(f"tracehound: {line}", file=sys.stderr, flush=True)


async def _write_events(stream: StreamingSink, path: Path) -> None:
    """The stream's consumer: NDJSON, written in batches in a worker thread.

    A write that fails (disk full, I/O error) ends the consumer, never the
    capture: the stream then counts every later event as dropped (fail safe
    on delivery), and the stats say so.
    """
    encoder = msgspec.json.Encoder()
    try:
        async with await trio.open_file(path, "wb") as out:
            buffer = bytearray()
            async for event in stream.receive_channel:
                encoder.encode_into(event, buffer, len(buffer))
                buffer += b"\n"
                if len(buffer) >= 1 << 16 or not stream.depth:
                    await out.write(bytes(buffer))
                    buffer.clear()
            if buffer:
                await out.write(bytes(buffer))
    except OSError as err:
        _say(
            f"--events {path}: write failed ({err.strerror}); further events are counted as dropped"
        )
        await stream.receive_channel.aclose()


async def _run(
    capture: LoadedCapture,
    args: argparse.Namespace,
    stats_file: Path | None,
    profile_file: Path | None,
    events_file: Path | None,
    ready_file: Path | None,
    evidence_dir: Path | None,
    redactor: Redactor,
    config: Config,
) -> int:
    aggregate = AggregatingSink()
    sinks: list[EventSink[object]] = [aggregate]
    stream: StreamingSink | None = None
    evidence_stream: StreamingSink | None = None
    if events_file is not None:
        stream = StreamingSink(args.stream_capacity, args.stream_policy, name="events")
        sinks.append(stream)
    if evidence_dir is not None:
        evidence_stream = StreamingSink(args.stream_capacity, args.stream_policy, name="evidence")
        sinks.append(evidence_stream)
    sink: EventSink[object] = aggregate if len(sinks) == 1 else TeeSink(sinks)

    def depths() -> str:
        parts = [f"{s.name} {s.depth}/{s.capacity}" for s in (stream, evidence_stream) if s]
        if pipeline is not None:
            parts.append(f"publisher {pipeline.depth}/{pipeline.capacity}")
        return "".join(f" | {p}" for p in parts)

    session = CaptureSession(
        capture, sink,
        stats_interval=args.stats_interval or None,
        report=lambda line: _report(line + depths()),
    )  # fmt: skip
    pipeline: EvidencePipeline | None = None
    if evidence_stream is not None and evidence_dir is not None:
        pipeline = open_evidence(evidence_dir, evidence_stream, session, capture, args, redactor)
    attached = sum(1 for s in capture.statuses if s.attached)
    if attached == 0:
        # Running blind must fail, so a supervisor restarts and alerts fire.
        raise RunError("no probe attached: nothing can be captured (see the reasons above)")
    for status in capture.statuses:
        if not status.attached:
            _say(f"probe {status.name} missing: {status.reason}")
    async with trio.open_nursery() as nursery:
        if stream is not None and events_file is not None:
            nursery.start_soon(_write_events, stream, events_file)
        if pipeline is not None:
            await nursery.start(pipeline.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as capturing:
                await capturing.start(session.run)
                if not args.no_seed:
                    cache = ProcessInfoCache()
                    for seen in await trio.to_thread.run_sync(seed_processes, cache):
                        await sink.record(seen)
                if ready_file is not None:
                    write_output("--ready-file", ready_file, f"{os.getpid()}\n".encode())
                # Tasks that live until capture stops: one nursery, cancelled
                # at the stop signal (stopping must not wait on them).
                async with trio.open_nursery() as helpers:
                    if config.metrics.enabled:
                        await _start_metrics(helpers, config, session, evidence_stream, pipeline)
                    _say(f"capturing host-wide: {attached}/{len(capture.statuses)} probes attached")
                    notify.status(f"capturing: {attached}/{len(capture.statuses)} probes attached")
                    notify.ready()
                    interval = notify.watchdog_interval()
                    if interval is not None:
                        helpers.start_soon(_watchdog, session, interval)
                    with trio.move_on_after(args.duration if args.duration else float("inf")):
                        async for signum in signals:
                            _say(
                                f"{signal.Signals(signum).name}: stopping, draining what is in flight"
                            )
                            notify.stopping()
                            notify.status("stopping: draining what is in flight")
                            break
                    helpers.cancel_scope.cancel()
                session.stop()
        stats = session.stats()
        sink.finish()
    profile: Profile = aggregate.snapshot()
    if stats_file is not None:
        write_output("--stats-file", stats_file, msgspec.json.encode(stats) + b"\n")
    if profile_file is not None:
        write_output("--profile-file", profile_file, encode_profile(profile))
    _say("final " + session.stats_line())
    if not stats.balanced:
        _say("WARNING: the books do not balance: " + ", ".join(
            k for k, b in stats.kinds.items() if not b.balanced))  # fmt: skip
    return 0
