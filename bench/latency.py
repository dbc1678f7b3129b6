"""Latency, kernel to live tail and kernel to log: issue 9's targets, measured.

Starts ``tracehound run`` on its defaults with the evidence log on (into a
temporary directory, sealed: see bench_daemon.py), attaches one live-tail
client to ``/v1/stream`` on the API socket and watches the log's segments,
then runs *marker* execs: ``/bin/true thmark<run>n<i>`` at a paced rate
(``--rate``, default 50/s). Each marker's exec record carries its unique
token in ``argv`` and its kernel time in ``time`` (the wall-clock time the
mapper computes from the kernel's boot-time timestamp). For every marker the
bench notes:

    live tail   when its SSE event was received on the stream (the time the
                recv() returned the bytes that end its ``data:`` line);
    log write   when its line was first readable in the log's last segment
                (inotify on ``segments/`` wakes the reader at each write: no
                polling interval, and a read costs nothing while idle);
    log commit  when it was durable: right after seeing the line, the reader
                fsyncs the segment itself; fsync returns once every byte
                written to the file so far is on disk, so this is the latest
                moment the line can have become durable (an upper bound that
                is tight: the daemon's own fsync of the batch is either done,
                then ours returns at once, or in flight, then ours waits for
                the same writeback).

Latency = arrival (wall clock, ``time.time_ns``) minus the record's ``time``.
A clock check line compares it with the same interval taken on the boot
clock (``CLOCK_BOOTTIME`` minus ``data.ts_ns``): a large difference would
mean the mapper's boot-to-wall offset is off, not the pipeline slow.

Two phases, in one run, printed side by side:

    idle  markers only;
    load  markers while bench/paced_open.c (compiled here with gcc) opens
          distinct non-existent paths at ``--load-rate`` (default 50,000/s):
          a flood of distinct file events that nothing can fold.

The live tail sees every record the daemon publishes, as a real tail does:
the client reads it raw and looks for the marker token with one regex per
chunk (parsing each event in Python would make the client, not the daemon,
the bottleneck). Records the tail dropped (``overflow`` events), markers
never seen, and the daemon's books (events lost per kind) are printed, so a
good-looking percentile over a lossy run is not taken for a good one.

    sudo .venv/bin/python bench/latency.py [--rate 50] [--markers 500]
        [--load-rate 50000] [--evidence-via flag|env|both] [--json FILE]

Targets are printed, never asserted: the exit status is 0 whenever the bench
ran, 1 when it could not (one line on stderr), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import calendar
import ctypes
import json
import math
import os
import re
import secrets
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from bench_args import positive_int, seconds
from bench_daemon import (
    EVENT_KINDS,
    EVIDENCE_VIA,
    DaemonFiles,
    DaemonSetupError,
    EvidenceVia,
    check_log_written,
    prepare_daemon,
)
from capture_bench import (
    BenchError,
    compile_workloads,
    default_agent_command,
    host_line,
    host_warnings,
    parse_stats,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
from agent.api.client import open_response  # noqa: E402

STREAM_P99_TARGET_MS = 200.0
LOG_TARGET_MS = 100.0
TARGET_TEXT = (
    f"kernel to live tail p99 <= {STREAM_P99_TARGET_MS:.0f} ms idle and under load;"
    f" kernel to committed in the log <= {LOG_TARGET_MS:.0f} ms"
)

IN_MODIFY, IN_CREATE, IN_MOVED_TO, IN_CLOEXEC = 0x2, 0x100, 0x80, 0o2000000


class Terminated(BaseException):
    """SIGTERM: unwind like KeyboardInterrupt, so the daemon is stopped."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def rfc3339_ns(text: str) -> int:
    """``2026-12-01T11:55:44.278663103Z`` -> ns since the epoch (UTC only)."""
    if len(text) < 20 or not text.endswith("Z"):
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    frac = text[20:-1] if text[19] == "." else ""
    if not frac.isdigit() and frac:
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    return whole * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))


class _Record(msgspec.Struct):
    type: str
    time: str
    data: dict[str, Any]


