"""The daemon's own CPU and memory, idle and under the bench workloads.

Starts ``tracehound run`` as an operator would (evidence log, local API,
metrics; a temporary state directory and socket), with one live-tail client
attached through the API as a tail would be, then measures from
``/proc/PID``: CPU (user+system over wall time, in CPUs) and resident
memory (now, and the peak ``VmHWM``) over each phase:

    idle   nothing run on purpose, for --idle seconds
    open   the open flood (--opens open+close)
    exec   the exec flood (--execs fork+exec+wait)

Prints a table, the time from SIGTERM to the daemon's exit, and the
daemon's books (lost per kind) so a figure from a run that lost events is
not taken for a good one.

    sudo .venv/bin/python bench/daemon_footprint.py [--idle 20] [--opens 500000] [--execs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench_args import positive_int, seconds
from capture_bench import (
    BenchError,
    compile_workloads,
    default_agent_command,
    run_workload,
)

TICK = os.sysconf("SC_CLK_TCK")


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


def measure(pid: int, phase: str, run: object) -> list[str]:
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    if callable(run):
        run()
    cpu = cpu_seconds(pid) - cpu0
    wall = time.monotonic() - wall0
    rss, peak = memory_kib(pid)
    return [phase, f"{wall:.1f} s", f"{cpu / wall:.3f}", f"{rss / 1024:.0f} MiB", f"{peak / 1024:.0f} MiB"]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=seconds, default=20.0, help="idle seconds (default 20)")
    parser.add_argument("--opens", type=positive_int, default=500_000, help="open flood size")
    parser.add_argument("--execs", type=positive_int, default=2_000, help="exec flood size")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("daemon_footprint: needs root (it runs tracehound run)", file=sys.stderr)
        return 2
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
        command = [*default_agent_command(), "run", "--config", str(config), "--no-seed",
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
            rows = [["phase", "wall", "CPUs", "RSS", "peak RSS"]]
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
