"""The daemon's own CPU and memory, idle and under the bench workloads.

Starts ``tracehound run`` as an operator would (evidence log, local API,
metrics; a temporary state directory and socket), with one live-tail client
attached through the API as a tail would be, then measures from
``/proc/PID``: CPU (user+system over wall time, in CPUs) and resident
memory (now, and the peak ``VmHWM``), and its evidence worker's CPU and
memory, with the two processes' PSS together (shared pages once), over each
phase:

    idle   nothing run on purpose, for --idle seconds
    open   the open flood (--opens open+close)
    exec   the exec flood (--execs fork+exec+wait)

Prints a table, the time from SIGTERM to the daemon's exit, and the
daemon's books (lost per kind) so a figure from a run that lost events is
not taken for a good one.

    sudo .venv/bin/python bench/daemon_footprint.py [--idle 20] [--opens 500000] [--execs 2000]

First, READY time (issue 9: within 1 s), from the daemon's exec to its
sd_notify ``READY=1`` (the bench binds the ``$NOTIFY_SOCKET`` datagram
socket), side by side: with a fresh, empty log and with a last segment of
``--ready-segment-mib`` (64) MiB of sealed records, made beforehand with
EvidenceStore; alternating, ``--ready-rounds`` (3) of each, medians. The
daemons share a program cache of the bench's own, empty at first: one
start before the rounds compiles and stores (printed apart, as a first
start after an install or upgrade), the rounds load from it; each run
says which (``hit``/``miss``). ``--ready-rounds 0`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench_args import positive_int, seconds
from bench_daemon import DaemonSetupError, prepare_daemon
from capture_bench import (
    BenchError,
    compile_workloads,
    default_agent_command,
    run_workload,
)

TICK = os.sysconf("SC_CLK_TCK")
#: The daemon's program cache directory (agent/capture/cache_store.py): the
#: READY bench gives it one of its own, empty at first.
CACHE_ENV = "TRACEHOUND_CACHE_DIR"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def worker_of(pid: int) -> int | None:
    """The daemon's evidence worker (a forked child named th-evidence), if any."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return next(
            (
                int(c)
                for c in children
                if Path(f"/proc/{c}/comm").read_text().strip() == "th-evidence"
            ),
            None,
        )
    except OSError:
        return None


