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

from agent.capture import calls, kinds
from agent.capture.events import (
    CallEvent,
    Endpoint,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
)
from agent.capture.wire import WireDecoder, WireError
from tests.file_records import file_body

HEADER_SIZE = 56
EXEC_DATA_OFF = 56 + 56
FORK_SIZE = 72
EXIT_SIZE = 72
FILE_FIXED_SIZE = 56 + 80  # then the paths' bytes
CALL_SIZE = 56 + 24 + 32 + 48 + 48 + 256 + 256 + 64
NET_SIZE = 200

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
    area: bytes | None = None,
    flags: int = 0,
    at: int = 0,
    filename: bytes = b"/bin/ls",
    ids: tuple[int, int, int, int] = (1, 0, 0, 4294967295),
    cwd: bytes = b"/home/u",
    exe: bytes = b"/usr/bin/ls",
    cwd_flags: int = 0,
    exe_flags: int = 0,
) -> bytes:
    """The variable-length exec record: fixed part, then argv (NUL-ended
    entries), filename, cwd, exe, at the offsets of struct th_exec_event."""
    argv = [b"ls", b"-l", b"/tmp"] if argv is None else argv
    area = b"".join(a + b"\0" for a in argv) if area is None else area
    buf = header(1, EXEC_DATA_OFF)
    ppid, euid, egid, loginuid = ids
    struct.pack_into("<iIIIIII", buf, 56, ret, flags, at, ppid, euid, egid, loginuid)
    struct.pack_into("<IIII", buf, 84, len(filename), len(area), len(cwd), len(exe))
    struct.pack_into("<III", buf, 100, cwd_flags, exe_flags, 0xFFFFFFFF)
    return bytes(buf) + area + filename + cwd + exe


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
    owner: int = 0,
    group: int = 0,
    path: bytes = b"/etc/passwd",
    path2: bytes = b"",
    **more: Any,
) -> bytes:
    body = file_body(
        ret=ret, op=op, nr=nr, dfd=dfd, dfd2=dfd2, flags=flags, mode=mode,
        owner=owner, group=group, path=path, path2=path2, **more,
    )  # fmt: skip
    return bytes(header(4, HEADER_SIZE)) + body


def call_record(
    *,
    op: int,
    nr: int = 117,
    ret: int = 0,
    flags: int = 0,
    args: tuple[int, int, int, int] = (0, 0, 0, 0),
    before: tuple[int, ...] = (0,) * 6,
    after: tuple[int, ...] = (0,) * 6,
    caps: tuple[int, ...] = (0,) * 6,
    strings: tuple[bytes, bytes, bytes] = (b"", b"", b""),
) -> bytes:
    buf = header(7, CALL_SIZE)
    struct.pack_into("<qIIII", buf, 56, ret, op, nr, flags, 0xFFFFFFFF)
    struct.pack_into("<4Q", buf, 80, *args)
    struct.pack_into("<6I6I", buf, 112, *before, *after)
    struct.pack_into("<6Q", buf, 160, *caps)
    for start, text in zip((208, 464, 720), strings, strict=True):
        buf[start : start + len(text)] = text
    return bytes(buf)


