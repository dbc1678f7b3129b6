"""WireDecoder turns raw ring-buffer records into event Structs.

Records are built here byte by byte at the offsets of bpf/tracehound.h (which
tests/test_wire_layout.py checks against the C compiler), independently of
the formats in wire.py.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.capture import kinds
from agent.capture.events import Endpoint, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent
from agent.capture.wire import WireDecoder, WireError
from tests.file_records import file_body

HEADER_SIZE = 56
EXEC_ARGV_OFF = 56 + 16 + 256
FORK_SIZE = 72
EXIT_SIZE = 72
FILE_FIXED_SIZE = 56 + 80  # then the paths' bytes
NET_SIZE = 192

# Distinct values wider than 32 bits where the field allows, so a swapped or
# truncated field shows.
HDR = {
    "pid": 4242,
    "tid": 4243,
    "ts_ns": 0x1_2345_6789_ABCD,
    "uid": 1000,
    "gid": 1001,
    "cgroup_id": 0xFEDC_BA98_7654_3210,
    "comm": "worker",
}


def header(kind: int, size: int, **over: object) -> bytearray:
    h = {**HDR, **over}
    buf = bytearray(size)
    struct.pack_into("<I", buf, 0, kind)
    struct.pack_into("<I", buf, 4, h["pid"])
    struct.pack_into("<Q", buf, 8, h["ts_ns"])
    struct.pack_into("<I", buf, 16, h["tid"])
    struct.pack_into("<I", buf, 20, h["uid"])
    struct.pack_into("<I", buf, 24, h["gid"])
    struct.pack_into("<I", buf, 28, 0xDEADBEEF)  # padding: must be ignored
    struct.pack_into("<Q", buf, 32, h["cgroup_id"])
    comm = str(h["comm"]).encode()
    buf[40 : 40 + len(comm)] = comm
    return buf


def exec_record(
    *,
    ret: int = 0,
    argv: list[bytes] | None = None,
    argc: int | None = None,
    flags: int = 0,
    at: int = 0,
    filename: bytes = b"/bin/ls",
    argv_max: int = 16,
    arg_len: int = 128,
) -> bytes:
    argv = [b"ls", b"-l", b"/tmp"] if argv is None else argv
    buf = header(1, EXEC_ARGV_OFF + argv_max * arg_len)
    struct.pack_into("<iIII", buf, 56, ret, len(argv) if argc is None else argc, flags, at)
    buf[72 : 72 + len(filename)] = filename
    for i, arg in enumerate(argv[:argv_max]):
        start = EXEC_ARGV_OFF + i * arg_len
        buf[start : start + len(arg)] = arg
    return bytes(buf)


def fork_record(child_pid: int, clone_flags: int) -> bytes:
    buf = header(2, FORK_SIZE)
    struct.pack_into("<I", buf, 56, child_pid)
    struct.pack_into("<I", buf, 60, 0xFFFFFFFF)  # padding
    struct.pack_into("<Q", buf, 64, clone_flags)
    return bytes(buf)


def exit_record(exit_code: int, signal: int, flags: int) -> bytes:
    buf = header(3, EXIT_SIZE)
    struct.pack_into("<iiII", buf, 56, exit_code, signal, flags, 0xFFFFFFFF)
    return bytes(buf)


def file_record(
    *,
    ret: int = 3,
    op: int = 1,
    nr: int = 257,
    dfd: int = -100,
    dfd2: int = -100,
    flags: int = 0o2,
    mode: int = 0o644,
    path: bytes = b"/etc/passwd",
    path2: bytes = b"",
    **more: Any,
) -> bytes:
    body = file_body(
        ret=ret, op=op, nr=nr, dfd=dfd, dfd2=dfd2, flags=flags, mode=mode,
        path=path, path2=path2, **more,
    )  # fmt: skip
    return bytes(header(4, HEADER_SIZE)) + body


def net_record(
    *,
    ret: int = 0,
    op: int = 1,
    fd: int = 5,
    sockaddr: bytes = b"",
    addrlen: int = 0,
    backlog: int = 0,
) -> bytes:
    buf = header(5, NET_SIZE)
    struct.pack_into("<q", buf, 56, ret)
    struct.pack_into("<IiII", buf, 64, op, fd, addrlen, backlog)
    buf[80 : 80 + len(sockaddr)] = sockaddr
    return bytes(buf)


def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip)


def assert_header(event: object) -> None:
    for name, value in HDR.items():
        assert getattr(event, name) == value, name


# -- exec ------------------------------------------------------------------


def test_exec_success() -> None:
    event = WireDecoder().decode(exec_record())
    assert isinstance(event, ExecEvent)
    assert_header(event)
    assert event.ret == 0
    assert event.filename == "/bin/ls"
    assert event.argv == ("ls", "-l", "/tmp")
    assert event.argv_truncated is False
    assert event.at is False


def test_exec_failure_keeps_negative_errno() -> None:
    event = WireDecoder().decode(exec_record(ret=-2, filename=b"/nope", argv=[b"/nope"]))
    assert isinstance(event, ExecEvent)
    assert event.ret == -2
    assert event.filename == "/nope"
    assert event.argv == ("/nope",)


def test_execveat_flag() -> None:
    event = WireDecoder().decode(exec_record(at=1))
    assert isinstance(event, ExecEvent) and event.at is True


@pytest.mark.parametrize(("flags", "truncated"), [(0, False), (1, True), (2, True), (3, True)])
def test_exec_truncation_flags(flags: int, truncated: bool) -> None:
    event = WireDecoder().decode(exec_record(flags=flags))
    assert isinstance(event, ExecEvent) and event.argv_truncated is truncated


def test_exec_argc_is_capped_at_argv_max() -> None:
    argv = [f"a{i}".encode() for i in range(16)]
    event = WireDecoder().decode(exec_record(argv=argv, argc=40, flags=1))
    assert isinstance(event, ExecEvent)
    assert event.argv == tuple(a.decode() for a in argv)


def test_exec_argc_zero_gives_empty_argv() -> None:
    event = WireDecoder().decode(exec_record(argv=[b"ignored"], argc=0))
    assert isinstance(event, ExecEvent) and event.argv == ()


def test_exec_full_argument_slot_does_not_bleed_into_the_next() -> None:
    full = b"x" * 128  # no NUL: the slot is full
    event = WireDecoder().decode(exec_record(argv=[full, b"next"], flags=2))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("x" * 128, "next")
    assert event.argv_truncated


def test_exec_with_compiled_bounds() -> None:
    decoder = WireDecoder(argv_max=4, arg_len=32)
    argv = [b"python3", b"-c", b"print(1)", b"extra"]
    record = exec_record(argv=argv, argc=4, argv_max=4, arg_len=32)
    assert len(record) == decoder.sizes[1]
    event = decoder.decode(record)
    assert isinstance(event, ExecEvent)
    assert event.argv == ("python3", "-c", "print(1)", "extra")
    # The default decoder expects a bigger record and refuses this one.
    with pytest.raises(WireError):
        WireDecoder().decode(record)


def test_exec_non_utf8_bytes_survive() -> None:
    raw = b"/tmp/caf\xe9"
    event = WireDecoder().decode(exec_record(filename=raw, argv=[raw]))
    assert isinstance(event, ExecEvent)
    assert event.filename.encode("utf-8", "surrogateescape") == raw
    assert event.argv[0].encode("utf-8", "surrogateescape") == raw


def test_trailing_bytes_after_record_are_ignored() -> None:
    # Ring-buffer records may come rounded up.
    event = WireDecoder().decode(fork_record(7, 0x11) + b"\xff" * 8)
    assert isinstance(event, ForkEvent) and event.child_pid == 7


# -- fork / exit -----------------------------------------------------------


def test_fork() -> None:
    event = WireDecoder().decode(fork_record(child_pid=99999, clone_flags=0x1_0000_0011))
    assert isinstance(event, ForkEvent)
    assert_header(event)
    assert event.child_pid == 99999
    assert event.clone_flags == 0x1_0000_0011


@pytest.mark.parametrize(
    ("code", "sig", "flags", "have_code", "have_signal"),
    [
        (3, 0, 1, True, False),
        (0, 9, 2, False, True),
        (0, 11, 3, True, True),
        (0, 0, 0, False, False),
        (255, 0, 1, True, False),
    ],
)
def test_exit(code: int, sig: int, flags: int, have_code: bool, have_signal: bool) -> None:
    event = WireDecoder().decode(exit_record(code, sig, flags))
    assert isinstance(event, ExitEvent)
    assert_header(event)
    assert (event.exit_code, event.signal) == (code, sig)
    assert (event.have_code, event.have_signal) == (have_code, have_signal)


# -- file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "name"), [(1, "open"), (2, "unlink"), (3, "rename"), (4, "chmod"), (5, "mkdir")]
)
def test_file_ops(op: int, name: str) -> None:
    event = WireDecoder().decode(file_record(op=op))
    assert isinstance(event, FileEvent) and event.op == name


def test_file_unknown_op_is_named_not_rejected() -> None:
    event = WireDecoder().decode(file_record(op=9))
    assert isinstance(event, FileEvent) and event.op == "op9"


def test_file_fields() -> None:
    decoder = WireDecoder(syscall_names={257: "openat", 82: "rename"})
    event = decoder.decode(
        file_record(ret=-13, op=1, nr=257, dfd=7, flags=0o101, mode=0o600, path=b"rel/x")
    )
    assert isinstance(event, FileEvent)
    assert_header(event)
    assert event.ret == -13
    assert event.syscall == "openat"
    assert event.dfd == 7
    assert event.path == "rel/x"
    assert event.path2 == ""
    assert event.flags == 0o101
    assert event.mode == 0o600

    rename = decoder.decode(
        file_record(ret=0, op=3, nr=82, dfd=-100, dfd2=9, path=b"/a", path2=b"b.new")
    )
    assert isinstance(rename, FileEvent)
    assert (rename.op, rename.syscall, rename.path, rename.dfd2, rename.path2) == (
        "rename", "rename", "/a", 9, "b.new"
    )  # fmt: skip


def test_file_large_fd_and_unknown_syscall_number() -> None:
    event = WireDecoder().decode(file_record(ret=2**40, nr=999))
    assert isinstance(event, FileEvent)
    assert event.ret == 2**40
    assert event.syscall == "syscall_999"


def test_file_path_cut_in_the_kernel_is_marked() -> None:
    path = b"/" + b"p" * 4094  # filled the 4096-byte buffer: the kernel flags it
    event = WireDecoder().decode(file_record(path=path, path_flags=kinds.PASSED_CUT, path2=b"t"))
    assert isinstance(event, FileEvent)
    assert event.path == path.decode()
    assert event.path_cut and not event.path2_cut
    assert event.path2 == "t"


def test_file_absolute_path_of_an_installed_file_is_taken_as_is() -> None:
    event = WireDecoder().decode(
        file_record(path=b"lib.so", abs_path=b"/usr/lib/x/lib.so.1", abs_flags=0,
                    abs_from=kinds.FROM_FILE)
    )  # fmt: skip
    assert isinstance(event, FileEvent)
    assert (event.path, event.abs_path, event.abs_flags) == ("lib.so", "/usr/lib/x/lib.so.1", 0)


def test_file_base_and_name_are_joined_and_flagged() -> None:
    event = WireDecoder().decode(
        file_record(ret=-2, path=b"./a//b/../c", abs_path=b"/srv/w", abs_flags=0,
                    abs_from=kinds.FROM_BASE)
    )  # fmt: skip
    assert isinstance(event, FileEvent)
    assert event.abs_path == "/srv/w/a/b/../c"
    assert event.abs_flags == kinds.PATH_JOINED | kinds.PATH_LEXICAL


def test_file_rename_target_resolved_against_its_own_base() -> None:
    event = WireDecoder().decode(
        file_record(op=3, ret=0, path=b"old", path2=b"../new", abs_path=b"/d1", abs_flags=0,
                    abs_from=kinds.FROM_BASE, abs_path2=b"/d2/sub", abs2_flags=kinds.PATH_CUT,
                    abs2_from=kinds.FROM_BASE)
    )  # fmt: skip
    assert isinstance(event, FileEvent)
    assert (event.abs_path, event.abs_flags) == ("/d1/old", kinds.PATH_JOINED)
    assert (event.abs_path2, event.abs2_flags) == ("/d2/new", kinds.PATH_JOINED | kinds.PATH_CUT)


def test_file_not_resolved_is_empty_and_says_why() -> None:
    event = WireDecoder().decode(
        file_record(path=b"rel", abs_flags=kinds.PATH_NO_LAYOUT, abs_from=kinds.FROM_NONE)
    )
    assert isinstance(event, FileEvent)
    assert (event.abs_path, event.abs_flags) == ("", kinds.PATH_NO_LAYOUT)


def test_file_owner_and_group_unchanged_is_minus_one() -> None:
    event = WireDecoder().decode(file_record(owner=1000, group=0xFFFFFFFF))
    assert isinstance(event, FileEvent)
    assert (event.owner, event.group) == (1000, -1)


def test_file_record_with_impossible_lengths_is_refused() -> None:
    record = bytearray(file_record(path=b"x"))
    struct.pack_into("<I", record, FILE_FIXED_SIZE - 40, 5000)  # path_len
    with pytest.raises(WireError, match="exceed 4096"):
        WireDecoder().decode(bytes(record) + bytes(5000))


# -- net -------------------------------------------------------------------


def test_net_connect_with_sockaddr() -> None:
    sa = sockaddr_in("10.1.2.3", 443)
    event = WireDecoder().decode(net_record(ret=-111, op=1, fd=4, sockaddr=sa, addrlen=16))
    assert isinstance(event, NetEvent)
    assert_header(event)
    assert event.op == "connect"
    assert event.ret == -111
    assert event.fd == 4
    assert event.endpoint == Endpoint("ipv4", "10.1.2.3", 443)
    assert event.backlog == 0


def test_net_addrlen_limits_the_sockaddr() -> None:
    sa = sockaddr_in("10.1.2.3", 443)
    event = WireDecoder().decode(net_record(op=2, sockaddr=sa, addrlen=0, ret=6))
    assert isinstance(event, NetEvent)
    assert event.op == "accept"
    assert event.ret == 6
    assert event.endpoint is None


def test_net_listen_backlog_and_negative_fd() -> None:
    event = WireDecoder().decode(net_record(op=4, fd=-1, backlog=511, ret=-9))
    assert isinstance(event, NetEvent)
    assert (event.op, event.fd, event.backlog, event.ret) == ("listen", -1, 511, -9)
    assert event.endpoint is None


def test_net_bind_unix_and_unknown_op() -> None:
    sa = struct.pack("<H", socket.AF_UNIX) + b"/run/app.sock\0"
    event = WireDecoder().decode(net_record(op=3, sockaddr=sa, addrlen=len(sa)))
    assert isinstance(event, NetEvent)
    assert event.op == "bind"
    assert event.endpoint == Endpoint("unix", "/run/app.sock")
    other = WireDecoder().decode(net_record(op=7))
    assert isinstance(other, NetEvent) and other.op == "op7"


# -- errors ----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00\x00"])
def test_shorter_than_kind_field(data: bytes) -> None:
    decoder = WireDecoder()
    with pytest.raises(WireError):
        decoder.kind_of(data)
    with pytest.raises(WireError):
        decoder.decode(data)


@pytest.mark.parametrize("kind", [0, 6, 7, 99, 2**32 - 1])
def test_unknown_kind(kind: int) -> None:
    # 6 (syscall) exists as a kind but never has a ring-buffer record.
    data = struct.pack("<I", kind) + bytes(4096)
    with pytest.raises(WireError, match="unknown record kind"):
        WireDecoder().decode(data)


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (exec_record(), "exec"),
        (fork_record(1, 0), "fork"),
        (exit_record(0, 0, 1), "exit"),
        (file_record(), "file"),
        (net_record(), "net"),
    ],
)
def test_short_records(record: bytes, name: str) -> None:
    decoder = WireDecoder()
    assert decoder.decode(record) is not None
    for cut in (1, 8, len(record) - HEADER_SIZE, len(record) - 4):
        with pytest.raises(WireError, match=name):
            decoder.decode(record[:-cut])


def test_kind_of_reads_only_the_kind() -> None:
    assert WireDecoder().kind_of(b"\x05\x00\x00\x00") == 5
    assert WireDecoder().kind_of(fork_record(1, 0)) == 2


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(
    pid=u32, tid=u32, ts=u64, uid=u32, gid=u32, cg=u64, child=u32, flags=u64,
    comm=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=15),
)  # fmt: skip
def test_fork_header_roundtrip(
    pid: int, tid: int, ts: int, uid: int, gid: int, cg: int, child: int, flags: int, comm: str
) -> None:
    over = {"pid": pid, "tid": tid, "ts_ns": ts, "uid": uid, "gid": gid, "cgroup_id": cg}
    buf = header(2, FORK_SIZE, comm=comm, **over)
    struct.pack_into("<IIQ", buf, 56, child, 0, flags)
    event = WireDecoder().decode(bytes(buf))
    assert isinstance(event, ForkEvent)
    assert (event.pid, event.tid, event.ts_ns, event.uid, event.gid, event.cgroup_id) == (
        pid, tid, ts, uid, gid, cg
    )  # fmt: skip
    assert event.comm == comm
    assert (event.child_pid, event.clone_flags) == (child, flags)


@given(st.sampled_from([1, 2, 3, 4, 5]), st.data())
def test_random_bodies_decode_to_their_kind(kind: int, data: st.DataObject) -> None:
    decoder = WireDecoder()
    size = decoder.sizes[kind]
    body = data.draw(st.binary(min_size=size - 4, max_size=size + 8))
    if kind == 4:  # a file record's four path lengths must fit what follows: none
        body = body[:92] + bytes(16) + body[108:]
    event = decoder.decode(struct.pack("<I", kind) + body)
    expected = {1: ExecEvent, 2: ForkEvent, 3: ExitEvent, 4: FileEvent, 5: NetEvent}[kind]
    assert type(event) is expected
    assert event.pid == int.from_bytes(body[0:4], "little")
    assert event.cgroup_id == int.from_bytes(body[28:36], "little")


@given(st.binary(max_size=64))
def test_arbitrary_short_bytes_raise_wire_error_only(data: bytes) -> None:
    with pytest.raises(WireError):
        WireDecoder().decode(data)
