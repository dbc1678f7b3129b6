"""Soak: does the daemon's memory stay flat under a long, varied workload?

Starts ``tracehound run`` from this repository (``python -m agent`` with the
repository as the working directory, so it is this tree's code) as an
operator would: the sealed evidence log on (a temporary state directory, a
sealing key made with ``evidence keygen``, small segments and a bounded
retention so the disk does not fill), the local API on a temporary socket,
metrics on a free loopback port, ``--events`` into a FIFO that a thread
drains (the events writer and its redaction memo run, the disk does not
fill), one live-tail client reading ``/v1/stream`` over the socket for the
whole run, and a ``/v1/snapshot`` every ``--interval`` (the API's memo). Then, for ``--minutes``,
worker processes under Debian's ``/usr/bin/python3`` run a varied workload
in parallel:

    exec     fork+exec storms: /bin/true and a shell script with varying
             argv, and execs of paths that do not exist (failed execs)
    files    create/open/chmod/rename/unlink of ever new distinct paths in a
             temporary tree, mkdir/rmdir, opens that fail
    procs    short-lived processes (and grandchildren), each touching a few
             distinct files and a UDP socket, exiting with varied codes or
             killed by a signal
    sockets  TCP connect/accept on loopback, connects to closed ports
             (refused), UDP connects, UNIX sockets with distinct path and
             abstract names (bind, listen, connect, accept)

Every ``--interval`` seconds it prints the daemon's RSS (``VmRSS``) and peak
(``VmHWM``) from /proc, and the counters worth watching from ``/v1/stats``
(processes and records the aggregate holds, its evictions, queue depths,
events lost, records in the log, live-tail records dropped). At the end:
a verdict line (the RSS level at 1 minute, the highest per-second sample
of 30-60 s, against the highest sample after that; PASS when it stayed
within ``--tolerance``: RSS saws with each return of free pages, so a lone
sample could land in a trough), then the daemon is
stopped with SIGTERM (exit status must be 0) and the log is verified with
``evidence verify --key``. Exit status 0 only if all three pass.

    sudo .venv/bin/python bench/soak.py [--minutes 10] [--interval 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_args import positive_int, seconds

REPO = Path(__file__).resolve().parent.parent
WORKER_PYTHON = "/usr/bin/python3"
KINDS = ("exec", "files", "procs", "sockets")

# The workload, run by Debian's python3 (not the daemon's venv): one process
# per kind and worker, until its deadline. Kept in one string so the bench
# is one file; written to the temporary directory at start.
WORKER = r"""
import os, signal, socket, sys, threading, time

kind, root, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
tag = f"{kind}-{os.getpid()}"
work = os.path.join(root, tag)
os.makedirs(work, exist_ok=True)
done = 0

def run_child(path, argv):
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(path, argv)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)

def exec_storm(i):
    script = os.path.join(work, f"s{i % 16}.sh")
    if i < 16:
        with open(script, "w") as f:
            f.write('#!/bin/sh\n: "$@"\n')
        os.chmod(script, 0o755)
    n = i % 4
    if n == 0:
        run_child("/bin/true", ["/bin/true", f"storm-{i}", "x" * (i % 97)])
    elif n == 1:
        run_child(script, [script, "--run", str(i), f"--token=t{i * 7919 % 100003}"])
    elif n == 2:
        run_child("/bin/true", ["true"] + [f"a{j}" for j in range(i % 24)])
    else:
        run_child(os.path.join(work, f"missing-{i}"), ["missing", str(i)])  # ENOENT

def file_ops(i, base):
    d = os.path.join(base, f"d{i % 64}")
    if i < 64:
        os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"file-{i}.tmp")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.write(fd, b"soak\n")
    os.close(fd)
    os.chmod(p, 0o640)
    q = p + ".renamed"
    os.rename(p, q)
    with open(q, "rb") as f:
        f.read()
    os.unlink(q)
    if i % 8 == 0:
        sub = os.path.join(d, f"dir-{i}")
        os.mkdir(sub)
        os.rmdir(sub)
    if i % 5 == 0:
        try:
            os.open(os.path.join(d, f"absent-{i}"), os.O_RDONLY)
        except FileNotFoundError:
            pass

def short_lived(i):
    pid = os.fork()
    if pid == 0:
        try:
            for j in range(3):
                file_ops(i * 3 + j, work)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", 20000 + i % 40000))
            s.close()
            if i % 7 == 0:  # a grandchild
                g = os.fork()
                if g == 0:
                    os._exit(3)
                os.waitpid(g, 0)
            if i % 11 == 0:
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(i % 5)
    os.waitpid(pid, 0)

