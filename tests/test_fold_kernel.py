"""Folding against the real kernel: floods become few records, counts stay exact.

Each test profiles one real workload (Debian's python3 opening, connecting,
forking) through the real drain, with the fold window on or off, and reads
back every record the sinks got. What must hold: a flood of N identical
opens gives records whose counts add up to N, and to what the kernel
generated; N distinct opens are N records; with folding off every open is
one record; and for every kind, generated = counts delivered + counted
losses, at every sink.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from agent.capture.events import Event, FileEvent, NetEvent, event_count
from agent.capture.fold import FoldSettings
from agent.capture.loader import LoadOptions, load
from agent.capture.session import CaptureSession, CaptureStats
from agent.commands.launcher import launch
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.streaming import StreamingSink
from agent.sinks.tee import TeeSink

N = 20_000
FOLD = FoldSettings(window_ms=100, capacity=4096)
OFF = FoldSettings(window_ms=0, capacity=4096)


async def _wait(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
    os.waitpid(pid, 0)


def capture_run(
    argv: list[str], fold: FoldSettings, *, ringbuf_pages: int = 16384
) -> tuple[list[Event], CaptureStats, AggregatingSink]:
    """Run ``argv`` in scope; every record the sinks got, and the final books.

    The ring is 64 MiB by default: the floods outrun the drain on a loaded
    machine, and the exact counts the tests assert need every record kept.
    """
    capture = load(LoadOptions(ringbuf_pages=ringbuf_pages, scoped=True))
    try:
        aggregate = AggregatingSink()
        stream = StreamingSink(capacity=1 << 17, policy="drop", name="records")
        session = CaptureSession(capture, TeeSink([aggregate, stream]), fold=fold)

        async def main() -> None:
            child = launch(argv)
            capture.add_to_scope(child.pid)
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                assert child.release() is None
                await _wait(child.pid)
                session.stop()

        trio.run(main)
        stats = session.stats()
        stream.finish()
        records: list[Event] = []
        while True:
            try:
                records.extend(stream.receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
    finally:
        capture.close()
    assert stats.kinds["file"].sinks["records"].dropped == 0, "the test's stream overflowed"
    return records, stats, aggregate


def assert_books_exact(stats: CaptureStats, records: list[Event]) -> None:
    """The law per kind, at every sink, in kernel events; nothing left held."""
    for kind, b in stats.kinds.items():
        assert b.folding == 0, (kind, b)
        assert b.generated == b.lost_kernel + b.received, (kind, b)
        for name, s in b.sinks.items():
            assert b.received == b.decode_errors + s.delivered + s.dropped, (kind, name, b)
        assert b.balanced, (kind, b)
    delivered: dict[str, int] = {}
    for event in records:
        kind = type(event).__name__
        delivered[kind] = delivered.get(kind, 0) + event_count(event)
    assert delivered.get("FileEvent", 0) == stats.kinds["file"].sinks["records"].delivered
    assert delivered.get("NetEvent", 0) == stats.kinds["net"].sinks["records"].delivered
    assert stats.balanced


def opens(path: Path, n: int, *, distinct: bool = False) -> str:
    target = f"'{path}' + str(i)" if distinct else f"'{path}'"
    return f"import os\nfor i in range({n}):\n    os.close(os.open({target}, os.O_RDONLY | os.O_CREAT, 0o600))\n"


def files_at(records: list[Event], prefix: str) -> list[FileEvent]:
    return [e for e in records if isinstance(e, FileEvent) and e.path.startswith(prefix)]


def test_a_flood_of_one_path_folds_to_few_records_with_exact_counts(
    kernel: None, system_python: str, tmp_path: Path
) -> None:
    path = tmp_path / "flooded"
    records, stats, aggregate = capture_run([system_python, "-c", opens(path, N)], FOLD)
    mine = files_at(records, str(path))
    assert stats.kinds["file"].lost_kernel == 0
    assert sum(e.count for e in mine) == N  # what the workload did
    assert len(mine) <= N // 100, f"{len(mine)} records for {N} identical opens"
    assert mine[0].count == 1  # the first is delivered at once, alone
    folded = [e for e in mine if e.count > 1]
    assert folded and all(e.ts_ns <= e.last_ts_ns for e in folded)
    # The kernel generated every file event the records stand for.
    assert stats.kinds["file"].generated == sum(
        e.count for e in records if isinstance(e, FileEvent)
    )
    assert stats.fold is not None and stats.fold.absorbed.get("file", 0) >= N - 2 * len(mine)
    profile = aggregate.finish()
    [counted] = [f.count for p in profile.processes for f in p.files if f.path == str(path)]
    assert counted == N
    assert_books_exact(stats, records)


def test_distinct_paths_are_never_folded(kernel: None, system_python: str, tmp_path: Path) -> None:
    base = tmp_path / "d"
    n = 3000
    records, stats, _ = capture_run([system_python, "-c", opens(base, n, distinct=True)], FOLD)
    mine = files_at(records, str(base))
    assert stats.fold is not None and stats.fold.window_ms == 100
    assert stats.kinds["file"].lost_kernel == 0
    assert sorted(e.path for e in mine) == sorted(f"{base}{i}" for i in range(n))
    assert all(e.count == 1 and e.last_ts_ns == 0 for e in mine)
    assert_books_exact(stats, records)


def test_folding_off_gives_one_record_per_open(
    kernel: None, system_python: str, tmp_path: Path
) -> None:
    path = tmp_path / "unfolded"
    n = 5000
    records, stats, _ = capture_run([system_python, "-c", opens(path, n)], OFF)
    mine = files_at(records, str(path))
    assert stats.fold is None
    assert stats.kinds["file"].lost_kernel == 0
    assert len(mine) == n and all(e.count == 1 and e.last_ts_ns == 0 for e in mine)
    assert_books_exact(stats, records)


FLOODS = (
    "import os, socket\n"
    "for i in range(4000):\n"
    "    os.close(os.open('{path}', os.O_RDONLY | os.O_CREAT, 0o600))\n"
    "    try:\n"
    "        os.open('{path}-missing', os.O_RDONLY)\n"
    "    except OSError:\n"
    "        pass\n"
    "for i in range(2000):\n"
    "    s = socket.socket()\n"
    "    try:\n"
    "        s.connect(('127.0.0.1', 1))\n"
    "    except OSError:\n"
    "        pass\n"
    "    s.close()\n"
    "for i in range(30):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        os.execv('/bin/true', ['/bin/true', str(i)])\n"
    "    os.waitpid(pid, 0)\n"
)


@pytest.mark.parametrize("pages", [16384, 1], ids=["roomy", "one-page"])
def test_the_law_holds_per_kind_after_floods_of_each_kind(
    kernel: None, system_python: str, tmp_path: Path, pages: int
) -> None:
    """File, net, exec, fork and exit floods, folded; with a one-page ring
    buffer the kernel loses records too, and the books still balance."""
    path = tmp_path / "each"
    records, stats, _ = capture_run(
        [system_python, "-c", FLOODS.format(path=path)], FOLD, ringbuf_pages=pages
    )
    assert_books_exact(stats, records)
    if pages == 1:
        assert sum(b.lost_kernel for b in stats.kinds.values()) > 0
        return
    assert stats.kinds["file"].lost_kernel == stats.kinds["net"].lost_kernel == 0
    assert sum(e.count for e in files_at(records, str(path)) if e.ret >= 0) == 4000
    assert sum(e.count for e in files_at(records, f"{path}-missing")) == 4000
    connects = [
        e for e in records
        if isinstance(e, NetEvent) and e.op == "connect" and e.endpoint is not None
        and e.endpoint.port == 1
    ]  # fmt: skip
    assert sum(e.count for e in connects) == 2000
    assert len(connects) < 200
    assert stats.kinds["exec"].delivered == stats.kinds["exec"].generated >= 30
