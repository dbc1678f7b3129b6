"""Running ``tracehound run`` for a bench on its defaults, and reading its log back.

What the benches of issue 9 share:

* :func:`prepare_daemon`: a scratch directory holding a configuration file
  that moves only what would collide with another daemon on this host (the
  API socket into the scratch directory, metrics onto a free loopback port)
  and an evidence directory with a sealing key (``evidence keygen``), so the
  log is sealed as an operator's would be. Everything else stays on the
  daemon's defaults.
* Evidence is pointed at that directory by ``--evidence DIR`` (``via="flag"``,
  what works today), by the ``TRACEHOUND_EVIDENCE_DIR`` environment override
  (``via="env"``: evidence on by default, the directory moved), or both.
  :func:`check_log_written` says in one line when the daemon wrote no log.
* :func:`read_log_books`: every record of the log counted per ledger kind
  (a folded record counts ``data.count`` events) and every ``capture.loss``
  record summed per kind and stage, so a bench can check the books of the
  log against the daemon's stats.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

EvidenceVia = Literal["flag", "env", "both"]
EVIDENCE_VIA: tuple[str, ...] = ("flag", "env", "both")
EVIDENCE_ENV = "TRACEHOUND_EVIDENCE_DIR"

TYPE_PREFIX = "dev.tracehound."
LOSS_TYPE = TYPE_PREFIX + "capture.loss.v1"
#: Ledger kinds whose events each become one log record (or one folded record).
EVENT_KINDS: tuple[str, ...] = ("exec", "fork", "exit", "file", "net")
#: Loss stages that do not keep an event out of the log (another sink's drops).
EVIDENCE_SINK = "sink:evidence"


class DaemonSetupError(Exception):
    """The daemon could not be prepared or did not do what the bench needs."""


def free_port() -> int:
    """A loopback TCP port free right now (for the metrics listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class DaemonFiles:
    """Where one daemon run keeps its files (all under ``root``)."""

    root: Path
    config: Path
    evidence: Path
    socket: Path
    ready: Path
    stats: Path
    stderr: Path
    metrics_port: int
    via: EvidenceVia
    extra_env: dict[str, str] = field(default_factory=dict)

    def run_args(self) -> list[str]:
        """``run`` and the options every bench passes (evidence per ``via``)."""
        args = ["run", "--config", str(self.config), "--ready-file", str(self.ready),
                "--stats-file", str(self.stats)]  # fmt: skip
        if self.via in ("flag", "both"):
            args += ["--evidence", str(self.evidence)]
        return args

    def env(self) -> dict[str, str]:
        """The daemon's environment: ours, plus the evidence override per ``via``."""
        env = dict(os.environ)
        env.pop(EVIDENCE_ENV, None)
        if self.via in ("env", "both"):
            env[EVIDENCE_ENV] = str(self.evidence)
        env.update(self.extra_env)
        return env


def prepare_daemon(
    root: Path, command: Sequence[str], via: EvidenceVia, *, keygen: bool = True
) -> DaemonFiles:
    """Make ``root`` (must not exist), its configuration and a sealed, empty log.

    Raises DaemonSetupError when ``evidence keygen`` fails (its first line).
    """
    root.mkdir(parents=True)
    files = DaemonFiles(
        root=root,
        config=root / "tracehound.toml",
        evidence=root / "evidence",
        socket=root / "api.sock",
        ready=root / "ready",
        stats=root / "stats.json",
        stderr=root / "daemon.stderr",
        metrics_port=free_port(),
        via=via,
    )
    files.config.write_text(
        "# Only what would collide with another daemon on this host; the rest is default.\n"
        f"[api]\nsocket = {_toml_string(str(files.socket))}\n"
        f"[metrics]\nlisten = {_toml_string(f'127.0.0.1:{files.metrics_port}')}\n"
    )
    if keygen:
        make_key(command, files.evidence, root / "verify.key")
    return files


def make_key(command: Sequence[str], evidence: Path, key_file: Path) -> None:
    """``tracehound evidence keygen --state-dir EVIDENCE > KEY_FILE``."""
    cmd = [*command, "evidence", "keygen", "--state-dir", str(evidence)]
    with open(key_file, "wb") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise DaemonSetupError(f"{shlex.join(cmd)} failed (status {done.returncode}): {first}")


def check_log_written(files: DaemonFiles) -> None:
    """Raise DaemonSetupError if the ready daemon has no log in ``files.evidence``."""
    segments = files.evidence / "segments"
    if not segments.is_dir() or not any(segments.iterdir()):
        hint = (
            f" (with --evidence-via env the daemon must honour {EVIDENCE_ENV}; this one"
            " apparently does not: try --evidence-via flag)"
            if files.via == "env"
            else ""
        )
        raise DaemonSetupError(f"the daemon is ready but wrote no evidence log in {segments}{hint}")


# --------------------------------------------------------------------------
# The log's own books


class _Data(msgspec.Struct):
    count: int = 1
    counts: dict[str, dict[str, int]] | None = None


class _Event(msgspec.Struct):
    type: str = ""
    data: _Data | None = None


class _Line(msgspec.Struct):
    type: str
    body: msgspec.Raw


_LINE = msgspec.json.Decoder(_Line)
_EVENT = msgspec.json.Decoder(_Event)


def kind_of_type(record_type: str) -> str | None:
    """The ledger kind of an event record type, None for other records."""
    if not record_type.startswith(TYPE_PREFIX):
        return None
    rest = record_type[len(TYPE_PREFIX) :]
    if rest.startswith("process."):
        name = rest.split(".")[1]
        return name if name in ("exec", "fork", "exit") else None
    if rest.startswith("file."):
        return "file"
    if rest.startswith("network."):
        return "net"
    return None


@dataclass
class LogBooks:
    """What the log says: events recorded and losses declared, per kind."""

    lines: int = 0
    records: dict[str, int] = field(default_factory=dict)  # kind -> records
    events: dict[str, int] = field(default_factory=dict)  # kind -> sum of counts
    losses: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> stage -> n
    unreadable: int = 0

    def lost(self, kind: str) -> int:
        """Every loss the log declares for ``kind``, at any stage."""
        return sum(self.losses.get(kind, {}).values())

    def lost_before_log(self, kind: str) -> int:
        """Losses that kept events out of this log (not another sink's drops)."""
        return sum(
            n
            for stage, n in self.losses.get(kind, {}).items()
            if not stage.startswith("sink:") or stage == EVIDENCE_SINK
        )

    def stages(self, kind: str) -> str:
        row = self.losses.get(kind, {})
        return ", ".join(f"{s} {n:,}" for s, n in sorted(row.items()) if n) or "none"


def read_log_books(evidence: Path) -> LogBooks:
    """Count the log under ``evidence/segments``, in segment order.

    Raises DaemonSetupError if there is no segment; a line that is not a
    record is counted in ``unreadable`` (a torn tail is not the bench's call).
    """
    segments = sorted((evidence / "segments").glob("*.ndjson"))
    if not segments:
        raise DaemonSetupError(f"no log segments in {evidence / 'segments'}")
    books = LogBooks()
    for path in segments:
        with open(path, "rb") as segment:
            for line in segment:
                books.lines += 1
                try:
                    record = _LINE.decode(line)
                    kind = kind_of_type(record.type)
                    if kind is None and record.type != LOSS_TYPE:
                        continue
                    event = _EVENT.decode(record.body)
                except msgspec.DecodeError:
                    books.unreadable += 1
                    continue
                data = event.data or _Data()
                if kind is not None:
                    books.records[kind] = books.records.get(kind, 0) + 1
                    books.events[kind] = books.events.get(kind, 0) + data.count
                for loss_kind, stages in (data.counts or {}).items():
                    row = books.losses.setdefault(loss_kind, {})
                    for stage, n in stages.items():
                        row[stage] = row.get(stage, 0) + n
    return books
