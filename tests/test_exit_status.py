"""Exit statuses as the kernel ends processes, against the real kernel.

A fatal signal sent to a process usually becomes a group exit in which
every thread is delivered SIGKILL; exit_group() in a threaded process also
SIGKILLs its other threads. The profile must still say what really ended
each process: the code, or the signal that was sent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TRACEHOUND

THREADED_EXIT = (
    "import os, threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "time.sleep(0.05)\n"
    "os._exit(3)\n"
)
SCRIPT = """
/usr/bin/python3 -c '{threaded}'
/bin/sleep 30 & /bin/sleep 0.3; kill -TERM $!; wait $!
/bin/sleep 31 & /bin/sleep 0.3; kill -KILL $!; wait $!
/bin/sleep 32 & /bin/sleep 0.3; kill -HUP $!; wait $!
/usr/bin/yes | /usr/bin/head -c 1 >/dev/null
/bin/sh -c 'kill -SEGV $$'
/bin/sh -c 'exit 42'
exit 0
"""


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("exits") / "profile.json"
    script = SCRIPT.format(threaded=THREADED_EXIT.replace("'", "'\"'\"'"))
    result = subprocess.run(
        [*TRACEHOUND, "profile", "--output", str(out), "--", "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    profile: dict[str, Any] = json.loads(Path(out).read_text())
    return list(profile["processes"])


def find(processes: list[dict[str, Any]], *argv: str) -> dict[str, Any]:
    matches = [p for p in processes if p["argv"][: len(argv)] == list(argv)]
    assert len(matches) == 1, (argv, [p["argv"] for p in processes])
    return matches[0]


def test_threaded_exit_group_keeps_its_code(kernel: None, processes: list[dict[str, Any]]) -> None:
    proc = find(processes, "/usr/bin/python3", "-c")
    assert (proc["exit_code"], proc["exit_signal"]) == (3, None)


@pytest.mark.parametrize(("argv1", "signal"), [("30", 15), ("31", 9), ("32", 1)])
def test_signal_sent_is_the_signal_reported(
    kernel: None, processes: list[dict[str, Any]], argv1: str, signal: int
) -> None:
    proc = find(processes, "/bin/sleep", argv1)
    assert (proc["exit_code"], proc["exit_signal"]) == (None, signal)


def test_sigpipe(kernel: None, processes: list[dict[str, Any]]) -> None:
    proc = find(processes, "/usr/bin/yes")
    assert (proc["exit_code"], proc["exit_signal"]) == (None, 13)


def test_core_signal_and_plain_code(kernel: None, processes: list[dict[str, Any]]) -> None:
    segv = find(processes, "/bin/sh", "-c", "kill -SEGV $$")
    assert (segv["exit_code"], segv["exit_signal"]) == (None, 11)
    plain = find(processes, "/bin/sh", "-c", "exit 42")
    assert (plain["exit_code"], plain["exit_signal"]) == (42, None)
