"""The SQLite index beside the log, against a real daemon's log.

One daemon runs a workload (opens, a rename, an unlink, execs, a fork
tree, connects, a non-root process); its follower indexes the log. Every
answer of ``query_index`` is then compared with a brute-force scan written
here (every line decoded, the filter applied by hand), filter by filter,
combined, page by page, and after the index is deleted, truncated,
overwritten with random bytes or replaced by another log's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.query import index_db
from agent.query.filter import EventFilter, RemoteFilter
from agent.query.follower import follow
from agent.query.index import query_index
from agent.query.index_writer import reindex
from tests.conftest import TRACEHOUND
from tests.harness import Daemon, own_daemon, wait_until
from tests.query.brute import brute as brute_force

GOLDEN = Path(__file__).parent / "evidence" / "golden" / "evidence.ndjson"
EXEC = "dev.tracehound.process.exec.v1"
FORK = "dev.tracehound.process.fork.v1"
OPEN = "dev.tracehound.file.open.v1"
RENAME = "dev.tracehound.file.rename.v1"
CONNECT = "dev.tracehound.network.connect.v1"


# --- the brute force: every line, the filter by hand ---------------------------


def _events(state: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for segment in sorted((state / "segments").glob("*.ndjson")):
        for line in segment.read_bytes().split(b"\n")[:-1]:
            record = json.loads(line)
            if record["type"].startswith("dev.tracehound.") and isinstance(
                record["body"].get("id"), str
            ):
                yield record["seq"], record["body"]


def brute(state: Path, flt: EventFilter, after: int | None = None) -> list[int]:
    """The suite's one brute force (tests/query/brute.py), after a seq."""
    return [seq for seq in brute_force(state, flt) if after is None or seq > after]


def indexed(
    state: Path, flt: EventFilter, after: int | None = None, limit: int = 10**9
) -> list[int]:
    found = query_index(state, flt, after_seq=after, limit=limit)
    assert found is not None, "the index did not answer"
    return [e.seq for e in found]


# --- the daemon's log ----------------------------------------------------------


class Workload:
    state: Path
    work: Path
    tree_pid: int
    mid_ns: int
    nobody_pid: int
    metrics: str


def _run_workload(work: Path) -> tuple[int, int]:
    (work / "a.txt").write_text("x")
    os.rename(work / "a.txt", work / "b.txt")
    (work / "b.txt").unlink()
    Path("/etc/hostname").read_bytes()
    pidfile = work / "tree.pid"
    subprocess.run(
        ["sh", "-c", f'echo $$ > {pidfile}; sh -c "cat /etc/hostname >/dev/null; true"; /bin/true'],
        check=True,
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)):
            pass
    listener.close()
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "sh", "-c", "echo $$; cat /etc/hostname >/dev/null"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(pidfile.read_text()), int(nobody.stdout.split()[0])


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    root = tmp_path_factory.mktemp("index")
    with own_daemon(root) as daemon:
        daemon.start()
        out = Workload()
        out.state, out.work = daemon.state, root / "work"
        out.work.mkdir()
        began = time.time_ns()
        out.tree_pid, out.nobody_pid = _run_workload(out.work)
        out.mid_ns = began
        _run_workload(out.work)
        # The follower keeps up: what the log holds is in the index.
        wait_until(lambda: _follower_done(daemon), "the follower to index the workload", 30)
        out.metrics = daemon.metrics()
        assert daemon.stop() == 0, daemon.log()
        yield out


def _follower_done(daemon: Daemon) -> bool:
    conn = index_db.connect(daemon.state, write=False)
    if conn is None:
        return False
    try:
        rows = conn.execute(
            "SELECT count(*) FROM rec WHERE type IN (SELECT id FROM strs WHERE s = ?)", (CONNECT,)
        ).fetchone()[0]
    except Exception:
        return False
    finally:
        conn.close()
    return bool(rows >= 6)


