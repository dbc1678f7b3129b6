"""`tracehound profile` on a scripted workload, against the real kernel."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.types import parse_rfc3339_ns
from tests.conftest import REPO, TRACEHOUND

WORKLOAD = REPO / "tests" / "workloads" / "scripted.py"


def by_pid(profile: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["pid"]: p for p in profile["processes"]}


def net(proc: dict[str, Any], op: str) -> list[tuple[str, str, int]]:
    return [
        (n["endpoint"]["family"], n["endpoint"]["address"], n["endpoint"]["port"])
        for n in proc["network"]
        if n["op"] == op and n["endpoint"]
    ]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Profile the workload once while an outsider touches a marker file."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp("profile")
    facts_path, out = tmp / "facts.json", tmp / "profile.json"
    marker = tmp / "outsider-marker"
    outsider = subprocess.Popen(
        ["/bin/sh", "-c", f"for i in $(seq 300); do echo x > {marker}; sleep 0.01; done"]
    )
    started = time.monotonic()
    agent = subprocess.Popen(
        [*TRACEHOUND, "profile", "--output", str(out), "--",
         "/usr/bin/python3", str(WORKLOAD), str(facts_path), str(tmp)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, stderr = agent.communicate(timeout=120)
    outsider.wait(timeout=60)
    assert agent.returncode == 0, stderr
    return {
        "profile": json.loads(out.read_text()),
        "facts": json.loads(facts_path.read_text()),
        "agent_pid": agent.pid,
        "outsider_pid": outsider.pid,
        "marker": str(marker),
        "stderr": stderr,
        "seconds": time.monotonic() - started,
    }


def test_root_process_and_exit(kernel: None, profiled: dict[str, Any]) -> None:
    profile, facts = profiled["profile"], profiled["facts"]
    procs = by_pid(profile)
    root = procs[facts["pid"]]
    assert profile["root_pid"] == facts["pid"]
    assert profile["exit_status"] == 0
    assert root["ppid"] == profiled["agent_pid"]
    assert root["exit_code"] == 0
    assert root["argv"][:2] == ["/usr/bin/python3", str(WORKLOAD)]
    assert profiled["stderr"].count("\n") == 1 and "written to" in profiled["stderr"]


def test_children_with_arguments_and_exit_codes(kernel: None, profiled: dict[str, Any]) -> None:
    procs, facts = by_pid(profiled["profile"]), profiled["facts"]
    echo = procs[facts["echo_pid"]]
    assert echo["ppid"] == facts["pid"]
    assert echo["exe"] == "/bin/echo"
    assert echo["argv"] == ["/bin/echo", "tracehound-arg", "second arg"]
    assert echo["exit_code"] == 0
    sh = procs[facts["sh_pid"]]
    assert sh["ppid"] == facts["pid"] and sh["exit_code"] == 7


def test_failed_exec_is_kept(kernel: None, profiled: dict[str, Any]) -> None:
    procs, facts = by_pid(profiled["profile"]), profiled["facts"]
    failed = [
        (p["pid"], ex)
        for p in procs.values()
        for ex in p["execs"]
        if ex["filename"] == facts["failed_exec"]
    ]
    assert failed, "the failed exec is missing"
    pid, ex = failed[0]
    assert ex["error"] == "ENOENT"
    assert ex["argv"] == [facts["failed_exec"], "x"]
    assert procs[pid]["ppid"] == facts["pid"]


def test_file_operations(kernel: None, profiled: dict[str, Any]) -> None:
    root = by_pid(profiled["profile"])[profiled["facts"]["pid"]]
    facts = profiled["facts"]
    ops = {(f["op"], f["path"]): f for f in root["files"]}
    assert ("mkdir", facts["work"]) in ops
    opened = ops[("open", facts["created"])]
    assert {"write", "create"} <= set(opened["access"])
    rename = ops[("rename", facts["created"])]
    assert rename["target"] == facts["renamed"]
    assert ops[("chmod", facts["renamed"])]["mode"] == 0o600
    assert ("unlink", facts["renamed"]) in ops
    failed = {(f["op"], f["path"]): f for f in root["failed_files"]}
    assert failed[("open", facts["missing"])]["error"] == "ENOENT"
    assert ("open", facts["missing"]) not in ops


def test_network_peers(kernel: None, profiled: dict[str, Any]) -> None:
    root = by_pid(profiled["profile"])[profiled["facts"]["pid"]]
    facts = profiled["facts"]
    for family, host, key in (("ipv4", "127.0.0.1", "v4"), ("ipv6", "::1", "v6")):
        port, client_port = facts[key]["port"], facts[key]["client_port"]
        assert (family, host, 0) in net(root, "bind")
        assert (family, host, port) in net(root, "listen")
        assert (family, host, port) in net(root, "connect")
        assert (family, host, client_port) in net(root, "accept")
    assert ("unix", facts["unix"], 0) in net(root, "connect")
    assert ("unix", facts["unix"], 0) in net(root, "bind")
    assert root["syscalls"]["connect"] >= 3
    assert root["syscalls"]["listen"] >= 3


def test_nothing_outside_the_tree(kernel: None, profiled: dict[str, Any]) -> None:
    profile = profiled["profile"]
    text = json.dumps(profile)
    assert profiled["marker"] not in text
    assert profiled["outsider_pid"] not in by_pid(profile)
    assert all(p["pid"] != profiled["agent_pid"] for p in profile["processes"])


def test_capture_was_complete(kernel: None, profiled: dict[str, Any]) -> None:
    profile = profiled["profile"]
    assert all(p["attached"] for p in profile["probes"]), profile["probes"]
    for kind, books in profile["accounting"].items():
        assert books["balanced"], (kind, books)
        assert books["generated"] == books["delivered"] + books["lost_kernel"], kind
    assert profile["accounting"]["exec"]["generated"] >= 4
    assert profile["complete"] is True


def test_text_format(kernel: None, tmp_path: Path) -> None:
    before = time.time_ns()
    result = subprocess.run(
        [*TRACEHOUND, "profile", "--format", "text", "--", "/bin/sh", "-c", "ls / >/dev/null; exit 3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "exit status: 3" in result.stdout
    # argv is shell-quoted word by word: pasted into a shell it runs again.
    assert "/bin/sh -c 'ls / >/dev/null; exit 3'" in result.stdout
    assert "ls /" in result.stdout and "complete: yes" in result.stdout
    # Times are wall clock, RFC 3339 UTC to the ms, and within this run.
    after = time.time_ns()
    ls = next(line for line in result.stdout.splitlines() if "] ls /" in line)
    started = re.search(r"  started (\S+)  exited (\S+)$", ls)
    assert started, ls
    times = re.findall(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\b", result.stdout)
    assert started.group(1) in times and len(times) >= 4, result.stdout
    walls = [parse_rfc3339_ns(t) for t in times]
    assert all(before - before % 10**6 <= w <= after for w in walls), (before, times, after)
    assert parse_rfc3339_ns(started.group(1)) <= parse_rfc3339_ns(started.group(2))


def _profile_text(
    *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEHOUND, "profile", "--format", "text", "--", *command],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_command_not_found_exits_127() -> None:
    result = subprocess.run(
        [*TRACEHOUND, "profile", "--", "tracehound-no-such-command-xyz", "arg"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 127, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "command not found: tracehound-no-such-command-xyz" in lines[0]
    assert result.stdout == ""


def test_a_signalled_child_shows_the_signal_name(kernel: None, tmp_path: Path) -> None:
    script = "/bin/sh -c 'kill -SEGV $$'; exit 0"
    text = _profile_text("/bin/sh", "-c", script)
    assert text.returncode == 0, text.stderr
    killed = [line for line in text.stdout.splitlines() if "kill -SEGV" in line and "] " in line]
    assert any("(killed by SIGSEGV)" in line for line in killed), text.stdout
    out = tmp_path / "p.json"
    made = subprocess.run(
        [*TRACEHOUND, "profile", "-o", str(out), "--", "/bin/sh", "-c", "kill -SEGV $$"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 128 + 11, made.stderr  # a shell's view of it
    root = by_pid(json.loads(out.read_text()))[json.loads(out.read_text())["root_pid"]]
    assert root["exit_signal"] == 11 and root["exit_signal_name"] == "SIGSEGV"
    assert root["exit_code"] is None


def test_a_path_search_is_one_line(kernel: None, tmp_path: Path) -> None:
    """The command is found in the last of three PATH directories: the
    misses before it (ENOENT, then EACCES for a file that is not
    executable) are one line; then the exec that was found."""
    dirs = [tmp_path / name for name in ("d1", "d2", "d3")]
    for d in dirs:
        d.mkdir()
    (dirs[1] / "thtool").write_text("#!/bin/sh\n")  # not executable: EACCES
    (dirs[2] / "thtool").symlink_to("/bin/true")
    path = ":".join(map(str, dirs))
    found = _profile_text("/usr/bin/env", f"PATH={path}", "thtool")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    search = [i for i, line in enumerate(lines) if "(PATH search)" in line]
    assert len(search) == 1, found.stdout
    assert lines[search[0]].endswith(
        f"exec FAILED thtool (PATH search) in {dirs[0]}: ENOENT, {dirs[1]}: EACCES"
    ), lines[search[0]]
    assert re.search(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  exec FAILED thtool", lines[search[0]]
    )
    assert f"(as {dirs[2]}/thtool)" in lines[search[0] + 1]  # the found one, next in time
    assert sum("exec FAILED" in line for line in lines) == 1
    # Nowhere found: the whole search, one line; env's own status.
    missed = _profile_text("/usr/bin/env", f"PATH={dirs[0]}:{dirs[1]}", "thtool")
    assert missed.returncode == 126, missed.stderr  # EACCES seen: env says 126
    gone = [line for line in missed.stdout.splitlines() if "exec FAILED" in line]
    assert len(gone) == 1 and gone[0].endswith(
        f"exec FAILED thtool (PATH search) in {dirs[0]}: ENOENT, {dirs[1]}: EACCES"
    ), missed.stdout
