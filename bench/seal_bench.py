"""Seal bench: what sealing costs at high rates, old policy and new, side by side.

:class:`~agent.evidence.store.EvidenceStore` ``append`` + ``commit`` (a
commit every ``--batch`` records, the pipeline's batch size), fsync
``batch``, in a fresh directory on ``--dir``'s filesystem, timed from the
first append through ``close()``. Variants, in one run, each ``--rounds``
times (median reported):

* ``unsealed``: no key file, chain only: the floor;
* ``every 1000 records``: the old default (``checkpoint_every_records=1000``);
* ``1 s interval``: the new default (``seal_interval_s`` = 1 s, no count).

Each seal costs a flush and fsync of the log, then the key file's rewrite
(write, fsync, rename, fsync of ``keys/``), so the old policy's cost grows
with the rate (100 seals a second at 100,000 records/s) while the new one's
stays at one a second. The bench also times ``checkpoint()`` alone (a
record, then a seal), and projects both policies' seal time per second of
log at 100,000 records/s: that is what is left once a record costs a few
microseconds (the encode-once data path), where the append here still
costs tens.

Every log is verified with its key afterwards (not timed). Run from the
repository root::

    PYTHONPATH=. .venv/bin/python bench/seal_bench.py [--records N] [--rounds R] [--batch B] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.evidence.keys import create_key
from agent.evidence.seal import decode_key
from agent.evidence.store import SEAL_INTERVAL_S, EvidenceStore
from agent.evidence.verify import verify_store

VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "unsealed": (False, {}),
    "every 1000 records (old)": (True, {"checkpoint_every_records": 1000, "seal_interval_s": 900}),
    f"{SEAL_INTERVAL_S:g} s interval (new)": (True, {}),
}
RATE: int = 100_000


def body(n: int) -> dict[str, Any]:
    """A record about the size of a file event's CloudEvent (~500 bytes)."""
    return {
        "id": f"{n:032x}",
        "source": "tracehound://host/bench",
        "specversion": "1.0",
        "time": "2026-12-01T12:00:00.000000000Z",
        "data": {
            "pid": 1000 + n % 5000,
            "comm": "python3",
            "op": "open",
            "path": f"/usr/lib/x86_64-linux-gnu/lib{n % 977}.so.6",
            "flags": ["O_RDONLY", "O_CLOEXEC"],
            "ret": 3,
            "uid": 0,
            "cgroup": "/system.slice/bench.service",
        },
    }


def run_variant(
    root: Path, sealed: bool, options: dict[str, Any], records: int, batch: int
) -> tuple[float, int, bool]:
    """Records per second, seals written, and whether the log verified."""
    state = Path(tempfile.mkdtemp(dir=root)) / "state"
    key = decode_key(create_key(state)) if sealed else None
    bodies = [body(n) for n in range(records)]
    store = EvidenceStore(state, fsync="batch", **options)
    start = time.perf_counter()
    for n, item in enumerate(bodies, 1):
        store.append("dev.tracehound.file.v1", item)
        if n % batch == 0:
            store.commit()
    store.close()
    elapsed = time.perf_counter() - start
    report = verify_store(state, key=key)
    return records / elapsed, report.seals, report.ok


def seal_cost(root: Path, n: int = 200) -> float:
    """Seconds per seal (one record appended, then ``checkpoint()``), median."""
    state = Path(tempfile.mkdtemp(dir=root)) / "state"
    create_key(state)
    times = []
    with EvidenceStore(state, fsync="batch", seal_interval_s=3600) as store:
        for i in range(n):
            store.append("note", {"n": i})
            start = time.perf_counter()
            store.checkpoint()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"{args.records} records, commit every {args.batch}, fsync=batch, in {root}")
        print(f"{'policy':<28} {'records/s':>10} {'seals':>6}  log")
        ok = True
        for name, (sealed, options) in VARIANTS.items():
            runs = [
                run_variant(root, sealed, options, args.records, args.batch)
                for _ in range(args.rounds)
            ]
            rate = statistics.median(r[0] for r in runs)
            good = all(r[2] for r in runs)
            ok &= good
            print(f"{name:<28} {rate:>10,.0f} {runs[0][1]:>6}  {'OK' if good else 'BROKEN'}")
        cost = seal_cost(root)
        old, new = RATE / 1000 * cost, 1 / SEAL_INTERVAL_S * cost
        print(f"one seal (checkpoint(): flush, fsync, key file): {cost * 1e3:.2f} ms")
        print(
            f"seal time per second of log at {RATE:,} records/s:"
            f" every 1000 records {old * 1e3:.0f} ms ({old:.0%} of each second),"
            f" {SEAL_INTERVAL_S:g} s interval {new * 1e3:.1f} ms ({new:.2%})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
