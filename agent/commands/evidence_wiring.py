"""``--evidence DIR`` for ``run`` and ``profile``: open the sealed log and
its pipeline, with errors a user can act on."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.capture.loader import LoadedCapture
from agent.capture.session import CaptureSession
from agent.errors import RunError, UsageError
from agent.evidence.pipeline import EvidencePipeline, open_pipeline
from agent.evidence.store import StoreCorruptError, StoreLockedError
from agent.sinks.streaming import StreamingSink


def evidence_directory(value: str | None) -> Path | None:
    """The state directory named by ``--evidence``; made if its parent exists."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--evidence {value}: exists and is not a directory")
    if not path.parent.is_dir():
        raise UsageError(f"--evidence {value}: directory {str(path.parent)!r} does not exist")
    return path


def open_evidence(
    state_dir: Path,
    stream: StreamingSink,
    session: CaptureSession,
    capture: LoadedCapture,
    args: argparse.Namespace,
) -> EvidencePipeline:
    config = {
        "command": args.subcommand,
        "ringbuf_pages": args.ringbuf_pages,
        "argv_max": args.argv_max,
        "disabled_probes": sorted(args.disable_probe),
        "probe_tracepoints": sorted(args.probe_tracepoint),
    }
    try:
        return open_pipeline(
            state_dir,
            stream.receive_channel,
            books=lambda: session.stats().kinds,
            probes=list(capture.statuses),
            config=config,
        )
    except StoreLockedError as err:
        raise RunError(f"--evidence {state_dir}: in use by another tracehound ({err})") from err
    except StoreCorruptError as err:
        raise RunError(f"--evidence {state_dir}: the log is damaged: {err}") from err
    except OSError as err:
        raise RunError(f"--evidence {state_dir}: {err.strerror}") from err
