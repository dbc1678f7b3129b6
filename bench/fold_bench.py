"""The drain's cost per event with and without folding, on an open flood.

usage: python -m bench.fold_bench [--ops N] [--rounds R]   (as root; not a test)

Two measurements, printed side by side:

1. **offline**: the real kernel's raw records of ``open_flood N``
   (bench/open_flood.c: open("/dev/null") + close), taken from a ring
   buffer large enough to hold them all (the consumer held back), then fed
   to the drain's own code, ``Drain._decode_batch`` + ``Drain._deliver``
   into an AggregatingSink (the daemon's default sink), folding off and on,
   the same records each time. ns per kernel event, best of R rounds.
2. **live**: ``open_flood N`` with the drain running (folding off, on):
   the workload's ns per open, the kernel's losses, and the agent's CPU
   seconds per kernel event received (the whole process: drain, poller,
   sinks).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from agent.capture.drain import DEFAULT_BATCH_MAX, Drain
from agent.capture.fold import FoldSettings
from agent.capture.ledger import Ledger
from agent.capture.loader import LoadedCapture, LoadOptions, load
from agent.capture.session import CaptureSession
from agent.commands.launcher import launch
from agent.sinks.aggregating import AggregatingSink

BENCH = Path(__file__).resolve().parent
ON = FoldSettings(window_ms=100, capacity=4096)
OFF = FoldSettings(window_ms=0, capacity=4096)


def build(outdir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("fold_bench: gcc not found (apt-get install gcc)")
    binary = outdir / "open_flood"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(BENCH / "open_flood.c")], check=True)
    return binary


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_records(binary: Path, ops: int) -> tuple[LoadedCapture, list[bytes]]:
    """Every record of one open flood, read with no consumer running."""
    # 608 bytes a record: room for ops of them, a power of two in pages.
    pages = 1 << max(10, (ops * 640 // 4096).bit_length())
    capture = load(LoadOptions(ringbuf_pages=pages, scoped=True))
    launched = launch(["/bin/sh", "-c", f"exec {binary} {ops} > /dev/null"], "/bin/sh")
    capture.add_to_scope(launched.pid)
    assert launched.release() is None
    os.waitpid(launched.pid, 0)
    ring = capture.mapped_ring()
    records: list[bytes] = []
    while ring.pending():
        records.extend(ring.read(DEFAULT_BATCH_MAX))
    ring.close()
    return capture, records


def offline(capture: LoadedCapture, records: list[bytes], fold: FoldSettings) -> float:
    """ns per record through the drain's decode (or fold) and delivery."""
    batches = [
        records[i : i + DEFAULT_BATCH_MAX] for i in range(0, len(records), DEFAULT_BATCH_MAX)
    ]

    async def run() -> float:
        drain = Drain(capture, AggregatingSink(), Ledger(), fold=fold)
        start = time.thread_time_ns()
        for batch in batches:
            drain._decode_batch(batch)
            await drain._deliver()
        if drain.fold is not None:
            drain.fold.flush(drain._batch)
            await drain._deliver()
        return (time.thread_time_ns() - start) / len(records)

    return trio.run(run)


def live(
    binary: Path, ops: int, fold: FoldSettings, tmp: Path
) -> tuple[float, int, int, float, int]:
    """(workload ns/op, kernel lost, received, agent CPU ns per event, records delivered)."""
    capture = load(LoadOptions(scoped=True))
    report = tmp / "open_flood.out"
    try:
        session = CaptureSession(capture, AggregatingSink(), fold=fold)

        async def main() -> None:
            child = launch(["/bin/sh", "-c", f"exec {binary} {ops} > {report}"], "/bin/sh")
            capture.add_to_scope(child.pid)
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                assert child.release() is None
                fd = os.pidfd_open(child.pid)
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    trio.lowlevel.notify_closing(fd)
                    os.close(fd)
                os.waitpid(child.pid, 0)
                session.stop()

        before = cpu_seconds()
        trio.run(main)
        spent = cpu_seconds() - before
        stats = session.stats()
    finally:
        capture.close()
    books = stats.kinds["file"]
    ns_per_op = float(report.read_text().split("ns_per_op=")[1].split()[0])
    # Records delivered: what was received, less the repeats inside folded ones.
    fold_stats = stats.fold
    absorbed = sum(fold_stats.absorbed.values()) if fold_stats else 0
    records = books.received - absorbed + (sum(fold_stats.folded.values()) if fold_stats else 0)
    cpu_ns = spent * 1e9 / max(books.received, 1)
    return ns_per_op, books.lost_kernel, books.received, cpu_ns, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(Path(tmp))
        capture, records = raw_records(binary, args.ops)
        try:
            files = sum(1 for r in records if r[:4] == b"\x04\0\0\0")
            print(f"offline: {len(records)} raw records ({files} file) of open_flood {args.ops}")
            for name, fold in (("off", OFF), ("on (100 ms)", ON)):
                best = min(offline(capture, records, fold) for _ in range(args.rounds))
                print(f"  drain decode+deliver, folding {name:12s} {best:7.0f} ns/event")
        finally:
            capture.close()
        print(
            f"live: open_flood {args.ops} with the drain running (best workload time of {args.rounds})"
        )
        for name, fold in (("off", OFF), ("on (100 ms)", ON)):
            runs = [live(binary, args.ops, fold, Path(tmp)) for _ in range(args.rounds)]
            ns, lost, received, cpu, recs = min(runs)
            print(
                f"  folding {name:12s} workload {ns:6.0f} ns/op  lost {lost:7d}"
                f"  received {received:7d}  records {recs:7d}  agent CPU {cpu:6.0f} ns/event"
            )


if __name__ == "__main__":
    main()