def _filters(w: Workload) -> list[EventFilter]:
    work = str(w.work)
    return [
        EventFilter(),
        EventFilter(since_ns=w.mid_ns),
        EventFilter(until_ns=w.mid_ns),
        EventFilter(types=frozenset({EXEC})),
        EventFilter(types=frozenset({OPEN, RENAME})),
        EventFilter(pid=w.tree_pid),
        EventFilter(pid=w.tree_pid, tree=True),
        EventFilter(comm="cat"),
        EventFilter(exe="/usr/bin/cat"),
        EventFilter(path="/etc/*"),
        EventFilter(path=f"{work}/*.txt"),
        EventFilter(path="*hostname"),
        EventFilter(container="0123456789ab"),
        EventFilter(remote=RemoteFilter(network="127.0.0.0/8")),
        EventFilter(remote=RemoteFilter(network="::/0")),
        EventFilter(remote=RemoteFilter(network="127.0.0.1/32", port=None)),
        EventFilter(uid=65534),
        # combined
        EventFilter(path="/etc/*", types=frozenset({OPEN}), comm="cat"),
        EventFilter(pid=w.tree_pid, tree=True, types=frozenset({EXEC})),
        EventFilter(since_ns=w.mid_ns, path=f"{work}/*"),
        EventFilter(uid=65534, path="/etc/hostname"),
        EventFilter(remote=RemoteFilter(network="127.0.0.0/8"), types=frozenset({CONNECT})),
    ]


def test_the_daemon_keeps_an_index(logged: Workload) -> None:
    assert index_db.index_path(logged.state).is_file()
    assert indexed(logged.state, EventFilter()) == brute(logged.state, EventFilter())


def test_the_index_rows_and_lag_are_metrics(logged: Workload) -> None:
    values = {
        line.split()[0]: float(line.split()[1])
        for line in logged.metrics.splitlines()
        if line.startswith("tracehound_evidence_index_")
    }
    # At least the workload's connects were indexed; the lag is a count, not a guess.
    assert values["tracehound_evidence_index_rows"] >= 6
    assert 0 <= values["tracehound_evidence_index_lag_records"] < 10_000
    assert values["tracehound_evidence_index_rows"] <= len(brute(logged.state, EventFilter()))


def test_each_filter_alone_and_combined_as_a_scan(logged: Workload) -> None:
    nonempty = 0
    for flt in _filters(logged):
        expected = brute(logged.state, flt)
        assert indexed(logged.state, flt) == expected, flt
        nonempty += bool(expected)
    assert nonempty >= len(_filters(logged)) - 2  # container, ::/0


def test_exe_follows_each_process_from_its_exec(logged: Workload) -> None:
    """``--exe`` from the index: the records of every process while it ran
    the program (an exec's own record on, its forks' too), not only the
    exec records that name it."""
    flt = EventFilter(exe="/usr/bin/cat")
    found = indexed(logged.state, flt)
    execs = brute(logged.state, EventFilter(exe="/usr/bin/cat", types=frozenset({EXEC})))
    assert execs and len(found) > len(execs)  # cat's opens and exit too
    assert found == brute(logged.state, flt)


def test_the_tree_holds_the_forked_children(logged: Workload) -> None:
    from agent.query.scan import search

    flt = EventFilter(pid=logged.tree_pid, tree=True, types=frozenset({EXEC}))
    tree = [e.seq for e in search(logged.state, flt, limit=10**9).events]
    alone = indexed(logged.state, EventFilter(pid=logged.tree_pid, types=frozenset({EXEC})))
    assert len(tree) > len(alone)  # sh's children exec'd cat and true
    assert tree == brute(logged.state, flt)


