"""The API's pure pieces and its socket edge, without a kernel: peer checks,
reload plans, the live tail's queue, snapshot filters, socket binding."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from agent.api.app import filter_profile
from agent.api.live import LiveTail
from agent.api.server import Peer, RefusedConnections, bind_socket, group_id, is_allowed
from agent.config import ApiConfig, Config, ConfigError, parse_config
from agent.config.reload import plan_reload
from agent.evidence.mapper import Mapper
from agent.evidence.types import Anchor
from agent.sinks.profile import ProcessProfile, Profile


def test_peer_allowed_by_root_own_uid_uids_and_gids() -> None:
    config = ApiConfig(allow_uids=(1000,), allow_gids=(50,))
    assert is_allowed(Peer(pid=1, uid=0, gid=0), config, own_uid=0)
    assert is_allowed(Peer(pid=1, uid=777, gid=9), config, own_uid=777)
    assert is_allowed(Peer(pid=1, uid=1000, gid=9), config, own_uid=0)
    assert is_allowed(Peer(pid=1, uid=1001, gid=50), config, own_uid=0)
    assert not is_allowed(Peer(pid=1, uid=1001, gid=51), config, own_uid=0)


def test_group_id() -> None:
    assert group_id("") is None
    assert group_id("4242") == 4242
    assert group_id("root") == 0
    with pytest.raises(ConfigError, match=r"api\.group: no group named 'no-such-group-x'"):
        group_id("no-such-group-x")


def test_reload_plan_refuses_what_needs_a_restart() -> None:
    old = Config()
    new = parse_config("[api]\nallow_uids = [5]\n[evidence]\nfsync = 'always'\n", "f")
    plan = plan_reload(old, new)
    assert plan.changed == ["evidence.fsync", "api.allow_uids"]
    assert plan.refusal is None
    new = parse_config("[capture]\nargv_max = 4\n[api]\nsocket = '/run/x.sock'\n", "f")
    plan = plan_reload(old, new)
    assert plan.restart == ["capture.argv_max", "api.socket"]
    assert plan.refusal is not None and "capture.argv_max, api.socket changed" in plan.refusal
    assert plan_reload(old, Config()).changed == []


def _records(n: int) -> list[object]:
    mapper = Mapper(host="h", anchor=Anchor(boot_id="b", wall_ns=1, boottime_ns=1))
    out: list[object] = [mapper.anchor_record()]
    out += [mapper.capture_config({"n": i}) for i in range(n - 1)]
    return out


async def test_live_tail_overflow_is_counted_and_told() -> None:
    tail = LiveTail()
    assert tail.publish(_records(3), [0, 1, 2]) is None  # nobody listens: nothing kept
    client = tail.subscribe(2)
    records = _records(5)
    tail.publish(records, [10, 11, 12, 13, 14])  # type: ignore[arg-type]
    assert tail.dropped == 3
    data = client.take().decode()
    assert data.count("id: ") == 2
    assert 'event: overflow\ndata: {"dropped":3,"total_dropped":3}' in data
    tail.unsubscribe(client)
    assert tail.dropped == 3  # a client that left keeps its count


async def test_live_tail_skips_what_the_log_already_sent() -> None:
    tail = LiveTail()
    client = tail.subscribe(10)
    tail.publish(_records(4), [5, 6, 7, 8])  # type: ignore[arg-type]
    data = client.take(after_seq=6).decode()
    assert data.count("id: ") == 2  # 7 and 8 only
    tail.close()
    with trio.fail_after(1):
        await client.wait(10)  # closing wakes the writer
    assert client.closed


def _process(pid: int, comm: str, cgroup: int) -> ProcessProfile:
    return ProcessProfile(
        pid=pid, ppid=1, comm=comm, exe="", argv=[], uid=0, gid=0, cgroup_id=cgroup,
        started_ns=None, exited_ns=None, exit_code=None, exit_signal=None, preexisting=False,
        execs=[], files=[], failed_files=[], network=[], failed_network=[], syscalls={},
        evicted={},
    )  # fmt: skip


def test_filter_profile() -> None:
    profile = Profile(
        version=1, command=[], root_pid=None, exit_status=None,
        processes=[_process(1, "a", 7), _process(2, "b", 7), _process(3, "a", 8)],
        evictions={}, probes=[], accounting={}, notes=[], complete=True,
    )  # fmt: skip

    def pids(**filters: object) -> list[int]:
        kept = filter_profile(profile, **{"pid": None, "comm": None, "cgroup": None, **filters})  # type: ignore[arg-type]
        return [p.pid for p in kept.processes]

    assert pids() == [1, 2, 3]
    assert pids(comm="a") == [1, 3]
    assert pids(comm="a", cgroup=8) == [3]
    assert pids(pid=2) == [2]
    assert pids(pid=9) == []


def test_bind_socket_mode_group_and_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "api.sock"
    sock = bind_socket(path, 0o640, 4242)
    try:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o640
        if os.geteuid() == 0:
            assert info.st_gid == 4242
        assert [p.name for p in path.parent.iterdir()] == ["api.sock"]  # staging dir gone
        with pytest.raises(OSError, match="in use by a running daemon"):
            bind_socket(path, 0o640, None)
    finally:
        sock.close()
    # The daemon died: its socket file stays but nobody answers; replaced.
    again = bind_socket(path, 0o600, None)
    again.close()
    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        bind_socket(plain, 0o600, None)
    assert plain.read_text() == "not a socket"


async def test_refused_connections_are_bounded_and_timed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    held = RefusedConnections(capacity=2, hold_s=0.5)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(held.run)
            for ours, _ in pairs:
                held.hold(ours)
            # The third made room by closing the oldest: never more than capacity.
            assert len(held) == 2
            assert [ours.fileno() == -1 for ours, _ in pairs] == [True, False, False]
            await trio.sleep(0.4)
            assert len(held) == 2
            await trio.sleep(0.2)  # past hold_s: all closed, by the one task
            assert len(held) == 0 and all(ours.fileno() == -1 for ours, _ in pairs)
            for _, theirs in pairs:
                assert theirs.recv(10) == b""  # a clean EOF
            held.hold(pairs[0][1])
            nursery.cancel_scope.cancel()
        assert len(held) == 0 and pairs[0][1].fileno() == -1  # cancelled: all closed
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_refused_connection_closes_without_a_reset() -> None:
    """What the peer sent is read off before the close: unread input would
    make the kernel report ECONNRESET to the peer instead of an EOF."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
        theirs.sendall(b"GET / HTTP/1.1\r\n\r\n" * 100)
        RefusedConnections(capacity=0, hold_s=1.0).hold(ours)  # no room: closed now
        assert ours.fileno() == -1
        assert theirs.recv(100) == b"HTTP/1.1 403 Forbidden\r\n\r\n"
        assert theirs.recv(100) == b""
    undrained, peer = socket.socketpair()
    with undrained, peer:  # the same without the drain: the reset this avoids
        peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
        undrained.close()
        with pytest.raises(ConnectionResetError):
            peer.recv(100)