def pss_kib(pid: int) -> int:
    """Proportional set size in KiB: shared pages counted once across processes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def measure(pid: int, phase: str, run: object) -> list[str]:
    """One phase's row: the daemon's CPU and memory, its evidence worker's,
    and the two together as PSS (the worker is a fork: it shares pages)."""
    worker = worker_of(pid)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    wcpu0 = cpu_seconds(worker) if worker else 0.0
    if callable(run):
        run()
    cpu = cpu_seconds(pid) - cpu0
    wall = time.monotonic() - wall0
    rss, peak = memory_kib(pid)
    row = [phase, f"{wall:.1f} s", f"{cpu / wall:.3f}", f"{rss / 1024:.0f} MiB", f"{peak / 1024:.0f} MiB"]  # fmt: skip
    if worker is None:
        return [*row, "-", "-", f"{pss_kib(pid) / 1024:.0f} MiB"]
    wcpu = cpu_seconds(worker) - wcpu0
    wrss, _ = memory_kib(worker)
    both = (pss_kib(pid) + pss_kib(worker)) / 1024
    return [*row, f"{wcpu / wall:.3f}", f"{wrss / 1024:.0f} MiB", f"{both:.0f} MiB"]


REPO = Path(__file__).resolve().parent.parent
READY_TARGET_S = 1.0


def prefill_log(state_dir: Path, size: int) -> tuple[int, int]:
    """A sealed log in ``state_dir`` whose only segment holds just under ``size``
    bytes of distinct file.open records, as the daemon writes them.

    Written through EvidenceStore (its own seals, one a second and at close)
    with the segment limit above ``size``, so it is one segment. Returns
    (records, segment bytes).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from agent.evidence.keys import create_key
    from agent.evidence.store import EvidenceStore

    create_key(state_dir)
    boot_id = "b490f5db-7b85-4fcf-8136-23245853c1df"

    def body(i: int) -> dict[str, object]:
        ts = 12_000_000_000_000 + i * 1000
        return {
            "data": {"cgroup_id": "1", "comm": "make", "flags": 524288, "gid": 0, "mode": 0,
                     "op": "open", "path": f"/usr/lib/x86_64-linux-gnu/prefill/{i:08d}.so",
                     "path_cut": False, "pid": 4000 + i % 30000, "redacted": [], "ret": 3,
                     "tid": 4000 + i % 30000, "ts_ns": str(ts), "uid": 0},
            "datacontenttype": "application/json", "id": f"{i:032x}",
            "source": "tracehound://bench", "specversion": "1.0", "subject": f"pid/{4000 + i}",
            "thbootid": boot_id, "thhost": "bench", "thproducer": "tracehound", "thseq": i,
            "thversion": "0.1.0", "time": "2026-12-01T11:55:44.278663103Z",
            "type": "dev.tracehound.file.open.v1",
        }  # fmt: skip

    records = 0
    with EvidenceStore(state_dir, segment_max_bytes=size + (16 << 20)) as store:
        segment = lambda: store.extent()[-1][1]  # noqa: E731
        while segment() < size - 2_000_000:  # batches while far from the end
            store.append_many(
                ("dev.tracehound.file.open.v1", body(records + n)) for n in range(1000)
            )
            records += 1000
        line = max(1, segment() // max(records, 1)) + 1024  # a generous record + seal
        while segment() + line < size:
            store.append("dev.tracehound.file.open.v1", body(records))
            store.commit()
            records += 1
        return records, segment()


def time_to_ready(command: Sequence[str], root: Path, prefilled: Path | None,
                  timeout: float, cache: Path) -> tuple[float, str]:  # fmt: skip
    """Seconds from exec to ``READY=1`` of one daemon (then stopped with
    SIGTERM), and how it got its BPF programs (its stats' ``cache.state``:
    ``hit`` from the program cache in ``cache``, ``miss`` compiled).

    ``prefilled``: a log to copy in as the daemon's evidence directory
    (copied afresh each round: the daemon appends to it), else a fresh one.
    """
    files = prepare_daemon(root, command, "flag", keygen=prefilled is None)
    if prefilled is not None:
        shutil.copytree(prefilled, files.evidence, symlinks=True)
    notify_path = root / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        env = {**files.env(), "NOTIFY_SOCKET": str(notify_path), CACHE_ENV: str(cache)}
        with open(files.stderr, "wb") as err:
            started = time.monotonic()
            agent = subprocess.Popen([*command, *files.run_args(), "--stats-interval", "0"], cwd=REPO,
                                     env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     start_new_session=True)  # fmt: skip
        try:
            deadline = started + timeout
            while True:
                notify.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
                try:
                    message = notify.recv(4096)
                except TimeoutError:
                    message = b""
                if b"READY=1" in message.split(b"\n"):
                    ready_s = time.monotonic() - started
                    break
                if agent.poll() is not None:
                    lines = files.stderr.read_text(errors="replace").strip().splitlines()
                    raise BenchError(f"the daemon exited with status {agent.returncode} before"
                                     f" READY=1: {lines[-1] if lines else 'no stderr'}")  # fmt: skip
                if time.monotonic() > deadline:
                    raise BenchError(f"no READY=1 from the daemon within {timeout:g} s")
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
    try:
        state = str(json.loads(files.stats.read_text()).get("cache", {}).get("state", "?"))
    except (OSError, ValueError, AttributeError):
        state = "?"
    shutil.rmtree(root, ignore_errors=True)
    return ready_s, state


def ready_bench(command: Sequence[str], rounds: int, segment_mib: int) -> int:
    """Print READY fresh and with a ``segment_mib`` MiB last segment, side by side."""
    size = segment_mib << 20
    with tempfile.TemporaryDirectory(prefix="tracehound-ready-") as tmp:
        root = Path(tmp)
        try:
            started = time.monotonic()
            records, written = prefill_log(root / "prefilled", size)
            print(f"READY: prefilled a log of {records:,} records, one {written / 2**20:.1f} MiB"
                  f" segment, in {time.monotonic() - started:.1f} s")  # fmt: skip
            # The program cache starts empty: the first start compiles (as
            # after an install or an upgrade), the rounds then load from it.
            cache = root / "program-cache"
            cold = time_to_ready(command, root / "cold", None, 120, cache)
            fresh: list[tuple[float, str]] = []
            full: list[tuple[float, str]] = []
            for index in range(rounds):
                order = ("fresh", "full") if index % 2 == 0 else ("full", "fresh")
                for side in order:
                    where = root / f"{side}-{index}"
                    if side == "fresh":
                        fresh.append(time_to_ready(command, where, None, 120, cache))
                    else:
                        full.append(time_to_ready(command, where, root / "prefilled", 120, cache))
        except (BenchError, DaemonSetupError, OSError, ValueError) as err:
            print(f"daemon_footprint: READY: {err}", file=sys.stderr)
            return 1

    def cell(values: list[tuple[float, str]]) -> str:
        runs = ", ".join(f"{v:.2f} {state}" for v, state in values)
        return f"{statistics.median(v for v, _ in values):.2f} s (runs {runs})"

    print(f"READY (exec to sd_notify READY=1), median of {rounds}, target <= {READY_TARGET_S:g} s:")
    print(f"  {'fresh log:':<26}{cell(fresh)}")
    print(f"  {f'{segment_mib} MiB last segment:':<26}{cell(full)}")
    print(f"  {'first start (compiles):':<26}{cold[0]:.2f} s (program cache {cold[1]})")
    met = max(statistics.median(v for v, _ in side) for side in (fresh, full)) <= READY_TARGET_S
    print(f"  target READY within {READY_TARGET_S:g} s, fresh and with a {segment_mib} MiB last"
          f" segment: {'met' if met else 'NOT met'}")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=seconds, default=20.0, help="idle seconds (default 20)")
    parser.add_argument("--opens", type=positive_int, default=500_000, help="open flood size")
    parser.add_argument("--execs", type=positive_int, default=2_000, help="exec flood size")
    parser.add_argument("--ready-rounds", type=int, default=3, metavar="N",
                        help="READY measurements of each kind (default 3; 0 skips them)")  # fmt: skip
    parser.add_argument("--ready-segment-mib", type=positive_int, default=64, metavar="MIB",
                        help="size of the prefilled last segment (default 64)")  # fmt: skip
    parser.add_argument("--agent", metavar="CMD",
                        help="command that runs tracehound (default: this venv's console script,"
                             " else PYTHON -m agent)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("daemon_footprint: needs root (it runs tracehound run)", file=sys.stderr)
        return 2
    if args.ready_rounds < 0:
        print("daemon_footprint: --ready-rounds must be 0 or more", file=sys.stderr)
        return 2
    agent_command = shlex.split(args.agent) if args.agent else default_agent_command()
    if args.ready_rounds and ready_bench(agent_command, args.ready_rounds, args.ready_segment_mib):
        return 1
    with tempfile.TemporaryDirectory(prefix="tracehound-footprint-") as tmp:
        root = Path(tmp)
        try:
            binaries = compile_workloads(["open", "exec"], root)
        except BenchError as err:
            print(f"daemon_footprint: {err}", file=sys.stderr)
            return 1
        sock, stats_file, ready = root / "api.sock", root / "stats.json", root / "ready"
        config = root / "tracehound.toml"
        config.write_text(
            f'[evidence]\nenabled = true\nstate_dir = "{root / "state"}"\n'
            f'[api]\nsocket = "{sock}"\n[metrics]\nlisten = "127.0.0.1:19464"\n'
        )
        command = [*agent_command, "run", "--config", str(config), "--no-seed",
                   "--ready-file", str(ready), "--stats-file", str(stats_file),
                   "--stats-interval", "0"]  # fmt: skip
        with open(root / "agent.log", "wb") as log:
            agent = subprocess.Popen(command, stderr=log)
        tail = None
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise BenchError((root / "agent.log").read_text()[-2000:])
                time.sleep(0.1)
            tail = subprocess.Popen(
                ["curl", "-sN", "--unix-socket", str(sock), "http://localhost/v1/stream"],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(2)  # settle after start-up (compilation is not idle)
            rows = [["phase", "wall", "CPUs", "RSS", "peak RSS", "worker CPUs", "worker RSS",
                     "PSS both"]]  # fmt: skip
            rows.append(measure(agent.pid, "idle", lambda: time.sleep(args.idle)))
            rows.append(measure(agent.pid, f"open flood ({args.opens:,})",
                                lambda: run_workload(binaries["open"], args.opens)))  # fmt: skip
            rows.append(measure(agent.pid, f"exec flood ({args.execs:,})",
                                lambda: run_workload(binaries["exec"], args.execs)))  # fmt: skip
            with urllib.request.urlopen("http://127.0.0.1:19464/metrics", timeout=10) as page:
                sse = [ln for ln in page.read().decode().splitlines()
                       if ln.startswith("tracehound_api_sse_dropped_total")]  # fmt: skip
            stop0 = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=120)
            stop_s = time.monotonic() - stop0
        finally:
            if tail is not None:
                tail.kill()
            if agent.poll() is None:
                agent.kill()
        stats = json.loads(stats_file.read_text())
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)))
        lost = {k: v["generated"] - v["delivered"] for k, v in stats["kinds"].items()}
        print(
            f"exit {code}; books balanced {stats['balanced']}; lost (all counted) per kind {lost}"
        )
        print("live-tail client: " + (sse[0] if sse else "no sse counter"))
        print(f"stop: SIGTERM to exit {stop_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