def tcp_server():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    def serve():
        while True:
            c, _ = srv.accept()
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()

def sockets(i, tcp):
    c = socket.create_connection(tcp)
    c.close()
    r = socket.socket()
    try:
        r.connect(("127.0.0.1", 1 + (i * 37) % 1023))  # privileged, closed: refused
    except OSError:
        pass
    r.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((f"127.0.{i % 250}.{1 + i % 200}", 30000 + i % 30000))
    u.close()
    if i % 2:
        name = os.path.join(work, f"u{i}.sock")
    else:
        name = f"\0tracehound-soak-{os.getpid()}-{i}"
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(name)
    ls.listen(1)
    cs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cs.connect(name)
    a, _ = ls.accept()
    for s in (a, cs, ls):
        s.close()
    if not name.startswith("\0"):
        os.unlink(name)

tcp = tcp_server() if kind == "sockets" else None
while time.monotonic() < deadline:
    if kind == "exec":
        exec_storm(done)
    elif kind == "files":
        file_ops(done, work)
    elif kind == "procs":
        short_lived(done)
    else:
        sockets(done, tcp)
    done += 1
print(f"{kind} {done}")
"""


class SoakError(Exception):
    """The soak could not run (not a verdict on the daemon)."""


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent(*args: str) -> list[str]:
    """This tree's tracehound, whatever is installed."""
    return [sys.executable, "-m", "agent", *args]


