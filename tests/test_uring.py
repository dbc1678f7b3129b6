"""io_uring operations against the real kernel: an openat, a connect and a
sendmsg made through a ring (liburing from Debian) appear as such.

tests/workloads/uring_ops.c is compiled with gcc -luring and run in a
profile's scope. It chdirs into a directory reached through a symlink and
opens a relative name through the ring, so only the kernel's resolution of
the installed fd gives the real absolute path; it opens a name that does
not exist; connects to a real TCP listener on 127.0.0.1; and sends one UDP
datagram to a real socket with sendmsg. The program prints each
completion's result, so every record is checked against what really
happened, and the profile, the evidence record and its OCSF projection are
checked too. With enrichment off (a deliberately wrong offset) the same
records still come, marked as not read.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from agent.capture import kernel_layout, kinds
from agent.capture.cache_store import CACHE_DIR_ENV
from agent.capture.events import Endpoint, Event, UringEvent
from agent.capture.fold import FoldSettings
from agent.capture.loader import LoadOptions, load
from agent.capture.probes import with_tracepoint_overrides
from agent.capture.session import CaptureSession, CaptureStats
from agent.commands.launcher import launch
from agent.evidence.mapper import Mapper
from agent.evidence.ocsf import to_ocsf
from agent.evidence.record_types import TYPE_URING
from agent.evidence.types import Anchor
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import Profile
from agent.sinks.streaming import StreamingSink
from agent.sinks.tee import TeeSink
from tests.harness import evidence, own_daemon

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "workloads" / "uring_ops.c"
LIBURING = Path("/usr/include/liburing.h")
TH_PATH_NO_LAYOUT = 8

needs_liburing = pytest.mark.skipif(
    shutil.which("gcc") is None or not LIBURING.exists(),
    reason="gcc and liburing-dev (scripts/setup.sh installs them) are needed",
)


@needs_liburing
def test_opcode_names_match_liburing(tmp_path: Path) -> None:
    """kinds.URING_OPS numbers every opcode as the uapi enum does."""
    program = tmp_path / "ops.c"
    lines = ["#include <stdio.h>", "#include <liburing.h>", "int main(void) {"]
    lines += [
        f'    printf("%d {name}\\n", (int)IORING_OP_{name.upper()});'
        for name in kinds.URING_OPS.values()
    ]
    program.write_text("\n".join([*lines, "    return 0;", "}"]) + "\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "ops"), str(program)], check=True)
    out = subprocess.run([str(tmp_path / "ops")], capture_output=True, text=True, check=True)
    printed = {int(n): name for n, name in (line.split() for line in out.stdout.splitlines())}
    assert printed == kinds.URING_OPS
    assert kinds.uring_op_name(18) == "openat"
    assert kinds.uring_op_name(200) == "op200"


@pytest.fixture(scope="module")
def uring_ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None or not LIBURING.exists():
        pytest.skip("gcc and liburing-dev (scripts/setup.sh installs them) are needed")
    exe = tmp_path_factory.mktemp("uring") / "uring_ops"
    subprocess.run(
        ["gcc", "-Wall", "-Werror", "-O2", "-o", str(exe), str(SOURCE), "-luring"], check=True
    )
    return exe


class World:
    """The workload's surroundings: a directory reached through a symlink,
    a TCP listener and a UDP socket on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.real = root / "real" / "dir"
        self.real.mkdir(parents=True)
        (self.real / "target.txt").write_text("io_uring\n")
        (root / "link").symlink_to(self.real)
        self.via_link = root / "link"
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(5)
        self.tcp_port = int(self.tcp.getsockname()[1])
        self.udp_port = int(self.udp.getsockname()[1])

    def argv(self, exe: Path) -> list[str]:
        return [str(exe), str(self.via_link), "target.txt", str(self.tcp_port), str(self.udp_port)]

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


