"""``snapshot --tree PID`` and ``/v1/snapshot?tree=PID`` against a real
daemon: a fork tree two levels deep, compared with a walk of the whole
snapshot's pid/ppid links."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests import harness
from tests.conftest import TRACEHOUND
from tests.harness import wait_until

MARK = "tracehound-tree-test"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Daemon]:
    with harness.own_daemon(tmp_path_factory.mktemp("tree")) as d:
        d.start()
        yield d


def _cli(daemon: harness.Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEHOUND, "snapshot", *args, "--socket", str(daemon.sock)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def _descendants(processes: list[dict[str, Any]], root: int) -> set[tuple[int, int | None]]:
    """Brute force: every process reachable from ``root`` by ppid, as
    (pid, started_ns); a process is linked to the latest earlier one with
    its ppid, as the profile's links are (pids are reused)."""
    keep: set[int] = set()
    latest: dict[int, int] = {}
    for index, proc in enumerate(processes):
        parent = latest.get(proc["ppid"]) if proc["ppid"] is not None else None
        if proc["pid"] == root or parent in keep:
            keep.add(index)
        latest[proc["pid"]] = index
    return {(processes[i]["pid"], processes[i]["started_ns"]) for i in keep}


def test_snapshot_tree_is_the_process_and_its_descendants(
    kernel: None, daemon: harness.Daemon
) -> None:
    outsider = subprocess.run(["/bin/echo", f"{MARK}-outsider"], capture_output=True, check=True)
    assert outsider.returncode == 0
    # root sh -> (fork) sh -c ... -> (fork) echo grandchild; root -> (fork) echo child.
    script = f'/bin/sh -c "/bin/echo {MARK}-grandchild; true"; /bin/echo {MARK}-child; true'
    root = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.DEVNULL)
    assert root.wait(timeout=30) == 0

    def whole() -> list[dict[str, Any]]:
        snap = _cli(daemon)
        assert snap.returncode == 0, snap.stderr
        processes: list[dict[str, Any]] = json.loads(snap.stdout)["processes"]
        return processes

    def all_seen() -> bool:
        argvs = [" ".join(p["argv"]) for p in whole()]
        return all(any(f"{MARK}-{w}" in a for a in argvs) for w in ("grandchild", "child"))

    wait_until(all_seen, "the tree in the snapshot", 20)
    processes = whole()
    expected = _descendants(processes, root.pid)
    tree = _cli(daemon, "--tree", str(root.pid))
    assert tree.returncode == 0, tree.stderr
    got = json.loads(tree.stdout)["processes"]
    assert {(p["pid"], p["started_ns"]) for p in got} == expected
    argvs = {" ".join(p["argv"]) for p in got}
    assert any(f"{MARK}-grandchild" in a and a.startswith("/bin/echo") for a in argvs), argvs
    assert not any(f"{MARK}-outsider" in a for a in argvs)
    assert len(got) >= 4  # root, the inner sh, two echos
    depth_two = [p for p in got if p["argv"][:1] == ["/bin/echo"] and "grandchild" in p["argv"][1]]
    inner = [p for p in got if p["pid"] == depth_two[0]["ppid"]]
    assert inner and inner[0]["ppid"] == root.pid  # really two levels
    # The API answers the same; --comm within the tree ANDs.
    api = daemon.get_json(f"/v1/snapshot?tree={root.pid}")
    assert {(p["pid"], p["started_ns"]) for p in api["processes"]} == expected
    echoes = json.loads(_cli(daemon, "--tree", str(root.pid), "--comm", "echo").stdout)
    assert sorted(p["argv"][1] for p in echoes["processes"]) == [
        f"{MARK}-child",
        f"{MARK}-grandchild",
    ]
    text = _cli(daemon, "--tree", str(root.pid), "--text")
    assert text.returncode == 0 and f"{MARK}-grandchild" in text.stdout
    assert f"[{root.pid}] /bin/sh -c" in text.stdout


def test_snapshot_tree_bad_values(kernel: None, daemon: harness.Daemon) -> None:
    code, body = daemon.status("/v1/snapshot?tree=abc")
    assert code == 400 and "parameter 'tree'" in body
    bad = _cli(daemon, "--tree", "0")
    assert bad.returncode == 2 and "--tree" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    none = _cli(daemon, "--tree", "4194303")  # no such process: an empty tree, not an error
    assert none.returncode == 0 and json.loads(none.stdout)["processes"] == []
