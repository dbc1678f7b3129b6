"""Handing descriptors over a SOCK_SEQPACKET socketpair: all of them, in order, or none."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.capture import handoff


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _open_fds(tmp_path: Path, n: int) -> list[int]:
    fds = []
    for i in range(n):
        path = tmp_path / f"f{i}"
        path.write_text(str(i))
        fds.append(os.open(path, os.O_RDONLY))
    return fds


def test_many_fds_arrive_in_order_with_the_payload(tmp_path: Path) -> None:
    n = handoff.FDS_PER_MESSAGE * 2 + 7  # three fd messages
    sent = _open_fds(tmp_path, n)
    a, b = _pair()
    with a, b:
        handoff.send(a, b"manifest", sent)
        for fd in sent:
            os.close(fd)  # the kernel holds what is in flight
        payload, got = handoff.receive(b)
    try:
        assert payload == b"manifest"
        assert len(got) == n
        assert [os.pread(fd, 8, 0) for fd in got] == [str(i).encode() for i in range(n)]
        assert not any(os.get_inheritable(fd) for fd in got), "received fds are close-on-exec"
    finally:
        for fd in got:
            os.close(fd)


def test_no_fds_and_an_empty_payload(tmp_path: Path) -> None:
    a, b = _pair()
    with a, b:
        handoff.send(a, b"", [])
        assert handoff.receive(b) == (b"", [])


def _count_open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sender_gone_before_the_manifest_closes_what_arrived(tmp_path: Path) -> None:
    sent = _open_fds(tmp_path, 3)
    a, b = _pair()
    with b:
        socket.send_fds(a, [b"F"], sent)
        a.close()
        for fd in sent:
            os.close(fd)
        before = _count_open_fds()
        with pytest.raises(handoff.HandoffError, match="exited before handing everything"):
            handoff.receive(b)
        assert _count_open_fds() == before, "the fds that did arrive were closed"


def test_a_count_that_does_not_match_is_refused(tmp_path: Path) -> None:
    sent = _open_fds(tmp_path, 2)
    a, b = _pair()
    with a, b:
        socket.send_fds(a, [b"F"], sent)
        a.sendmsg([b"M", (5).to_bytes(4, "little"), b"{}"])
        for fd in sent:
            os.close(fd)
        before = _count_open_fds()
        with pytest.raises(handoff.HandoffError, match="2 descriptors arrived, 5 were sent"):
            handoff.receive(b)
        assert _count_open_fds() == before


def test_an_unknown_message_is_refused() -> None:
    a, b = _pair()
    with a, b:
        a.sendmsg([b"Xjunk"])
        with pytest.raises(handoff.HandoffError, match="unexpected message of 5 bytes"):
            handoff.receive(b)