class _ChainLine(msgspec.Struct):
    body: _Record


_RECORD = msgspec.json.Decoder(_Record)
_CHAIN_LINE = msgspec.json.Decoder(_ChainLine)
EXEC_TYPE = "dev.tracehound.process.exec.v1"


@dataclass
class Arrivals:
    """Per marker id: the record's kernel time and when an observer saw it."""

    kernel_ns: dict[int, int] = field(default_factory=dict)  # record `time`
    boot_latency_ns: dict[int, int] = field(default_factory=dict)  # boot-clock interval
    seen_ns: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, marker: int, record: _Record, wall_ns: int, boot_ns: int) -> None:
        if record.type != EXEC_TYPE:
            return
        with self.lock:
            if marker in self.seen_ns:
                return
            self.seen_ns[marker] = wall_ns
            self.kernel_ns[marker] = rfc3339_ns(record.time)
            ts = record.data.get("ts_ns")
            if isinstance(ts, str) and ts.isdigit():
                self.boot_latency_ns[marker] = boot_ns - int(ts)

    def latency_ms(self, markers: range) -> list[float]:
        with self.lock:
            return [
                (self.seen_ns[m] - self.kernel_ns[m]) / 1e6 for m in markers if m in self.seen_ns
            ]

    def clock_skew_ms(self, markers: range) -> list[float]:
        """Wall-clock latency minus boot-clock latency, per marker seen."""
        with self.lock:
            return [
                (self.seen_ns[m] - self.kernel_ns[m] - self.boot_latency_ns[m]) / 1e6
                for m in markers
                if m in self.boot_latency_ns
            ]

    def count(self, markers: range) -> int:
        with self.lock:
            return sum(1 for m in markers if m in self.seen_ns)


def _now() -> tuple[int, int]:
    return time.time_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _markers_in(chunk: bytes, pattern: re.Pattern[bytes]) -> Iterator[tuple[int, bytes]]:
    """(marker id, the whole line holding it) for each line of ``chunk`` with a token."""
    done_lines: set[int] = set()
    for match in pattern.finditer(chunk):
        start = chunk.rfind(b"\n", 0, match.start()) + 1
        if start in done_lines:
            continue
        done_lines.add(start)
        end = chunk.find(b"\n", match.end())
        yield int(match.group(1)), chunk[start : len(chunk) if end < 0 else end]


# --------------------------------------------------------------------------
# Observers (threads): the live tail and the log


class StreamObserver(threading.Thread):
    """One ``/v1/stream`` client; notes each marker's exec record as it arrives."""

    def __init__(self, socket_path: Path, pattern: re.Pattern[bytes]) -> None:
        super().__init__(name="sse", daemon=True)
        self.socket_path, self.pattern = socket_path, pattern
        self.arrivals = Arrivals()
        self.dropped = 0  # the daemon's overflow notices for this client
        self.bytes = 0
        self.error: str | None = None
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # reported by the main thread, in one line
            self.error = f"live tail client: {type(err).__name__}: {err}"
            self.connected.set()

    def _run(self) -> None:
        conn, response = open_response(str(self.socket_path), "/v1/stream", (), 10)
        with closing(conn):
            if response.status != 200:
                self.error = f"live tail client: /v1/stream answered {response.status}"
                self.connected.set()
                return
            self.connected.set()
            conn.set_deadline(None)  # the daemon's keepalives end each wait
            pending = b""
            while not self.stop.is_set():
                data = response.read1(1 << 20)
                wall, boot = _now()
                if not data:
                    if not self.stop.is_set():
                        self.error = "live tail client: the daemon closed /v1/stream"
                    return
                self.bytes += len(data)
                pending += data
                cut = pending.rfind(b"\n")
                if cut < 0:
                    continue
                chunk, pending = pending[: cut + 1], pending[cut + 1 :]
                self._scan(chunk, wall, boot)

    def _scan(self, chunk: bytes, wall: int, boot: int) -> None:
        if b"event: overflow" in chunk:
            for match in re.finditer(rb"event: overflow\ndata: (\{[^\n]*\})", chunk):
                with suppress(msgspec.DecodeError, AttributeError):
                    self.dropped += int(msgspec.json.decode(match.group(1))["dropped"])
        for marker, line in _markers_in(chunk, self.pattern):
            if line.startswith(b"data: "):
                self.arrivals.note(marker, _RECORD.decode(line[6:]), wall, boot)