def api_get(sock: Path, path: str, timeout: float = 30.0) -> Any:
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--max-time", str(timeout), "--unix-socket",
         str(sock), f"http://localhost{path}"],
        capture_output=True, text=True, timeout=timeout + 5,
    )  # fmt: skip
    if out.returncode != 0:
        raise SoakError(f"GET {path}: curl exit {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


class SseCounter:
    """One ``/v1/stream`` client (curl), its bytes counted by a thread."""

    def __init__(self, sock: Path) -> None:
        self.proc = subprocess.Popen(
            ["curl", "-sN", "--unix-socket", str(sock), "http://localhost/v1/stream"],
            stdout=subprocess.PIPE,
        )
        self.bytes = 0
        self.events = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        tail = b""
        while chunk := self.proc.stdout.read1(1 << 16):
            self.bytes += len(chunk)
            data = tail + chunk
            self.events += data.count(b"\nid: ")
            tail = data[-4:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)


class FifoDrain:
    """Reads the daemon's ``--events`` FIFO to its end in a thread, counting
    lines: the events writer and its redaction memo run for the whole soak
    without the disk filling up."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self.lines = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as fifo:  # waits for the daemon to open it
            while chunk := fifo.read1(1 << 16):
                self.lines += chunk.count(b"\n")

    def stop(self) -> None:
        self._thread.join(timeout=10)


def watch_line(stats: dict[str, Any]) -> str:
    """The /v1/stats counters worth watching, on one line."""
    parts: list[str] = []
    aggregate = stats.get("aggregate")
    if aggregate:  # what the snapshot holds, against its caps
        held, caps = aggregate["held"], aggregate["caps"]
        ev = {k: v for k, v in aggregate["evictions"].items() if v}
        parts.append(
            f"held procs={held['processes']}/{caps['processes']} (live {held['live']})"
            f" files={held['files']} endpoints={held['endpoints']} execs={held['execs']}"
            f" bytes={held['bytes'] / 2**20:.1f}/{caps['bytes'] / 2**20:.0f}MiB"
        )
        parts.append("evicted " + (" ".join(f"{k}={v}" for k, v in sorted(ev.items())) or "0"))
        parts.append(f"reaped {aggregate.get('reaped', 0)}")
    queues = " ".join(f"{q['queue']}={q['depth']}/{q['capacity']}" for q in stats.get("queues", []))
    parts.append(f"queues {queues}")
    kinds = stats.get("capture", {}).get("kinds", {})
    # Syscalls are counted in syscalls, not records: left out of these sums.
    records = [v for k, v in kinds.items() if k != "syscall"]
    delivered = sum(k["delivered"] for k in records)
    lost = sum(k["lost_kernel"] + k["decode_errors"] + k["dropped_sink"] for k in records)
    parts.append(f"events {delivered} lost {lost}")
    evidence = stats.get("evidence") or {}
    parts.append(f"log records {evidence.get('records', '?')}")
    parts.append(f"sse_dropped {stats.get('api', {}).get('sse_dropped', '?')}")
    caches = stats.get("caches") or {}
    parts.append("memos " + " ".join(
        f"{name}={c['entries']}/{c['capacity']} {c['bytes'] / 2**20:.1f}MiB ev={c['evictions']}"
        for name, c in sorted(caches.items())
    ))  # fmt: skip
    return " | ".join(parts)


def start_workers(root: Path, script: Path, per_kind: int, duration: float) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    workers = []
    for kind in KINDS:
        for _ in range(per_kind):
            workers.append(
                subprocess.Popen(
                    [WORKER_PYTHON, str(script), kind, str(root / "tree"), str(duration)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> list[str]:
    """Wait for each worker (they stop at their deadline); what each says."""
    said = []
    for w in workers:
        try:
            out, err = w.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            out, err = w.communicate()
        text = out.decode(errors="replace").strip()
        if w.returncode != 0:
            text += f" (exit {w.returncode}: {err.decode(errors='replace').strip()[-300:]})"
        said.append(text)
    return said


def soak(args: argparse.Namespace, root: Path) -> int:
    state, sock = root / "state", root / "api.sock"
    ready, stats_file, log_path = root / "ready", root / "stats.json", root / "agent.log"
    keygen = subprocess.run(agent("evidence", "keygen", "--state-dir", str(state)),
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    if keygen.returncode != 0:
        raise SoakError(f"evidence keygen: {keygen.stderr.strip()}")
    key = keygen.stdout.strip()
    config = root / "tracehound.toml"
    config.write_text(
        f"[capture]\nstats_interval = 0\n"
        f'[evidence]\nenabled = true\nstate_dir = "{state}"\n'
        f"segment_mb = {args.segment_mb}\nretain_mb = {args.retain_mb}\n"
        f'[api]\nsocket = "{sock}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    script = root / "worker.py"
    script.write_text(WORKER)
    events = FifoDrain(root / "events.fifo")
    command = agent("run", "--config", str(config), "--ready-file", str(ready),
                    "--stats-file", str(stats_file), "--events", str(events.path))  # fmt: skip
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(command, cwd=REPO, stderr=log)
    snapshots = 0
    sse: SseCounter | None = None
    workers: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SoakError("the daemon did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.1)
        sse = SseCounter(sock)
        duration = args.minutes * 60
        print(f"soak: daemon pid {daemon.pid}, {args.minutes:g} min, "
              f"{args.workers} worker(s) per kind ({', '.join(KINDS)}) under {WORKER_PYTHON}",
              flush=True)  # fmt: skip
        rss0, _ = memory_kib(daemon.pid)
        print(f"  t=   0s  RSS {rss0 / 1024:6.1f} MiB (before the workload)", flush=True)
        start = time.monotonic()
        workers = start_workers(root, script, args.workers, duration)
        samples: list[tuple[float, int]] = []  # (seconds since start, VmRSS), every second
        rss_1m: int | None = None
        next_print = args.interval
        while (elapsed := time.monotonic() - start) < duration:
            time.sleep(min(1.0, duration - elapsed))
            elapsed = time.monotonic() - start
            if daemon.poll() is not None:
                raise SoakError(f"the daemon exited early ({daemon.returncode}):\n"
                                + log_path.read_text()[-2000:])  # fmt: skip
            rss, hwm = memory_kib(daemon.pid)
            samples.append((elapsed, rss))
            if rss_1m is None and elapsed >= 60:
                rss_1m = rss
            if elapsed >= next_print:
                next_print += args.interval
                # A snapshot each time too: the API's redaction memo works.
                subprocess.run(["curl", "-sS", "-o", "/dev/null", "--unix-socket", str(sock),
                                "http://localhost/v1/snapshot"], check=True)  # fmt: skip
                snapshots += 1
                line = watch_line(api_get(sock, "/v1/stats"))
                client = (f"sse {sse.events} events{'' if sse.alive() else ' GONE'}"
                          f" | --events {events.lines} lines | snapshots {snapshots}")  # fmt: skip
                print(f"  t={elapsed:4.0f}s  RSS {rss / 1024:6.1f} MiB  peak {hwm / 1024:6.1f} MiB"
                      f"  | {line} | {client}", flush=True)  # fmt: skip
        said = stop_workers(workers)
        workers = []
        print("workload: " + "; ".join(said), flush=True)
        final_rss, final_hwm = memory_kib(daemon.pid)
        if args.snapshot is not None:
            with open(args.snapshot, "wb") as out:
                subprocess.run(["curl", "-sS", "--unix-socket", str(sock),
                                "http://localhost/v1/snapshot"], stdout=out, check=True)  # fmt: skip
        client_ok = sse.alive()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=300)
    finally:
        for w in workers:
            w.kill()
            w.wait()
        if sse is not None:
            sse.stop()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        events.stop()
    verify = subprocess.run(agent("evidence", "verify", str(state), "--key", key),
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    books = json.loads(stats_file.read_text()) if stats_file.exists() else None
    # The daemon returns freed heap pages once a minute and after each
    # snapshot (agent/memory.py), so RSS saws up and down by several MiB; a
    # single sample at 60 s may catch a trough. The level at one minute is
    # therefore the highest per-second sample of the 30-60 s window, held
    # against the highest sample after it: peak against peak.
    first = [rss for t, rss in samples if 30 <= t <= 60]
    after = [rss for t, rss in samples if t > 60]
    if rss_1m is None or not after or not first:
        print("verdict: the run was shorter than a minute and a tick: no verdict "
              f"(final RSS {final_rss / 1024:.1f} MiB, peak {final_hwm / 1024:.1f} MiB)")  # fmt: skip
        flat = False
    else:
        level, top = max(first), max(after)
        flat = top <= level * (1 + args.tolerance)
        print(f"verdict: RSS at 1 min {rss_1m / 1024:.1f} MiB (sample), highest 30-60 s"
              f" {level / 1024:.1f} MiB, highest after {top / 1024:.1f} MiB"
              f" ({(top / level - 1) * 100:+.1f}%), peak {final_hwm / 1024:.1f} MiB:"
              f" {'PASS' if flat else 'FAIL'} (within {args.tolerance:.0%})")  # fmt: skip
    print(f"live-tail client: {sse.events} events, {sse.bytes // 1024} KiB, "
          f"{'still reading at the end' if client_ok else 'ENDED EARLY'}")  # fmt: skip
    if books is not None:
        lost = {k: v["lost_kernel"] + v["decode_errors"] + v["dropped_sink"]
                for k, v in books["kinds"].items()}  # fmt: skip
        print(f"books balanced {books['balanced']}; lost (all counted) per kind {lost}")
    print(f"daemon exit status {code}: {'PASS' if code == 0 else 'FAIL'}")
    first = (verify.stdout.strip() or verify.stderr.strip()).splitlines()[:1]
    print(f"evidence verify --key: exit {verify.returncode}: "
          f"{first[0] if first else ''}: {'PASS' if verify.returncode == 0 else 'FAIL'}")  # fmt: skip
    if code != 0 or verify.returncode != 0:
        print("daemon log tail:\n" + log_path.read_text(errors="replace")[-2000:])
    return 0 if flat and client_ok and code == 0 and verify.returncode == 0 else 1


def fraction(text: str) -> float:
    value = seconds(text)
    if not value < 10:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=seconds, default=10.0,
                        help="how long the workload runs (default 10)")  # fmt: skip
    parser.add_argument("--interval", type=seconds, default=30.0,
                        help="seconds between readings (default 30)")  # fmt: skip
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="worker processes per kind (default 1)")  # fmt: skip
    parser.add_argument("--tolerance", type=fraction, default=0.10,
                        help="allowed growth over the 1-minute RSS (default 0.10)")  # fmt: skip
    parser.add_argument("--segment-mb", type=seconds, default=4.0,
                        help="evidence segment size in MB (default 4)")  # fmt: skip
    parser.add_argument("--retain-mb", type=seconds, default=300.0,
                        help="evidence retention in MB (default 300)")  # fmt: skip
    parser.add_argument("--snapshot", metavar="FILE",
                        help="save /v1/snapshot to FILE at the end, before the stop")  # fmt: skip
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (state, log, config) and say where")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (it runs tracehound run)", file=sys.stderr)
        return 2
    if not args.minutes > 0 or not args.interval > 0:
        print("soak: --minutes and --interval must be above 0", file=sys.stderr)
        return 2
    for tool in ("curl", WORKER_PYTHON):
        if shutil.which(tool) is None:
            print(f"soak: {tool} not found", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="tracehound-soak-"))
    try:
        return soak(args, root)
    except SoakError as err:
        print(f"soak: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"soak: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
