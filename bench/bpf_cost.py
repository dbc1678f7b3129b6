"""BPF cost bench: nanoseconds of kernel time per event, per program.

What each probe costs the traced process is the time its BPF programs run
in the kernel, on the traced syscall's own path. The kernel measures that
itself when ``kernel.bpf_stats_enabled`` is 1: every program's
``run_time_ns`` and ``run_cnt`` (``bpftool prog show``). This bench loads
tracehound's programs (as ``tracehound run`` does, host-wide), turns the
stats on, runs one workload per probe family, and prints for every program
that ran: calls and ns per call. The syscall handlers are tail-called from
the two raw ``sys_enter``/``sys_exit`` dispatchers, whose figures include
them; the dispatchers also run (and count) for every untraced syscall.

Workloads (compiled or run here, each a loop of one kind of event):

* ``open``: open("/dev/null") + close (bench/open_flood.c), with path
  resolution on and off;
* ``exec``: fork + execve("/bin/true") (bench/exec_flood.c);
* ``udp``: sendto a loopback UDP port;
* ``call``: setresuid(0, 0, 0) as root (a credential change the kernel
  allows, recorded with its ids before and after);
* ``uring``: io_uring openat/connect/sendmsg (tests/workloads/uring_ops.c,
  needs liburing-dev).

Needs root and bpftool (Debian package ``bpftool``). The ring buffer is
drained meanwhile so nothing is lost for want of room. Figures are printed,
never asserted: stats cost ~20 ns per program run themselves, and a busy
host inflates all of them alike; compare programs within one run.

    sudo .venv/bin/python bench/bpf_cost.py [--n N] [--workloads open,exec,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.capture.loader import LoadedCapture, LoadOptions, load

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
Workload = Callable[[Path, int], None]


def programs() -> dict[int, dict[str, Any]]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    return {int(p["id"]): p for p in json.loads(out.stdout or "[]")}


def build(source: Path, out: Path, *libs: str) -> Path:
    subprocess.run(["gcc", "-O2", "-o", str(out), str(source), *libs], check=True)
    return out


def open_flood(work: Path, n: int) -> None:
    binary = build(BENCH / "open_flood.c", work / "open_flood")
    subprocess.run([str(binary), str(n)], check=True, stdout=subprocess.DEVNULL)


def exec_flood(work: Path, n: int) -> None:
    binary = build(BENCH / "exec_flood.c", work / "exec_flood")
    subprocess.run([str(binary), str(max(1, n // 100))], check=True, stdout=subprocess.DEVNULL)


def udp_flood(work: Path, n: int) -> None:
    script = (
        "import socket, sys\n"
        "r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(('127.0.0.1', 0))\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(int(sys.argv[1])):\n"
        "    s.sendto(b'x', r.getsockname())\n"
        "    r.recv(16)\n"
    )
    subprocess.run(["/usr/bin/python3", "-c", script, str(n // 10)], check=True)


def call_flood(work: Path, n: int) -> None:
    script = "import os, sys\nfor i in range(int(sys.argv[1])): os.setresuid(0, 0, 0)\n"
    subprocess.run(["/usr/bin/python3", "-c", script, str(n // 10)], check=True)


def uring_ops(work: Path, n: int) -> None:
    binary = build(ROOT / "tests" / "workloads" / "uring_ops.c", work / "uring_ops", "-luring")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    target = work / "target.txt"
    target.write_text("x")
    try:
        for _ in range(max(1, n // 2000)):
            subprocess.run(
                [str(binary), str(work), target.name,
                 str(listener.getsockname()[1]), str(udp.getsockname()[1])],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
    finally:
        listener.close()
        udp.close()


WORKLOADS: dict[str, Workload] = {
    "open": open_flood,
    "exec": exec_flood,
    "udp": udp_flood,
    "call": call_flood,
    "uring": uring_ops,
}


@contextmanager
def stats_on() -> Iterator[None]:
    before = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        yield
    finally:
        STATS.write_text(before)


def measure(
    capture: LoadedCapture, mine: dict[str, int], run: Callable[[], None]
) -> dict[str, tuple[int, int]]:
    """(calls, ns) per program of ``mine`` while ``run`` runs, the ring drained."""
    ring = capture.mapped_ring()
    try:
        start = {name: programs().get(pid, {}) for name, pid in mine.items()}
        done = False

        def drain() -> None:
            while not done:
                ring.read(1 << 20)
                time.sleep(0.002)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        with stats_on():
            run()
            end = {name: programs().get(pid, {}) for name, pid in mine.items()}
        done = True
        drainer.join()
    finally:
        ring.close()
    result: dict[str, tuple[int, int]] = {}
    for name in mine:
        calls = int(end[name].get("run_cnt", 0)) - int(start[name].get("run_cnt", 0))
        ns = int(end[name].get("run_time_ns", 0)) - int(start[name].get("run_time_ns", 0))
        if calls:
            result[name] = (calls, ns)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="events per flood (default 200000)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("bpftool") is None:
        print("bpf_cost: needs root and bpftool (apt-get install bpftool)", file=sys.stderr)
        return 2
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        print(
            f"bpf_cost: unknown workload {unknown[0]!r}, expected one of {', '.join(WORKLOADS)}",
            file=sys.stderr,
        )
        return 2
    variants = [("resolve on", LoadOptions())]
    if "open" in chosen:
        variants.append(("resolve off", LoadOptions(resolve_paths=False)))
    for label, options in variants:
        before = set(programs())
        with tempfile.TemporaryDirectory() as tmp:
            capture = load(options, cache_dir=Path(tmp) / "cache")
            try:
                mine = {str(p["name"]): pid for pid, p in programs().items() if pid not in before}
                for workload in chosen if label == "resolve on" else ["open"]:
                    work = Path(tmp) / workload
                    work.mkdir()
                    stats = measure(
                        capture, mine, lambda w=workload, d=work: WORKLOADS[w](d, args.n)
                    )
                    print(f"{workload} ({label}):", flush=True)
                    for name, (calls, ns) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
                        print(
                            f"  {name:<24} {calls:>10} calls {ns / calls:>8.0f} ns/call", flush=True
                        )
            finally:
                capture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
