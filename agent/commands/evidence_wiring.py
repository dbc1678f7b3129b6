"""``--evidence DIR`` for ``run`` and ``profile``: open the sealed log and
its pipeline, with errors a user can act on."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import msgspec

from agent.capture.loader import LoadedCapture
from agent.capture.session import CaptureSession
from agent.commands.arguments import bounded_float, bounded_int
from agent.config.schema import (
    DEFAULT_EVIDENCE_DIR,
    EVIDENCE_DIR_ENV,
    EvidenceConfig,
    default_evidence_dir,
)
from agent.errors import UsageError, shown
from agent.evidence.layout import key_path
from agent.evidence.pipeline import StoreOptions
from agent.evidence.worker import EvidenceWorker, WorkerProcess
from agent.evidence.worker_protocol import Start
from agent.input_file import InputFileError, read_input_file
from agent.limits import MAX_CHECKPOINT_EVERY, MAX_RETAIN_MB, MAX_SEGMENT_HOURS, MAX_SEGMENT_MB
from agent.redact import RedactionConfigError, Redactor
from agent.redact.events import rules_summary
from agent.sinks.streaming import StreamingSink
from agent.state_dir import StateDirError, make_state_dir


def add_evidence_arguments(
    parser: argparse.ArgumentParser, *, what: str, default_on: bool = False
) -> None:
    """The evidence options. Each defaults to ``None`` (not given), filled
    from the configuration by :func:`agent.config.apply_defaults`; the
    help quotes the schema's defaults. ``default_on``: the log is on unless
    turned off (``run``), so ``--no-evidence`` is offered."""
    builtin = EvidenceConfig(state_dir=DEFAULT_EVIDENCE_DIR)
    group = parser.add_argument_group("evidence")
    where = group.add_mutually_exclusive_group() if default_on else group
    on = f" (default {DEFAULT_EVIDENCE_DIR}: evidence.state_dir)" if default_on else ""
    where.add_argument("--evidence", metavar="DIR",
                       help=f"write {what} to the sealed evidence log in DIR{on}")  # fmt: skip
    if default_on:
        where.add_argument("--no-evidence", action="store_true",
                           help="write no evidence log (as [evidence] enabled = false)")  # fmt: skip
    group.add_argument("--redact-rules", metavar="FILE",
                       help="TOML file of extra redaction rules ([[rule]] tables), after the"
                            " built-in ones; a bad rule is refused at start")  # fmt: skip
    group.add_argument("--evidence-fsync", choices=("always", "batch", "never"),
                       help="fsync after every record, every batch, or never"
                            f" (default {builtin.fsync})")  # fmt: skip
    group.add_argument("--evidence-segment-mb", metavar="MB",
                       type=bounded_float(0, MAX_SEGMENT_MB, above=True, unit="MiB"),
                       help=f"rotate segments at this size, above 0, at most {MAX_SEGMENT_MB}"
                            f" (default {builtin.segment_mb:g})")  # fmt: skip
    group.add_argument("--evidence-segment-hours", metavar="H",
                       type=bounded_float(0, MAX_SEGMENT_HOURS, above=True, unit="hours"),
                       help=f"rotate segments at this age, above 0, at most {MAX_SEGMENT_HOURS}"
                            f" (a year; default {builtin.segment_hours:g})")  # fmt: skip
    group.add_argument("--evidence-retain-mb", metavar="MB",
                       type=bounded_float(0, MAX_RETAIN_MB, above=True, unit="MiB"),
                       help="prune the oldest segments past this total, recorded; at least"
                            f" --evidence-segment-mb, at most {MAX_RETAIN_MB}"
                            f" (default {builtin.retain_mb:g})")  # fmt: skip
    group.add_argument("--evidence-checkpoint-every", metavar="N",
                       type=bounded_int(0, MAX_CHECKPOINT_EVERY),
                       help=f"also seal every N records, 0 to {MAX_CHECKPOINT_EVERY} (default"
                            f" {builtin.checkpoint_every}: a seal a second after the last while"
                            " records come, and at stop)")  # fmt: skip


def redactor_from_args(args: argparse.Namespace) -> Redactor:
    """The built-in rules plus ``--redact-rules``. Fails closed: a rule that
    is wrong stops the command, with the file, the rule and what was wanted."""
    if args.redact_rules is None:
        return Redactor.builtin()
    path = Path(args.redact_rules)
    try:
        document = tomllib.loads(read_input_file(path).decode("utf-8"))
    except InputFileError as err:
        raise UsageError(f"--redact-rules {path}: {err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--redact-rules {path}: not UTF-8 at byte {err.start}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--redact-rules {path}: not valid TOML: {err}") from err
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise UsageError(
            f"--redact-rules {path}: unknown key {unknown[0]!r}; expected [[rule]] tables"
        )
    try:
        return Redactor.from_config(document.get("rule", []))
    except RedactionConfigError as err:
        raise UsageError(f"--redact-rules {path}: {err}") from err


def check_evidence_arguments(args: argparse.Namespace) -> None:
    """What no single option's type can check: retention holds a segment.

    Each value is in range already (its argparse type, or the config
    schema for a value from the file); together they may still not fit,
    e.g. ``--evidence-segment-mb 512`` with the file's ``retain_mb = 256``.
    An empty ``--evidence`` is refused here, before anything: ``Path('')``
    is the current directory, which would become the log (the config
    schema refuses an empty ``evidence.state_dir`` itself).
    """
    if args.evidence == "":
        raise UsageError(
            "--evidence: expected a directory path, got an empty value"
            " (that would be the current directory)"
        )
    if args.evidence_retain_mb < args.evidence_segment_mb:
        raise UsageError(
            f"--evidence-retain-mb: expected at least --evidence-segment-mb"
            f" ({args.evidence_segment_mb:g}), got {args.evidence_retain_mb:g}"
        )


def store_options(args: argparse.Namespace) -> StoreOptions:
    """The log's write policy from the ``--evidence-*`` options (checked first
    by :func:`check_evidence_arguments`)."""
    return StoreOptions(
        fsync=args.evidence_fsync,
        segment_max_bytes=int(args.evidence_segment_mb * 2**20),
        segment_max_age_s=args.evidence_segment_hours * 3600,
        retain_max_bytes=int(args.evidence_retain_mb * 2**20),
        checkpoint_every_records=args.evidence_checkpoint_every,
    )


def evidence_source(value: str, config_file: str | None) -> str:
    """How errors name the state directory: ``--evidence DIR`` when given on
    the command line, ``evidence.state_dir in FILE`` when the configuration
    file (``config_file``, None: not from a file) decided it, and the
    default (or :data:`EVIDENCE_DIR_ENV`, which moves it) when nothing did."""
    if config_file is None:
        return f"--evidence {shown(value)}"
    if value != default_evidence_dir():
        return f"evidence.state_dir in {shown(config_file)}"
    if EVIDENCE_DIR_ENV in os.environ:
        return f"{EVIDENCE_DIR_ENV} {shown(value)}"
    return (
        f"the default evidence directory {shown(value)} (choose with --evidence or --no-evidence)"
    )


def evidence_directory(value: str | None, source: str, *, gid: int | None = None) -> Path | None:
    """The state directory (None: no evidence), made now as on a fresh host
    (parents 0755, itself 0700, or 0750 with group ``gid``), before any
    capture work, so a path that cannot be used costs nothing.

    Raises:
        UsageError: one line starting with ``source`` (see
            :func:`evidence_source`): a symlink, not a directory, or a
            directory that cannot be made.
    """
    if value is None:
        return None
    try:
        make_state_dir(value, gid=gid)
    except StateDirError as err:
        raise UsageError(f"{source}: {err}") from err
    return Path(value)


def require_sealing_key(state_dir: Path, command: str) -> None:
    """``profile --evidence DIR`` needs a sealing key in DIR: an unsealed log
    proves nothing against whoever can write the directory, and a profile
    run that silently wrote one would let its owner believe otherwise.
    Refused with how to make one (the daemon, which may start before any
    key exists, writes a chained log and says so instead)."""
    if key_path(state_dir).exists():
        return
    raise UsageError(
        f"{command} --evidence {state_dir}: no sealing key there; make one first with"
        f" `tracehound evidence keygen --state-dir {state_dir} > verify.key`"
        " (keep verify.key off this host: it verifies the seals)"
    )


def open_evidence(
    state_dir: Path,
    stream: StreamingSink,
    session: CaptureSession,
    capture: LoadedCapture,
    args: argparse.Namespace,
    redactor: Redactor,
    worker: WorkerProcess,
    *,
    source: str,
    group: int | None = None,
) -> EvidenceWorker:
    """The pipeline over the log in ``state_dir`` (see
    :func:`evidence_directory`; ``source`` and ``group`` as there), run by
    ``worker`` (started with :func:`agent.evidence.worker.spawn`); it opens
    the log when it starts, and every failure then is one line starting
    with ``source``. Fault injection (TRACEHOUND_FAILPOINTS) reaches the
    worker through its environment."""
    config = {
        "command": args.subcommand,
        "ringbuf_pages": args.ringbuf_pages,
        "argv_max": args.argv_max,
        "disabled_probes": sorted(args.disable_probe),
        # Folding on (window > 0): file and network records may stand for `count` events.
        "fold_window_ms": args.fold_window_ms,
        "fold_capacity": args.fold_capacity,
        # Off: file records carry the path as passed only (abs_path empty, flagged "off").
        "resolve_paths": bool(args.resolve_paths),
        "probe_tracepoints": sorted(args.probe_tracepoint),
        "redact_rules": args.redact_rules,
        # Which rules redact this run's records: names and digests, never a pattern.
        "redaction": rules_summary(redactor),
        "evidence_fsync": args.evidence_fsync,
    }
    start = Start(
        state_dir=str(state_dir),
        source=source,
        probes=list(capture.statuses),
        config=msgspec.to_builtins(config),
        rules=[compiled.rule for compiled in redactor.rules],
        max_field_chars=redactor.max_field_chars,
        store=store_options(args),
        # W3C Trace Context, as CI systems and OpenTelemetry export it: every
        # record of this run carries it, so evidence joins the trace.
        traceparent=os.environ.get("TRACEPARENT") or None,
        tracestate=os.environ.get("TRACESTATE") or None,
        group=group,
    )
    return EvidenceWorker(
        worker,
        stream.receive_channel,
        start,
        books=lambda: session.stats().kinds,
        sink_books=session.sink.accounting,
        losses=session.ledger.downstream,
    )