def test_a_port_alone(logged: Workload) -> None:
    seqs = brute(logged.state, EventFilter(types=frozenset({CONNECT})))
    port = None
    for seq, event in _events(logged.state):
        if seq in seqs and (event["data"].get("endpoint") or {}).get("port"):
            port = event["data"]["endpoint"]["port"]
            break
    assert port is not None
    flt = EventFilter(remote=RemoteFilter(port=port))
    assert indexed(logged.state, flt) == brute(logged.state, flt) != []


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_pages_add_up_to_the_scan(logged: Workload, limit: int) -> None:
    for flt in (EventFilter(), EventFilter(path="/etc/*"), EventFilter(since_ns=logged.mid_ns)):
        pages: list[int] = []
        after: int | None = None
        while True:
            page = indexed(logged.state, flt, after=after, limit=limit)
            assert len(page) <= limit
            if not page:
                break
            pages += page
            after = page[-1]
        assert pages == brute(logged.state, flt)
        assert len(pages) == len(set(pages))


def _copy(logged: Workload, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(logged.state, state)
    return state


def _damage(state: Path, how: str, tmp_path: Path) -> None:
    path = index_db.index_path(state)
    if how == "deleted":
        index_db.remove_index(state)
    elif how == "truncated":
        os.truncate(path, path.stat().st_size // 3)
    elif how == "garbage":
        data = bytearray(path.read_bytes())
        rng = random.Random(11)
        for at in range(0, len(data), 997):
            data[at : at + 64] = rng.randbytes(min(64, len(data) - at))
        path.write_bytes(bytes(data))
    elif how == "another log":
        other = tmp_path / "other"
        (other / "segments").mkdir(parents=True)
        shutil.copy(GOLDEN, other / "segments" / "0000000000000000.ndjson")
        reindex(other)
        index_db.remove_index(state)
        shutil.copy(index_db.index_path(other), path)


@pytest.mark.parametrize("how", ["deleted", "truncated", "garbage", "another log"])
def test_a_damaged_index_is_rebuilt_with_the_same_answers(
    logged: Workload, tmp_path: Path, how: str
) -> None:
    state = _copy(logged, tmp_path)
    _damage(state, how, tmp_path)
    # Never a wrong answer: none, or the scan's.
    found = query_index(state, EventFilter(path="/etc/*"), after_seq=None, limit=10**9)
    assert found is None or [e.seq for e in found] == brute(state, EventFilter(path="/etc/*"))
    follow(state, stop=[True], parent=None)  # the daemon's follower, one round
    for flt in _filters(logged):
        assert indexed(state, flt) == brute(state, flt), (how, flt)


def test_a_log_rewritten_under_the_index_is_not_answered(logged: Workload, tmp_path: Path) -> None:
    state = _copy(logged, tmp_path)
    segment = sorted((state / "segments").glob("*.ndjson"))[-1]
    lines = segment.read_bytes().split(b"\n")
    segment.write_bytes(b"\n".join(lines[: len(lines) // 2]) + b"\n")
    assert query_index(state, EventFilter(), after_seq=None, limit=10) is None
    follow(state, stop=[True], parent=None)
    assert indexed(state, EventFilter(path="/etc/*")) == brute(state, EventFilter(path="/etc/*"))


def test_a_query_indexes_a_short_tail_itself(logged: Workload, tmp_path: Path) -> None:
    state = _copy(logged, tmp_path)
    conn = index_db.connect(state, write=True)
    assert conn is not None
    last = conn.execute("SELECT max(seg) FROM segs").fetchone()[0]
    # Forget the last segment's second half: the index is behind the log.
    end = conn.execute("SELECT end FROM segs WHERE seg = ?", (last,)).fetchone()[0]
    cut = conn.execute(
        "SELECT seq, off, len FROM rec WHERE seg = ? AND off > ? ORDER BY seq LIMIT 1",
        (last, end // 2),
    ).fetchone()
    conn.execute("DELETE FROM rec WHERE seq >= ?", (cut[0],))
    prev = conn.execute(
        "SELECT seq, off, len, h FROM rec WHERE seg = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
        (last, cut[0]),
    ).fetchone()
    conn.execute(
        "UPDATE segs SET end = ?, last_off = ?, last_key = ? WHERE seg = ?",
        (cut[1], prev[1], prev[3], last),
    )
    conn.close()
    assert indexed(state, EventFilter()) == brute(state, EventFilter())


def test_reindex_command(logged: Workload, tmp_path: Path) -> None:
    state = _copy(logged, tmp_path)
    index_db.remove_index(state)
    done = subprocess.run(
        [*TRACEHOUND, "evidence", "reindex", str(state)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    count = len(brute(state, EventFilter()))
    assert done.stdout.startswith(f"indexed {count} records in ")
    assert indexed(state, EventFilter(path="/etc/*")) == brute(state, EventFilter(path="/etc/*"))
    by_option = subprocess.run(
        [*TRACEHOUND, "evidence", "reindex", "--state-dir", str(state)],
        capture_output=True,
        text=True,
    )
    assert by_option.returncode == 0, by_option.stderr
    index_db.index_path(state).write_bytes(random.Random(5).randbytes(20_000))
    over_garbage = subprocess.run(
        [*TRACEHOUND, "evidence", "reindex", str(state)], capture_output=True, text=True
    )
    assert over_garbage.returncode == 0, over_garbage.stderr
    assert indexed(state, EventFilter(uid=65534)) == brute(state, EventFilter(uid=65534))
    bad = subprocess.run(
        [*TRACEHOUND, "evidence", "reindex", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no evidence log there" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_pruned_segments_leave_the_index(logged: Workload, tmp_path: Path) -> None:
    state = _copy(logged, tmp_path)
    index_db.remove_index(state)
    # Two segments of one log (the index checks lines, not the chain's headers).
    (only,) = sorted((state / "segments").glob("*.ndjson"))
    lines = only.read_bytes().split(b"\n")[:-1]
    half = len(lines) // 2
    only.write_bytes(b"\n".join(lines[:half]) + b"\n")
    (state / "segments" / "0000000000000001.ndjson").write_bytes(b"\n".join(lines[half:]) + b"\n")
    reindex(state)
    paths_before = _count(state, "paths")
    only.unlink()  # retention pruned the oldest
    for flt in _filters(logged):
        assert indexed(state, flt) == brute(state, flt), flt
    follow(state, stop=[True], parent=None)  # the follower forgets its rows
    assert _count(state, "rec") == len(brute(state, EventFilter()))
    assert _count(state, "paths") < paths_before
    assert indexed(state, EventFilter(path="/etc/*")) == brute(state, EventFilter(path="/etc/*"))


def _count(state: Path, table: str) -> int:
    conn = index_db.connect(state, write=False)
    assert conn is not None
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_a_record_found_by_its_id(logged: Workload) -> None:
    from agent.evidence.log_reader import find_event
    from agent.query.index import find_indexed

    events = list(_events(logged.state))
    for seq, event in events[:: max(1, len(events) // 25)]:
        found = find_indexed(logged.state, event["id"])
        assert found is not None
        assert [(e.seq, e.event) for e in found] == [(seq, event)]
        scanned = find_event(logged.state, event["id"])
        assert scanned is not None and scanned.seq == seq
    assert find_indexed(logged.state, "0" * 32) == []


def test_the_index_and_the_log_scan_give_the_same_answers(logged: Workload) -> None:
    """search() answers from the index when it can and by scanning the log
    otherwise: the two must never disagree, or an answer would depend on
    whether the index was up."""
    from agent.query.scan import scan, search

    for flt in _filters(logged):
        scanned = [e.seq for e in scan(logged.state, flt, after_seq=-1, limit=10**9)]
        assert [e.seq for e in search(logged.state, flt, limit=10**9).events] == scanned, flt
        assert indexed(logged.state, flt) == scanned, flt
