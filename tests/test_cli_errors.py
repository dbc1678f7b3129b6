"""Bad input: one line that says what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, TRACEHOUND


def run_cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [*TRACEHOUND, *args]
    if user is not None:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root"
        command = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tracehound: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_profile_without_command() -> None:
    result = run_cli("profile")
    assert_one_line_error(result, "no command given", "tracehound profile")
    assert result.returncode == 2


def test_profile_with_only_separator() -> None:
    assert_one_line_error(run_cli("profile", "--"), "no command given")


def test_profile_command_not_found() -> None:
    result = run_cli("profile", "--", "tracehound-no-such-command-xyz")
    assert_one_line_error(result, "command not found", "tracehound-no-such-command-xyz")


def test_profile_without_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    result = run_cli("profile", "--", "true", user="65534")
    assert_one_line_error(result, "needs root", "sudo")


def test_run_without_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    assert_one_line_error(run_cli("run", user="65534"), "needs root")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("profile", "--format", "xml", "--", "true"), "--format"),
        (("profile", "--ringbuf-pages", "3", "--", "true"), "--ringbuf-pages"),
        (("profile", "--argv-max", "0", "--", "true"), "--argv-max"),
        (("profile", "--disable-probe", "nope", "--", "true"), "unknown probe 'nope'"),
        (("profile", "--probe-tracepoint", "file.open", "--", "true"), "NAME=CATEGORY:EVENT"),
        (("profile", "--output", "/nonexistent-dir/x.json", "--", "true"), "does not exist"),
        (("run", "--stats-file", "/nonexistent-dir/s.json"), "--stats-file"),
        (("run", "--stream-capacity", "0"), "--stream-capacity"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args)
    assert_one_line_error(result, needle)
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("profile", "--output", "/tmp", "--", "true"), "is a directory"),
        (("run", "--duration", "-1"), "--duration"),
        (("run", "--duration", "0"), "--duration"),
        (("run", "--events", "/tmp"), "is a directory"),
    ],
)
def test_bad_output_and_duration(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args)
    assert_one_line_error(result, needle)
    assert result.returncode == 2


def test_run_survives_an_events_file_that_fails(kernel: None) -> None:
    """/dev/full fails every write: the stream's consumer ends, its events
    are counted as dropped, and the capture goes on to a clean exit."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stats = f"{tmp}/stats.json"
        activity = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                "for i in $(seq 150); do cat /etc/hostname >/dev/null; sleep 0.02; done",
            ]
        )
        result = run_cli(
            "run", "--duration", "2", "--stats-interval", "0", "--no-seed",
            "--events", "/dev/full", "--stats-file", stats,
        )  # fmt: skip
        activity.wait(timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "--events /dev/full: write failed" in result.stderr
        books = json.loads(Path(stats).read_text())
    assert books["balanced"] is True
    dropped = sum(
        k["sinks"]["events"]["dropped"] for k in books["kinds"].values() if "events" in k["sinks"]
    )
    assert dropped > 0