async def _wait(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _run(
    argv: list[str], out: Path
) -> tuple[list[Event], CaptureStats, Profile, list[tuple[str, int, int]]]:
    """Run argv in scope; its records, the books, the profile and what it printed."""
    capture = load(LoadOptions(scoped=True))
    try:
        statuses = {s.name: s for s in capture.statuses}
        assert statuses["uring.ops"].attached, statuses["uring.ops"]
        aggregate = AggregatingSink()
        stream = StreamingSink(capacity=1 << 14, policy="drop", name="records")
        session = CaptureSession(capture, TeeSink([aggregate, stream]), fold=FoldSettings(0, 16))

        async def main() -> None:
            # The shell execs the workload in place (same pid), its stdout in out.
            script = 'out=$1; shift; exec "$@" > "$out"'
            child = launch(["/bin/sh", "-c", script, "sh", str(out), *argv], "/bin/sh")
            capture.add_to_scope(child.pid)
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                assert child.release() is None
                await _wait(child.pid)
                session.stop()

        trio.run(main)
        stats = session.stats()
        stream.finish()
        records: list[Event] = []
        while True:
            try:
                records.extend(stream.receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
    finally:
        capture.close()
    printed = []
    for line in out.read_text().splitlines():
        if not line.startswith("fds "):
            what, tag, res = line.split()
            printed.append((what, int(tag), int(res)))
    return records, stats, aggregate.finish(), printed


def _by_tag(records: list[Event]) -> dict[int, UringEvent]:
    found: dict[int, UringEvent] = {}
    for event in records:
        if isinstance(event, UringEvent) and event.user_data in (101, 102, 103, 104):
            assert event.user_data not in found, "one completion, one record"
            found[event.user_data] = event
    return found


@pytest.mark.usefixtures("kernel")
def test_io_uring_openat_connect_and_sendmsg_appear_as_such(
    uring_ops: Path, tmp_path: Path
) -> None:
    world = World(tmp_path)
    try:
        records, stats, profile, printed = _run(world.argv(uring_ops), tmp_path / "out")
        datagram = world.udp.recv(64)
    finally:
        world.close()
    assert datagram == b"uring"
    results = {tag: res for _, tag, res in printed}
    assert results[102] == -errno.ENOENT and results[103] == 0 and results[104] == 5
    ops = _by_tag(records)
    assert set(ops) == {101, 102, 103, 104}, records

    opened = ops[101]
    assert (opened.op, opened.opcode, opened.res) == ("openat", 18, results[101])
    assert opened.res >= 0 and opened.path == "target.txt" and opened.dfd == kinds.AT_FDCWD
    # The kernel's path of the installed file: through the symlink, relative
    # to a cwd the record never names, and still the real one.
    assert (
        opened.abs_path
        == str(world.real / "target.txt")
        == os.path.realpath(world.via_link / "target.txt")
    )
    assert opened.abs_flags == 0
    assert opened.op_flags & kinds.O_ACCMODE == os.O_RDONLY
    assert not (opened.unpaired or opened.no_layout or opened.direct)
    assert opened.comm == "uring_ops" and opened.complete_ns >= opened.ts_ns

    missing = ops[102]
    assert (missing.op, missing.res, missing.path) == ("openat", -errno.ENOENT, "no-such-file")
    assert missing.abs_path == ""

    connected = ops[103]
    assert (connected.op, connected.res) == ("connect", 0)
    assert connected.endpoint == Endpoint("ipv4", "127.0.0.1", world.tcp_port)
    sent = ops[104]
    assert (sent.op, sent.res) == ("sendmsg", 5)
    assert sent.endpoint == Endpoint("ipv4", "127.0.0.1", world.udp_port)
    assert connected.fd >= 0 and sent.fd >= 0 and connected.fd != sent.fd

    # Every kernel record is accounted for.
    books = stats.kinds["uring"]
    assert books.generated == books.received == books.delivered >= 4
    assert books.balanced and books.lost_kernel == 0

    # The profile: counted per op, and folded into files and network.
    (proc,) = [p for p in profile.processes if p.comm == "uring_ops"]
    assert proc.uring.get("openat") == 2 and proc.uring.get("connect") == 1
    assert proc.uring.get("sendmsg") == 1
    assert [f.path for f in proc.files if f.path.endswith("target.txt")] == [
        str(world.real / "target.txt")
    ]
    assert any(f.path.endswith("no-such-file") and f.error == "ENOENT" for f in proc.failed_files)
    peers = {(n.op, n.endpoint) for n in proc.network}
    assert ("connect", Endpoint("ipv4", "127.0.0.1", world.tcp_port)) in peers
    # sends fold into one "send" line per peer, as their syscalls do
    assert ("send", Endpoint("ipv4", "127.0.0.1", world.udp_port)) in peers

    # Evidence and OCSF: a uring.op.v1 record, projected as file / network activity.
    anchor = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=opened.ts_ns)
    mapper = Mapper(host="h", anchor=anchor)
    mapper.anchor_record()
    record = mapper.map(opened)
    assert record.type == TYPE_URING
    ce = record.event
    assert ce.data.abs_path == str(world.real / "target.txt") and ce.data.res == opened.res
    ocsf = to_ocsf(ce)
    assert ocsf is not None
    assert (ocsf["class_uid"], ocsf["activity_id"]) == (1001, 14)
    assert ocsf["file"]["path"] == str(world.real / "target.txt")
    assert ocsf["unmapped"]["via"] == "io_uring"
    net = to_ocsf(mapper.map(connected).event)
    assert net is not None and (net["class_uid"], net["activity_id"]) == (4001, 1)
    assert net["dst_endpoint"] == {"ip": "127.0.0.1", "port": world.tcp_port}


@pytest.mark.usefixtures("kernel")
def test_without_the_kernel_layout_io_uring_ops_still_appear_marked_unread(
    uring_ops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skewed_program_cache: str
) -> None:
    """A wrong offset fails the self-check: nothing is read from the
    request, and the tracepoints' facts (op, result, tag) still come."""
    monkeypatch.setenv(kernel_layout.SKEW_ENV, "task_struct.tgid=64")
    monkeypatch.setenv(CACHE_DIR_ENV, skewed_program_cache)
    world = World(tmp_path)
    try:
        records, stats, _, printed = _run(world.argv(uring_ops), tmp_path / "out")
    finally:
        world.close()
    ops = _by_tag(records)
    assert {tag: (e.op, e.res) for tag, e in ops.items()} == {
        tag: (what, res) for what, tag, res in printed
    }
    for event in ops.values():
        assert event.no_layout and not event.unpaired
        assert event.path == "" and event.endpoint is None and event.fd == -1
    assert ops[101].abs_path == "" and ops[101].abs_flags == TH_PATH_NO_LAYOUT
    assert stats.kinds["uring"].balanced


@pytest.mark.usefixtures("kernel")
def test_a_kernel_without_the_io_uring_tracepoints_reports_the_probe_missing(
    uring_ops: Path, tmp_path: Path
) -> None:
    """No io_uring_submit_req (an older or stripped kernel): uring.ops is
    reported missing with the tracepoint named, and the rest attaches."""
    bogus = "io_uring:io_uring_tracehound_does_not_exist"
    probes = with_tracepoint_overrides({"uring.ops": bogus})
    capture = load(LoadOptions(probes=probes, scoped=True))
    try:
        statuses = {s.name: s for s in capture.statuses}
    finally:
        capture.close()
    assert not statuses["uring.ops"].attached
    assert bogus in statuses["uring.ops"].reason
    assert all(s.attached for name, s in statuses.items() if name != "uring.ops")


def test_the_daemon_writes_io_uring_evidence(uring_ops: Path, tmp_path: Path) -> None:
    """Through the forked evidence worker and the chain: the openat is a
    uring.op.v1 record with the absolute path, the connect one with its peer."""
    world = World(tmp_path)
    try:
        with own_daemon(tmp_path) as daemon:
            daemon.start()
            done = subprocess.run(world.argv(uring_ops), capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert daemon.stop() == 0, daemon.log()
    finally:
        world.close()
    mine = [
        e["data"]
        for e in evidence(daemon.state, "uring.op.v1")
        if e["data"]["comm"] == "uring_ops" and e["data"]["user_data"] in ("101", "103")
    ]
    by_tag = {d["user_data"]: d for d in mine}
    assert sorted(by_tag) == ["101", "103"], mine
    assert by_tag["101"]["abs_path"] == str(world.real / "target.txt")
    assert by_tag["101"]["path"] == "target.txt" and by_tag["101"]["op"] == "openat"
    assert by_tag["103"]["endpoint"] == {
        "family": "ipv4", "address": "127.0.0.1", "port": world.tcp_port
    }  # fmt: skip
    assert by_tag["103"]["res"] == 0 and by_tag["103"]["path"] is None