def net_record(
    *,
    ret: int = 0,
    op: int = 1,
    fd: int = 5,
    sockaddr: bytes = b"",
    addrlen: int = 0,
    backlog: int = 0,
    msgs: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> bytes:
    buf = header(5, NET_SIZE)
    struct.pack_into("<q", buf, 56, ret)
    struct.pack_into("<IiIIIHH", buf, 64, op, fd, addrlen, backlog, msgs, proto, flags)
    buf[88 : 88 + len(sockaddr)] = sockaddr
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
    argv = [f"a{i}".encode() for i in range(40)]
    event = WireDecoder().decode(exec_record(argv=argv))
    assert isinstance(event, ExecEvent)
    assert event.argv == tuple(a.decode() for a in argv[:16])
    assert event.argv_more and event.argv_truncated


def test_exec_area_cut_in_the_kernel_marks_the_last_entry() -> None:
    # TH_EXEC_ARGV_TRUNCATED and no NUL at the end: the last entry is partial.
    event = WireDecoder().decode(exec_record(area=b"ls\0-l\0/tm", flags=1))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("ls", "-l", "/tm")
    assert event.args_cut == (2,) and event.argv_more and event.argv_truncated
    # Cut right after a NUL: every entry whole, but more may follow.
    event = WireDecoder().decode(exec_record(area=b"ls\0-l\0", flags=1))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("ls", "-l") and event.args_cut == () and event.argv_more


def test_exec_empty_area_gives_empty_argv() -> None:
    event = WireDecoder().decode(exec_record(argv=[]))
    assert isinstance(event, ExecEvent) and event.argv == () and not event.argv_truncated


def test_exec_long_argument_is_cut_at_arg_len_and_marked() -> None:
    event = WireDecoder().decode(exec_record(argv=[b"x" * 300, b"next"]))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("x" * 127, "next")
    assert event.args_cut == (0,) and event.argv_truncated and not event.argv_more


def test_exec_with_compiled_bounds() -> None:
    decoder = WireDecoder(argv_max=4, arg_len=32)
    argv = [b"python3", b"-c", b"print(1)" * 5, b"extra", b"fifth"]
    event = decoder.decode(exec_record(argv=argv))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("python3", "-c", ("print(1)" * 5)[:31], "extra")
    assert event.args_cut == (2,) and event.argv_more


def test_exec_argv_read_from_pointers_comes_in_slots() -> None:
    # TH_EXEC_ARGV_SLOTS: entry i in bytes [i * arg_len, (i + 1) * arg_len).
    decoder = WireDecoder(argv_max=4, arg_len=16)
    slots = b"".join(a.ljust(16, b"\0") for a in (b"sh", b"", b"x" * 15, b"-c"))
    event = decoder.decode(exec_record(area=slots, flags=2048 | 2))
    assert isinstance(event, ExecEvent)
    assert event.argv == ("sh", "", "x" * 15, "-c")
    assert event.args_cut == (2,) and event.argv_truncated and not event.argv_more


def test_exec_enrichment_fields() -> None:
    record = exec_record(ids=(77, 1000, 1001, 42), cwd=b"/srv/app", exe=b"/usr/bin/python3.11",
                         exe_flags=4, flags=512 | 1024)  # fmt: skip
    event = WireDecoder().decode(record)
    assert isinstance(event, ExecEvent)
    assert (event.ppid, event.euid, event.egid, event.loginuid) == (77, 1000, 1001, 42)
    assert (event.cwd, event.cwd_flags) == ("/srv/app", 0)
    assert (event.exe, event.exe_flags) == ("/usr/bin/python3.11", 4)
    assert event.fileless and event.exe_memfd and event.unresolved == ()


def test_exec_without_enrichment_says_what_is_unresolved() -> None:
    record = exec_record(ids=(0, 0, 0, 0), cwd=b"", exe=b"", cwd_flags=8, exe_flags=8,
                         flags=64 | 32 | 16)  # fmt: skip
    event = WireDecoder().decode(record)
    assert isinstance(event, ExecEvent)
    assert (event.ppid, event.euid, event.egid, event.loginuid) == (None, None, None, None)
    assert event.unresolved == ("argv", "ids", "cwd", "exe")
    assert event.argv_truncated and event.argv_more


def test_exec_failure_has_no_paths_and_says_so() -> None:
    record = exec_record(ret=-2, cwd=b"", exe=b"", cwd_flags=16, exe_flags=16, flags=256)
    event = WireDecoder().decode(record)
    assert isinstance(event, ExecEvent)
    assert event.ret == -2 and event.ppid == 1
    assert event.unresolved == ("cwd", "exe")


def test_exec_lengths_beyond_the_record_are_refused() -> None:
    record = bytearray(exec_record())
    struct.pack_into("<I", record, 88, 10_000)  # argv_len
    with pytest.raises(WireError, match="exec record"):
        WireDecoder().decode(bytes(record))


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
    ("op", "name"),
    [(1, "open"), (2, "unlink"), (3, "rename"), (4, "chmod"), (5, "mkdir"), (6, "link"),
     (7, "symlink"), (8, "truncate"), (9, "chown")],
)  # fmt: skip
def test_file_ops(op: int, name: str) -> None:
    event = WireDecoder().decode(file_record(op=op))
    assert isinstance(event, FileEvent) and event.op == name


