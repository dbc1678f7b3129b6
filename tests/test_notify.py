"""sd_notify: the messages arrive, as datagrams, on a socket the test provides."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import notify


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with _receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"tracehound-test-notify-{os.getpid()}-{id(monkeypatch)}"
    with _receiver(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def _exchange(sock: socket.socket) -> list[bytes]:
    assert notify.ready()
    assert notify.status("capturing: 21/26 probes attached")
    assert notify.watchdog()
    assert notify.stopping()
    return [sock.recv(4096) for _ in range(4)]


EXPECTED = [b"READY=1", b"STATUS=capturing: 21/26 probes attached", b"WATCHDOG=1", b"STOPPING=1"]


def test_messages_on_a_path_socket(path_socket: socket.socket) -> None:
    assert _exchange(path_socket) == EXPECTED


def test_messages_on_an_abstract_socket(abstract_socket: socket.socket) -> None:
    assert _exchange(abstract_socket) == EXPECTED


def test_explicit_socket_path_overrides_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "other.sock"
    with _receiver(str(path)) as sock:
        assert notify.notify("READY=1", socket_path=str(path))
        assert sock.recv(4096) == b"READY=1"


def test_status_is_kept_on_one_line(path_socket: socket.socket) -> None:
    assert notify.status("first\nsecond")
    assert path_socket.recv(4096) == b"STATUS=first second"


def test_no_socket_is_a_no_op() -> None:
    assert notify.notify("READY=1") is False
    assert notify.ready() is False
    assert notify.status("x") is False
    assert notify.watchdog() is False
    assert notify.stopping() is False


def test_unreachable_or_invalid_socket_returns_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path.sock")
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 15.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "abc", "1.5"])
def test_watchdog_interval_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, usec: str) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert notify.watchdog_interval() is None


def test_watchdog_for_another_pid_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "not-a-pid")
    assert notify.watchdog_interval() is None
