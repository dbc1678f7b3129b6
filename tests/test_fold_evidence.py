"""Floods into the sealed log: folded records whose counts add up exactly.

With evidence on (the daemon's default), a flood of identical opens reaches
the log as a few records carrying ``count``, and for every kind the books
close in the log itself: what the kernel generated is the sum of the counts
of the records in the log plus what the log's ``capture.loss`` records say
was lost on the way to it. Host-wide: whatever else the host does is in the
same books, so the law is checked for everything, not only the workload.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from agent.evidence.loss_books import kind_of_record
from agent.evidence.verify import verify_store
from tests.harness import evidence, own_daemon, records

FLOOD = 20_000
#: Loss stages between the kernel and the log (other sinks' drops are theirs).
TO_THE_LOG = ("kernel", "decode", "sink:evidence", "evidence:map", "evidence:store")


def _flood(path: Path, n: int) -> None:
    script = (
        "import os\n"
        f"for i in range({n}):\n"
        f"    os.close(os.open({str(path)!r}, os.O_RDONLY | os.O_CREAT, 0o600))\n"
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True)


def test_an_open_flood_folds_and_the_books_close_in_the_log(tmp_path: Path) -> None:
    target = tmp_path / "flood-target"
    stats_file = tmp_path / "stats.json"
    with own_daemon(tmp_path) as daemon:
        # 64 MiB of ring: the flood outruns the drain on a loaded machine, and
        # the workload's exact count needs every one of its records kept.
        daemon.start("--stats-file", str(stats_file), "--ringbuf-pages", "16384")
        _flood(target, FLOOD)
        for _ in range(20):  # an exec flood beside it: execs never fold
            subprocess.run(["/bin/true", "tracehound-fold-exec"], check=True)
        assert daemon.stop() == 0, daemon.log()
    state = daemon.state
    assert verify_store(state).ok

    ours = [
        body["data"]
        for body in evidence(state, "file.open.v1")
        if body["data"]["path"] == str(target)
    ]
    assert sum(d.get("count", 1) for d in ours) == FLOOD
    assert len(ours) <= FLOOD // 50, f"{len(ours)} records for {FLOOD} identical opens"
    folded = [d for d in ours if d.get("count", 1) > 1]
    assert folded and all(int(d["last_ts_ns"]) >= int(d["ts_ns"]) for d in folded)
    execs = [
        b["data"] for b in evidence(state, "process.exec.v1")
        if b["data"]["argv"] == ["/bin/true", "tracehound-fold-exec"]
    ]  # fmt: skip
    assert len(execs) == 20 and all("count" not in d for d in execs)

    in_log: Counter[str] = Counter()
    for record in records(state):
        body = record["body"]
        if isinstance(body, dict) and "data" in body:
            in_log[kind_of_record(record["type"])] += body["data"].get("count", 1)
    lost: Counter[str] = Counter()
    for body in evidence(state, "capture.loss.v1"):
        for kind, stages in body["data"]["counts"].items():
            lost[kind] += sum(n for stage, n in stages.items() if stage in TO_THE_LOG)
    books = json.loads(stats_file.read_text())["kinds"]
    for kind in ("exec", "fork", "exit", "file", "net"):
        assert books[kind]["folding"] == 0, (kind, books[kind])
        assert books[kind]["generated"] == in_log[kind] + lost[kind], (kind, books[kind])