def test_file_unknown_op_is_named_not_rejected() -> None:
    event = WireDecoder().decode(file_record(op=99))
    assert isinstance(event, FileEvent) and event.op == "op99"


def test_file_chown_ids_with_unchanged_as_minus_one() -> None:
    event = WireDecoder().decode(file_record(op=9, owner=0xFFFFFFFF, group=0x8000_0001))
    assert isinstance(event, FileEvent)
    assert (event.op, event.owner, event.group) == ("chown", -1, 0x8000_0001)


# -- call ------------------------------------------------------------------


def test_call_setresuid_ids_before_and_after() -> None:
    decoder = WireDecoder(syscall_names={117: "setresuid"})
    raw = call_record(
        op=5, args=(65534, 0xFFFFFFFF, 0x1_0000_0007, 0),
        before=(1, 2, 3, 4, 5, 6), after=(65534, 2, 7, 4, 5, 6),
        caps=(0x1FF_FFFF_FFFF, 0x1FF_FFFF_FFFE, 1, 0, 0, 0),
    )  # fmt: skip
    event = decoder.decode(raw)
    assert isinstance(event, CallEvent)
    assert_header(event)
    assert (event.op, event.syscall, event.ret) == ("setresuid", "setresuid", 0)
    # -1 is "unchanged"; an id is the low 32 bits of its register.
    assert event.args == {"ruid": 65534, "euid": -1, "suid": 7}
    assert event.ids_before == dict(zip(calls.ID_NAMES, (1, 2, 3, 4, 5, 6), strict=True))
    assert event.ids_after == dict(zip(calls.ID_NAMES, (65534, 2, 7, 4, 5, 6), strict=True))
    assert event.caps_before == {
        "effective": 0x1FF_FFFF_FFFF,
        "permitted": 0x1FF_FFFF_FFFE,
        "inheritable": 1,
    }
    assert event.caps_after == {"effective": 0, "permitted": 0, "inheritable": 0}


def test_call_unresolved_creds_are_none_and_after_only_for_credential_changes() -> None:
    event = WireDecoder().decode(call_record(op=5, flags=1 | 2))
    assert isinstance(event, CallEvent)
    assert (event.ids_before, event.ids_after, event.caps_before, event.caps_after) == (
        None, None, None, None
    )  # fmt: skip
    kill = WireDecoder().decode(call_record(op=17, nr=62, args=(0xFFFF_FFFF, 15, 0, 0)))
    assert isinstance(kill, CallEvent)
    assert kill.args == {"pid": -1, "sig": 15}
    assert kill.ids_before is not None and kill.ids_after is None and kill.caps_after is None


def test_call_mount_strings_cut_and_unreadable() -> None:
    raw = call_record(
        op=9, nr=165, ret=-1, args=(1, 2, 3, 0x4000), flags=32,
        strings=(b"src", b"/mnt/" + b"x" * 250 + b"\0", b"tmpfs"),
    )  # fmt: skip
    event = WireDecoder().decode(raw)
    assert isinstance(event, CallEvent)
    assert event.ret == -1 and event.args == {"flags": 0x4000}
    assert event.text["source"] == "src"
    # bpf_probe_read_user_str fills 255 bytes and the NUL: maybe cut, so marked.
    assert event.text["target"] == "/mnt/" + "x" * 250
    assert event.text_cut == ("target",)
    assert event.unreadable == ("fstype",)  # str2's flag, whatever its bytes


