"""Disk full under the evidence log: the capture goes on, the log stays valid.

A real tmpfs of 256 KiB fills up mid-run. The publisher must stop without
taking the capture down, the store must leave no torn fragment inside the
log, later events must be counted as dropped, and the log must still
verify and reopen.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TRACEHOUND

FLOOD = "import os\nfor i in range(30000):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.fail("could not mount a tmpfs (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_stops_the_log_not_the_capture(
    kernel: None, small_disk: Path, tmp_path: Path, system_python: str
) -> None:
    state = small_disk / "evidence"
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [*TRACEHOUND, "profile", "--evidence", str(state), "-o", str(out), "--",
         system_python, "-c", FLOOD],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "writing the log failed" in result.stderr
    profile = json.loads(out.read_text())
    files = profile["accounting"]["file"]
    assert files["generated"] >= 30000  # the capture itself went on
    assert files["sinks"]["evidence"]["dropped"] > 0  # counted, not silent
    assert files["sinks"]["aggregating"]["dropped"] == 0
    verify = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(state)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr  # no torn fragment inside
    segments = list((state / "segments").glob("*.ndjson"))
    assert segments and all(p.read_bytes().endswith(b"\n") for p in segments)
