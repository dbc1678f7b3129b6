"""`tracehound profile diff A B`: drift between runs, with a CI exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.capture.events import Endpoint, ExecEvent, FileEvent, ForkEvent, NetEvent
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import Profile, encode_profile
from agent.sinks.profile_diff import diff, render_drift
from tests.conftest import TRACEHOUND

H = {"tid": 0, "uid": 0, "gid": 0, "cgroup_id": 1}


def build(*extra: str, connect_port: int = 443, accept_port: int = 50000) -> Profile:
    sink = AggregatingSink()
    sink.apply(ForkEvent(pid=1, ts_ns=1, comm="sh", child_pid=10, clone_flags=0, **H))
    sink.apply(ExecEvent(pid=10, ts_ns=2, comm="cc", ret=0, filename="/usr/bin/cc",
                         argv=("cc", "x.c"), argv_truncated=False, at=False, **H))  # fmt: skip
    paths = ["/src/x.c", *extra]
    for i, path in enumerate(paths):
        sink.apply(FileEvent(pid=10, ts_ns=3 + i, comm="cc", op="open", syscall="openat", ret=3,
                             dfd=-100, path=path, dfd2=-100, path2="", flags=0, mode=0, **H))  # fmt: skip
    for op, ep in (("connect", Endpoint("ipv4", "10.0.0.1", connect_port)),
                   ("accept", Endpoint("ipv4", "127.0.0.1", accept_port)),
                   ("bind", Endpoint("ipv4", "127.0.0.1", 0))):  # fmt: skip
        sink.apply(NetEvent(pid=10, ts_ns=20, comm="cc", op=op, ret=0, fd=3, endpoint=ep,
                            backlog=0, **H))  # fmt: skip
    return sink.finish()


def test_same_behaviour_is_no_drift_even_with_other_ephemeral_ports() -> None:
    drift = diff(build(), build(accept_port=51234))
    assert not drift.any
    assert render_drift(drift) == "no drift\n"


def test_new_file_and_endpoint_are_drift_both_ways() -> None:
    a, b = build(), build("/etc/shadow", connect_port=8080)
    drift = diff(a, b)
    assert drift.files_added == ["open /etc/shadow"]
    assert drift.endpoints_added == ["connect 10.0.0.1:8080"]
    assert drift.endpoints_removed == ["connect 10.0.0.1:443"]
    assert diff(b, a).files_removed == ["open /etc/shadow"]
    text = render_drift(drift)
    assert "+ file open /etc/shadow" in text and "- endpoint connect 10.0.0.1:443" in text


def write(path: Path, profile: Profile) -> str:
    path.write_bytes(encode_profile(profile))
    return str(path)


def test_cli_exit_codes(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", build())
    b = write(tmp_path / "b.json", build("/etc/passwd"))
    same = subprocess.run([*TRACEHOUND, "profile", "diff", a, a], capture_output=True, text=True)
    assert same.returncode == 0 and same.stdout == "no drift\n"
    drift = subprocess.run([*TRACEHOUND, "profile", "--format", "json", "diff", a, b],
                           capture_output=True, text=True)  # fmt: skip
    assert drift.returncode == 1
    assert json.loads(drift.stdout)["files_added"] == ["open /etc/passwd"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{not json", "not JSON"), (b'{"version": 1}', "not a tracehound profile")],
)
def test_cli_bad_input(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    good = write(tmp_path / "a.json", build())
    result = subprocess.run([*TRACEHOUND, "profile", "diff", good, str(bad)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = subprocess.run([*TRACEHOUND, "profile", "diff", good], capture_output=True, text=True)
    assert missing.returncode == 2 and "expected two profile files" in missing.stderr


def test_real_runs_drift_when_the_script_changes(kernel: None, tmp_path: Path) -> None:
    outs = []
    for name, script in (("a", "cat /etc/hostname >/dev/null"),
                         ("b", "cat /etc/hostname >/dev/null; ls / >/dev/null")):  # fmt: skip
        out = tmp_path / f"{name}.json"
        subprocess.run([*TRACEHOUND, "profile", "-o", str(out), "--", "/bin/sh", "-c", script],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        outs.append(str(out))
    result = subprocess.run([*TRACEHOUND, "profile", "--format", "json", "diff", *outs],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1, result.stderr
    drift = json.loads(result.stdout)
    assert any(p.endswith("/ls") for p in drift["programs_added"])
    assert drift["programs_removed"] == []