def test_call_peeked_values_and_unknown_op() -> None:
    bpf = WireDecoder().decode(call_record(op=14, args=(5, 0xDEAD, 120, (7 << 32) | 2)))
    assert isinstance(bpf, CallEvent)
    assert bpf.args == {"cmd": 5, "size": 120, "attr_type": 2}
    capset = WireDecoder().decode(
        call_record(op=7, args=(0, 0, 0, (0xFFFFFFFF << 32) | 0x20080522))
    )
    assert isinstance(capset, CallEvent)
    assert capset.args == {"version": 0x20080522, "pid": -1}
    unknown = WireDecoder().decode(call_record(op=99, args=(1, 2, 3, 4)))
    assert isinstance(unknown, CallEvent)
    assert unknown.op == "op99" and unknown.args == {"arg0": 1, "arg1": 2, "arg2": 3, "arg3": 4}


def test_call_record_too_short_is_refused() -> None:
    with pytest.raises(WireError, match="call record"):
        WireDecoder().decode(call_record(op=5)[:-1])


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
    other = WireDecoder().decode(net_record(op=99))
    assert isinstance(other, NetEvent) and other.op == "op99"


def test_net_udp_sends_carry_protocol_messages_and_flags() -> None:
    sa = sockaddr_in("127.0.0.53", 53)
    event = WireDecoder().decode(
        net_record(op=7, ret=3, sockaddr=sa, addrlen=16, msgs=2, proto=17, flags=1 | 4)
    )
    assert isinstance(event, NetEvent)
    assert (event.op, event.ret, event.messages, event.proto) == ("sendmmsg", 3, 2, "udp")
    assert event.endpoint == Endpoint("ipv4", "127.0.0.53", 53)
    assert event.peer_from_socket and event.more_messages and not event.unchecked
    assert event.outcome == ""
    unchecked = WireDecoder().decode(net_record(op=5, ret=1, sockaddr=sa, addrlen=16, flags=2))
    assert isinstance(unchecked, NetEvent)
    assert (unchecked.op, unchecked.proto, unchecked.unchecked) == ("sendto", "", True)
    assert not unchecked.peer_from_socket
    odd = WireDecoder().decode(net_record(op=6, proto=99))
    assert isinstance(odd, NetEvent) and (odd.op, odd.proto) == ("sendmsg", "proto99")


def test_net_connect_result_outcomes() -> None:
    sa = sockaddr_in("10.0.0.1", 443)

    def outcome(ret: int, flags: int) -> tuple[str, int, str]:
        event = WireDecoder().decode(
            net_record(op=8, ret=ret, sockaddr=sa, addrlen=16, proto=6, flags=flags)
        )
        assert isinstance(event, NetEvent) and event.op == "connect_result"
        assert event.endpoint == Endpoint("ipv4", "10.0.0.1", 443)
        return event.outcome, event.ret, event.proto

    assert outcome(0, 0) == ("established", 0, "tcp")
    assert outcome(-111, 8) == ("refused", -111, "tcp")
    assert outcome(-110, 8) == ("failed", -110, "tcp")
    assert outcome(0, 8 | 2) == ("failed", 0, "tcp")  # the error not known


# -- errors ----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00\x00"])
def test_shorter_than_kind_field(data: bytes) -> None:
    decoder = WireDecoder()
    with pytest.raises(WireError):
        decoder.kind_of(data)
    with pytest.raises(WireError):
        decoder.decode(data)


@pytest.mark.parametrize("kind", [0, 6, 9, 99, 2**32 - 1])
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
    body = bytearray(data.draw(st.binary(min_size=size - 4, max_size=size + 8)))
    if kind == 1:  # its lengths must fit the record: no data
        body[80:96] = bytes(16)
    if kind == 4:  # a file record's four path lengths must fit what follows: none
        body[92:108] = bytes(16)
    event = decoder.decode(struct.pack("<I", kind) + bytes(body))
    expected = {1: ExecEvent, 2: ForkEvent, 3: ExitEvent, 4: FileEvent, 5: NetEvent}[kind]
    assert type(event) is expected
    assert event.pid == int.from_bytes(body[0:4], "little")
    assert event.cgroup_id == int.from_bytes(body[28:36], "little")


@given(st.binary(max_size=64))
def test_arbitrary_short_bytes_raise_wire_error_only(data: bytes) -> None:
    with pytest.raises(WireError):
        WireDecoder().decode(data)
