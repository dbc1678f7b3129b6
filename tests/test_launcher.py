"""launch(): a child forked but held at the door until release()."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.commands.launcher import exit_status, launch


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


@pytest.fixture
def sigpipe_ignored() -> Iterator[None]:
    """Python ignores SIGPIPE; make sure this process does, so the test can tell."""
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, old)


def test_true_runs_and_exits_zero() -> None:
    child = launch(["true"])
    assert child.release() is None
    status = wait(child.pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert exit_status(status) == 0


def test_false_exit_code() -> None:
    child = launch(["false"])
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 1


def test_the_child_waits_until_released(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    child = launch(["sh", "-c", 'echo ran > "$1"', "sh", str(marker)])
    time.sleep(0.3)
    assert not marker.exists()
    assert os.waitpid(child.pid, os.WNOHANG) == (0, 0)  # alive, held
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 0
    assert marker.read_text() == "ran\n"


def test_nonexistent_command_reports_enoent() -> None:
    child = launch(["tracehound-no-such-command-xyz"])
    err = child.release()
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOENT
    assert err.strerror == os.strerror(errno.ENOENT)
    assert exit_status(wait(child.pid)) == 127


def test_not_executable_reports_eacces(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    child = launch([str(script)])
    err = child.release()
    assert isinstance(err, OSError)
    assert err.errno == errno.EACCES
    assert exit_status(wait(child.pid)) == 127


def test_argv_is_passed_and_path_searched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = launch(["sh", "-c", 'printf "%s|" "$@" > "$0"', str(out), "a b", "", "c"])
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 0
    assert out.read_text() == "a b||c|"


def test_signalled_child_is_128_plus_signal() -> None:
    child = launch(["sleep", "30"])
    assert child.release() is None
    os.kill(child.pid, signal.SIGKILL)
    status = wait(child.pid)
    assert os.WIFSIGNALED(status)
    assert exit_status(status) == 128 + signal.SIGKILL


def test_child_killed_by_its_own_sigterm() -> None:
    # SIGTERM is reset to the default action in the child.
    child = launch(["sh", "-c", "kill -TERM $$; sleep 5"])
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 128 + signal.SIGTERM


def test_exec_resets_ignored_signals(tmp_path: Path, sigpipe_ignored: None) -> None:
    status_file = tmp_path / "status"
    child = launch(["sh", "-c", 'cat /proc/self/status > "$1"', "sh", str(status_file)])
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 0
    line = next(x for x in status_file.read_text().splitlines() if x.startswith("SigIgn:"))
    ignored = int(line.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} still ignored in the command"


def test_no_fd_leak() -> None:
    before = open_fds()
    child = launch(["true"])
    assert child.release() is None
    wait(child.pid)
    assert open_fds() == before
    child = launch(["tracehound-no-such-command-xyz"])
    assert child.release() is not None
    wait(child.pid)
    assert open_fds() == before


def test_pipes_do_not_leak_into_the_command(tmp_path: Path) -> None:
    listing = tmp_path / "fds"
    child = launch(["sh", "-c", 'ls -l /proc/$$/fd > "$1"', "sh", str(listing)])
    # The parent's ends of the door and error pipes name the two pipes.
    pipes = {os.readlink(f"/proc/self/fd/{fd}") for fd in (child._go_fd, child._err_fd)}
    assert all(p.startswith("pipe:[") for p in pipes) and len(pipes) == 2
    assert child.release() is None
    assert exit_status(wait(child.pid)) == 0
    text = listing.read_text()
    assert " -> " in text  # the listing worked
    assert not [p for p in pipes if p in text], text


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, 0),
        (3 << 8, 3),
        (255 << 8, 255),
        (signal.SIGKILL, 137),
        (signal.SIGTERM, 143),
        (signal.SIGSEGV | 0x80, 128 + signal.SIGSEGV),  # core dumped
    ],
)
def test_exit_status(status: int, expected: int) -> None:
    assert exit_status(status) == expected


def test_release_of_a_child_that_died_while_held_leaks_nothing() -> None:
    before = open_fds()
    child = launch(["true"])
    os.kill(child.pid, signal.SIGKILL)
    wait(child.pid)
    with contextlib.suppress(OSError):  # an error is fine; a leak is not
        child.release()
    assert open_fds() == before