class _Inotify:
    """inotify on one directory, through libc (no dependency)."""

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO
        if self._libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")

    def wait(self, timeout: float) -> bool:
        """True if something changed (the events are read and discarded)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            os.read(self.fd, 1 << 16)
        return bool(ready)

    def close(self) -> None:
        os.close(self.fd)


class LogObserver(threading.Thread):
    """Reads each new byte of the log's segments; notes when each marker's
    line was first readable (``written``) and then durable (``committed``)."""

    def __init__(self, segments: Path, pattern: re.Pattern[bytes]) -> None:
        super().__init__(name="log", daemon=True)
        self.segments, self.pattern = segments, pattern
        self.written = Arrivals()
        self.committed = Arrivals()
        self.bytes = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}

    def run(self) -> None:
        try:
            watch = _Inotify(self.segments)
        except OSError as err:
            self.error = f"log reader: {err}"
            return
        try:
            self._read_all()
            while not self.stop.is_set():
                if watch.wait(0.25):
                    self._read_all()
        except Exception as err:
            self.error = f"log reader: {type(err).__name__}: {err}"
        finally:
            watch.close()

    def _read_all(self) -> None:
        names = sorted(p.name for p in self.segments.glob("*.ndjson"))
        # Segments before the newest one we have read are finished.
        for name in names:
            if self._offsets and name < max(self._offsets) and name not in self._offsets:
                continue
            self._read(name)

    def _read(self, name: str) -> None:
        with open(self.segments / name, "rb") as segment:
            segment.seek(self._offsets.get(name, 0))
            while True:
                data = segment.read(1 << 22)
                if not data:
                    return
                wall, boot = _now()
                self._offsets[name] = self._offsets.get(name, 0) + len(data)
                self.bytes += len(data)
                data = self._partial.pop(name, b"") + data
                cut = data.rfind(b"\n")
                if cut + 1 < len(data):
                    self._partial[name] = data[cut + 1 :]
                found = [
                    (marker, _CHAIN_LINE.decode(line).body)
                    for marker, line in _markers_in(data[: cut + 1], self.pattern)
                ]
                if not found:
                    continue
                for marker, record in found:
                    self.written.note(marker, record, wall, boot)
                os.fsync(segment.fileno())
                wall, boot = _now()
                for marker, record in found:
                    self.committed.note(marker, record, wall, boot)


# --------------------------------------------------------------------------
# The daemon, the markers, the load


@contextmanager
def running_daemon(
    command: Sequence[str], files: DaemonFiles, ready_timeout: float, stop_timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """``tracehound run`` until the block ends; stopped with SIGINT, then killed."""
    cmd = [*command, *files.run_args()]
    with open(files.stderr, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=files.env(), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, start_new_session=True)  # fmt: skip
        except OSError as error:
            raise BenchError(f"cannot start the daemon ({shlex.join(cmd)}): {error}") from None
    try:
        deadline = time.monotonic() + ready_timeout
        while not files.ready.exists():
            if proc.poll() is not None:
                raise BenchError(
                    f"the daemon exited with status {proc.returncode} before it was ready:"
                    f" {_last_line(files.stderr)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon was not ready within {ready_timeout:g} s")
            time.sleep(0.05)
        yield proc
        if proc.poll() is not None:
            raise BenchError(
                f"the daemon died during the bench (status {proc.returncode}):"
                f" {_last_line(files.stderr)}"
            )
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"the daemon did not exit within {stop_timeout:g} s of SIGINT"
            ) from None
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no stderr)"
    return lines[-1] if lines else "(stderr was empty)"


def send_markers(token: str, markers: range, rate: float) -> int:
    """Exec ``/bin/true TOKEN<i>`` for each marker, paced; returns execs that failed."""
    pending: list[int] = []
    failed = 0
    start = time.monotonic()
    for index, marker in enumerate(markers):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pending.append(os.posix_spawn("/bin/true", ["/bin/true", f"{token}{marker}"], os.environ))
        still: list[int] = []
        for pid in pending:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                still.append(pid)
            elif os.waitstatus_to_exitcode(status) != 0:
                failed += 1
        pending = still
    for pid in pending:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return failed


@dataclass
class LoadResult:
    ops: int = 0
    rate: float = 0.0
    lag_max_ms: float = 0.0
    unexpected: int = 0


LOAD_LINE = re.compile(
    r"ops=(\d+) elapsed_ns=(\d+) ns_per_op=\S+ rate=(\d+) lag_max_ns=(\d+) unexpected=(\d+)"
)


def parse_load(output: str) -> LoadResult:
    match = LOAD_LINE.search(output)
    if match is None:
        raise BenchError(f"paced_open: unexpected output {output.strip()[:200]!r}")
    return LoadResult(
        ops=int(match.group(1)),
        rate=float(match.group(3)),
        lag_max_ms=int(match.group(4)) / 1e6,
        unexpected=int(match.group(5)),
    )


# --------------------------------------------------------------------------
# Figures


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Row:
    what: str
    phase: str
    sent: int
    latencies: list[float]
    target_ms: float  # for p99 (stream) or max-of-p99 (log)

    def figure(self, pct: float) -> float | None:
        return percentile(self.latencies, pct)

    @property
    def met(self) -> bool | None:
        p99 = self.figure(99)
        if p99 is None:
            return None if self.sent == 0 else False  # every marker missing: not met
        return p99 <= self.target_ms and len(self.latencies) == self.sent

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "phase": self.phase,
            "sent": self.sent,
            "seen": len(self.latencies),
            **{f"p{p}_ms": self.figure(p) for p in (50, 90, 99)},
            "max_ms": self.figure(100),
            "target_p99_ms": self.target_ms,
            "met": self.met,
        }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def table(rows: Sequence[Row]) -> str:
    cells = [["observer", "phase", "markers", "seen", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "target (p99, all seen)"]]  # fmt: skip
    for row in rows:
        verdict = {None: "n/a", True: "met", False: "NOT met"}[row.met]
        cells.append(
            [row.what, row.phase, f"{row.sent:,}", f"{len(row.latencies):,}"]
            + [_ms(row.figure(p)) for p in (50, 90, 99, 100)]
            + [f"<= {row.target_ms:.0f} ms: {verdict}"]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  "
        + "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in cells
    )


# --------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latency.py", description="Kernel-to-live-tail and kernel-to-log latency of markers."
    )
    parser.add_argument("--rate", type=positive_int, default=50, metavar="N",
                        help="marker execs per second (default 50)")  # fmt: skip
    parser.add_argument("--markers", type=positive_int, default=500, metavar="N",
                        help="markers per phase (default 500: 10 s at 50/s)")  # fmt: skip
    parser.add_argument("--load-rate", type=positive_int, default=50_000, metavar="N",
                        help="distinct file events per second in the load phase (default 50000)")  # fmt: skip
    parser.add_argument("--phase", action="append", choices=("idle", "load"), default=None,
                        help="run only this phase; repeatable (default: idle, then load)")  # fmt: skip
    parser.add_argument("--evidence-via", choices=EVIDENCE_VIA, default="flag",
                        help="point the daemon's evidence at the temporary log with --evidence"
                             " (flag, default), TRACEHOUND_EVIDENCE_DIR (env: evidence on by"
                             " default), or both")  # fmt: skip
    parser.add_argument("--agent", metavar="CMD",
                        help="command that runs tracehound (default: this venv's console script,"
                             " else PYTHON -m agent)")  # fmt: skip
    parser.add_argument("--wait", type=seconds, default=15.0, metavar="SECONDS",
                        help="after the last marker, how long to wait for stragglers (default 15)")  # fmt: skip
    parser.add_argument("--settle", type=seconds, default=3.0, metavar="SECONDS",
                        help="pause after start-up and after the load starts (default 3)")  # fmt: skip
    parser.add_argument("--ready-timeout", type=seconds, default=120.0, metavar="SECONDS")
    parser.add_argument("--stop-timeout", type=seconds, default=120.0, metavar="SECONDS")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    return parser


@dataclass
class PhaseResult:
    name: str
    markers: range
    failed_execs: int
    load: LoadResult | None


def run_phase(
    name: str,
    markers: range,
    args: argparse.Namespace,
    token: str,
    load_binary: Path,
    stream: StreamObserver,
    log: LogObserver,
    out: Any,
) -> PhaseResult:
    load_proc: subprocess.Popen[str] | None = None
    if name == "load":
        duration = args.settle + len(markers) / args.rate + 1.0
        prefix = f"/thbench-absent-{token}/f"
        load_proc = subprocess.Popen(
            [str(load_binary), str(args.load_rate), f"{duration:.3f}", prefix],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out.write(f"  load: {args.load_rate:,} distinct opens/s for {duration:.1f} s\n")
    try:
        time.sleep(args.settle)
        out.write(f"  {name}: {len(markers)} markers at {args.rate}/s\n")
        out.flush()
        failed = send_markers(token, markers, args.rate)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            if stream.arrivals.count(markers) == len(markers) and log.committed.count(
                markers
            ) == len(markers):
                break
            if stream.error or log.error:
                break
            time.sleep(0.1)
        load = None
        if load_proc is not None:
            stdout, stderr = load_proc.communicate(timeout=args.settle + 60)
            if load_proc.returncode != 0:
                raise BenchError(f"paced_open exited {load_proc.returncode}: {stderr.strip()}")
            load = parse_load(stdout)
            load_proc = None
        return PhaseResult(name, markers, failed, load)
    finally:
        if load_proc is not None:
            load_proc.kill()
            load_proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("latency: needs root (it runs tracehound run): sudo .venv/bin/python"
              " bench/latency.py", file=sys.stderr)  # fmt: skip
        return 2
    phases: list[str] = list(dict.fromkeys(args.phase or ["idle", "load"]))
    command = shlex.split(args.agent) if args.agent else default_agent_command()
    via: EvidenceVia = args.evidence_via
    token = f"thmark{secrets.token_hex(4)}n"
    pattern = re.compile(re.escape(token.encode()) + rb"(\d+)")
    out = sys.stdout
    out.write(f"tracehound latency bench: {host_line()}\n")
    out.write(f"daemon: {shlex.join([*command, 'run'])} on its defaults, evidence via {via}\n")
    out.write(f"target (printed, not asserted): {TARGET_TEXT}\n")
    for warning in host_warnings():
        out.write(f"WARNING: {warning}\n")
    out.flush()
    signal.signal(signal.SIGTERM, _terminate)
    sys.setswitchinterval(0.0005)  # the observers' timestamps wait less for the GIL
    rows: list[Row] = []
    results: list[PhaseResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tracehound-latency-") as tmp:
            root = Path(tmp)
            binary = compile_workloads(["paced"], root)["paced"]
            files = prepare_daemon(root / "daemon", command, via)
            with running_daemon(command, files, args.ready_timeout, args.stop_timeout):
                check_log_written(files)
                stream = StreamObserver(files.socket, pattern)
                log = LogObserver(files.evidence / "segments", pattern)
                stream.start()
                log.start()
                try:
                    if not stream.connected.wait(15) or stream.error:
                        raise BenchError(stream.error or "live tail client: no answer in 15 s")
                    first = 0
                    for name in phases:
                        markers = range(first, first + args.markers)
                        first += args.markers
                        results.append(
                            run_phase(name, markers, args, token, binary, stream, log, out)
                        )
                        for error in (stream.error, log.error):
                            if error:
                                raise BenchError(error)
                finally:
                    stream.stop.set()
                    log.stop.set()
                    stream.join(5)
                    log.join(5)
            stats = parse_stats(files.stats)
    except (BenchError, DaemonSetupError, OSError) as err:
        print(f"latency: error: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):
        print("latency: interrupted", file=sys.stderr)
        return 130

    for phase in results:
        label = f"idle, {args.rate}/s" if phase.load is None else f"load {args.load_rate:,}/s"
        sent = len(phase.markers) - phase.failed_execs
        rows.append(Row("live tail", label, sent, stream.arrivals.latency_ms(phase.markers),
                        STREAM_P99_TARGET_MS))  # fmt: skip
        rows.append(Row("log write", label, sent, log.written.latency_ms(phase.markers),
                        LOG_TARGET_MS))  # fmt: skip
        rows.append(Row("log commit", label, sent, log.committed.latency_ms(phase.markers),
                        LOG_TARGET_MS))  # fmt: skip
    out.write("\nlatency from the kernel event (record `time`) to arrival, per marker exec:\n")
    out.write(table(rows) + "\n")
    out.write(
        "  live tail: SSE event received by a /v1/stream client; log write: line readable in"
        " the segment (inotify); log commit: line durable (the reader's fsync returned)\n"
    )
    for phase in results:
        skew = stream.arrivals.clock_skew_ms(phase.markers) + log.committed.clock_skew_ms(
            phase.markers
        )
        if skew:
            out.write(
                f"  clock check ({phase.name}): wall-clock minus boot-clock latency, median"
                f" {_ms(percentile(skew, 50))} ms, worst {_ms(max(skew, key=abs))} ms\n"
            )
        missing = len(phase.markers) - phase.failed_execs - stream.arrivals.count(phase.markers)
        if missing:
            out.write(
                f"  {phase.name}: {missing} markers never reached the live tail within"
                f" {args.wait:g} s of the last one (lost or late: see the books below)\n"
            )
        if phase.failed_execs:
            out.write(f"  WARNING: {phase.failed_execs} marker execs failed ({phase.name})\n")
        if phase.load is not None:
            load = phase.load
            kept = "kept" if load.rate >= 0.98 * args.load_rate else "NOT kept"
            out.write(
                f"  load generator: {load.ops:,} opens at {load.rate:,.0f}/s (asked"
                f" {args.load_rate:,}/s: {kept}), fell behind by at most {load.lag_max_ms:.1f} ms"
                + (f", {load.unexpected} opens did not fail with ENOENT" if load.unexpected else "")
                + "\n"
            )
    out.write(f"  live tail: {stream.bytes / 1e6:,.1f} MB read, {stream.dropped:,} records"
              " dropped for this client (overflow notices)\n")  # fmt: skip
    lost = {k: b.lost for k, b in stats.kinds.items() if k in EVENT_KINDS}
    generated = {k: b.generated for k, b in stats.kinds.items() if k in EVENT_KINDS}
    out.write(
        "  daemon books (whole run): generated "
        + ", ".join(f"{k} {generated[k]:,}" for k in generated)
        + "; lost "
        + ", ".join(f"{k} {lost[k]:,}" for k in lost)
        + f"; balanced: {'yes' if stats.accounted else 'NO'}\n"
    )
    stream_rows = [r for r in rows if r.what == "live tail"]
    commit_rows = [r for r in rows if r.what == "log commit"]
    verdicts = [r.met for r in stream_rows + commit_rows]
    met = False if False in verdicts else None if None in verdicts else True
    out.write(f"target: {TARGET_TEXT}: {({None: 'n/a', True: 'met', False: 'NOT met'})[met]}\n")
    if args.json is not None:
        figures = {
            "host": host_line(),
            "rate": args.rate,
            "load_rate": args.load_rate,
            "evidence_via": via,
            "rows": [r.as_json() for r in rows],
            "load": {p.name: vars(p.load) for p in results if p.load is not None},
            "stream_dropped": stream.dropped,
            "books": {k: b.as_json() for k, b in stats.kinds.items()},
            "target": {"text": TARGET_TEXT, "met": met},
        }
        try:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        except OSError as err:
            print(f"latency: cannot write {args.json}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
