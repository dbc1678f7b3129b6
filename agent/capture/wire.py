"""Decode the ring-buffer records of ``bpf/tracehound.h``. Pure: no kernel.

The C header is the single definition of each record; the formats here mirror
it and ``tests/test_wire_layout.py`` compiles the header with gcc to prove
they agree, size for size and offset for offset.

This runs once per event on the drain's hot path: it slices and unpacks, and
does nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from agent.capture import calls
from agent.capture.abspath import absolute
from agent.capture.events import (
    CallEvent,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    KernelEvent,
    NetEvent,
    UringEvent,
)

# Kinds, operations and flags: defined once, in agent.capture.kinds.
from agent.capture.kinds import (  # re-exported: defined once there
    CALL_CREDS_OPS,
    CALL_OPS,
    EXEC_ARG_TRUNCATED,
    EXEC_ARGV_SLOTS,
    EXEC_ARGV_TRUNCATED,
    EXEC_ARGV_UNREADABLE,
    EXEC_EXE_MEMFD,
    EXEC_EXE_UNLINKED,
    EXEC_FAILED_NO_PATHS,
    EXEC_FILENAME_CUT,
    EXEC_FILENAME_UNREADABLE,
    EXEC_NO_IMAGE,
    EXEC_NO_LAYOUT,
    EXIT_HAVE_CODE,
    EXIT_HAVE_SIGNAL,
    FILE_OPS,
    FILE_SYMLINK,
    FROM_FILE,
    KIND_CALL,
    KIND_EXEC,
    KIND_EXIT,
    KIND_FILE,
    KIND_FORK,
    KIND_NAMES,
    KIND_NET,
    KIND_URING,
    NET_OPS,
    NET_PROTOCOLS,
    NETF_FAILED,
    NETF_MORE,
    NETF_PEER,
    NETF_UNCHECKED,
    PASSED_CUT,
    URING_DIRECT,
    URING_FIXED_FILE,
    URING_NO_LAYOUT,
    URING_SQPOLL,
    URING_UNPAIRED,
    connect_outcome,
    uring_op_name,
)
from agent.capture.sockaddr import decode_sockaddr

COMM_LEN = 16
PATH_LEN = 256
SOCKADDR_LEN = 112
CALL_SHORT_LEN = 64
DEFAULT_ARGV_MAX = 16
DEFAULT_ARG_LEN = 128
PATH_MAX = 4096  # TH_PATH_MAX
ARGV_BYTES_MAX = 16384  # TH_ARGV_BYTES_MAX

HEADER = struct.Struct("<IIQIIIIQ16s")  # struct th_header
EXEC_BODY = struct.Struct("<iIIIIIIIIIIIII")  # struct th_exec_event, up to data
FORK_BODY = struct.Struct("<IIQ")  # struct th_fork_event
EXIT_BODY = struct.Struct("<iiII")  # struct th_exit_event
#: struct th_file_event's fixed part: ret, op, nr, dfd, dfd2, flags, mode,
#: owner, group, the four lengths, path_flags, path2_flags, abs_flags,
#: abs2_flags, abs_from, abs2_from. The data (path, path2, abs, abs2) follows.
FILE_BODY = struct.Struct("<qIIiiIIIIIIIIIIIIII")
NET_BODY = struct.Struct(f"<qIiIIIHH{SOCKADDR_LEN}s")  # struct th_net_event
# struct th_uring_event; abs_len bytes of absolute path follow it.
URING_BODY = struct.Struct(f"<qQQQIIiiiIIIII{SOCKADDR_LEN}s{PATH_LEN}s{PATH_LEN}s")
URING_NUMS = struct.Struct("<qQQQIIiiiIIIII")
URING_SOCKADDR_OFFSET = HEADER.size + URING_NUMS.size
URING_PATH_OFFSET = URING_SOCKADDR_OFFSET + SOCKADDR_LEN
# struct th_call_event: ret op nr flags pad, args[4], ids_before[6], ids_after[6],
# caps_before[3], caps_after[3], then str0, str1, str2.
CALL_NUMS = struct.Struct("<qIIII4Q6I6I3Q3Q")
CALL_BODY = struct.Struct(
    f"<qIIII4Q6I6I3Q3Q{PATH_LEN}s{PATH_LEN}s{CALL_SHORT_LEN}s"
)  # struct th_call_event


class WireError(ValueError):
    """A record that does not match any layout: counted, never fatal."""


def argv_bytes(argv_max: int, arg_len: int) -> int:
    """TH_ARGV_BYTES: the argument-area bytes an exec record holds."""
    return min(argv_max * arg_len, ARGV_BYTES_MAX)


def exec_data_size(argv_max: int, arg_len: int) -> int:
    """TH_EXEC_DATA: the largest variable part of an exec record."""
    return 3 * PATH_MAX + argv_bytes(argv_max, arg_len)


def split_argv(
    area: bytes, argv_max: int, arg_len: int, area_cut: bool
) -> tuple[tuple[str, ...], tuple[int, ...], bool]:
    """The argument area (NUL-terminated entries) as (argv, entries cut,
    more entries than kept). At most ``argv_max`` entries, each at most
    ``arg_len - 1`` bytes (the configured bounds); an entry that fills the
    bound is marked cut (the capture cannot tell it from one cut), and so
    is a last entry without its NUL (the area was cut in the kernel: more
    entries may have followed, so ``more`` is set too)."""
    parts = area.split(b"\0")
    last_whole = area.endswith(b"\0") or not area
    if last_whole:
        parts.pop()  # the empty string after the last NUL
    more = len(parts) > argv_max or area_cut
    kept = parts[:argv_max]
    argv: list[str] = []
    cut: list[int] = []
    for i, raw in enumerate(kept):
        if len(raw) >= arg_len - 1 or (i == len(parts) - 1 and not last_whole):
            cut.append(i)
            raw = raw[: arg_len - 1]
        argv.append(_text(raw))
    return tuple(argv), tuple(cut), more


def _cstr_at(data: bytes, start: int, size: int) -> tuple[str, bool]:
    """The NUL-terminated string in data[start:start+size], without copying
    the whole field first (the hot path decodes two 256-byte paths), and
    whether the capture may have cut it.

    Bytes that are not UTF-8 are kept (surrogateescape, see agent.safetext).
    ``bpf_probe_read_user_str`` fills at most ``size - 1`` bytes and a NUL,
    so a string that fills the field was cut, or is exactly that long: the
    capture cannot tell, so it is marked cut (never silently whole).
    """
    end = data.find(b"\0", start, start + size)
    if end < 0:
        end = start + size
    return data[start:end].decode("utf-8", "surrogateescape"), end - start >= size - 1


# Numeric prefixes of the bodies, for decoding without copying the strings.
HEADER_NUMS = struct.Struct("<IIQIIIIQ")
COMM_OFFSET = HEADER_NUMS.size
#: Where a file record's data (path, path2, abs, abs2) starts.
FILE_DATA_OFFSET = HEADER.size + FILE_BODY.size
#: A chown's "unchanged" (-1) as the kernel's u32 holds it.
_U32_ALL = 0xFFFFFFFF


def _text(data: bytes, start: int = 0, end: int | None = None) -> str:
    """Host text as it came: bytes that are not UTF-8 kept (agent.safetext)."""
    return data[start:end].decode("utf-8", "surrogateescape")


class WireDecoder:
    """Decodes records for one compiled program.

    ``argv_max`` and ``arg_len`` are the TH_ARGV_MAX and TH_ARG_LEN the
    program was compiled with; ``syscall_names`` maps syscall numbers to
    names (bcc's table, sent by the compile child, in production; any
    mapping in tests).
    """

    def __init__(
        self,
        argv_max: int = DEFAULT_ARGV_MAX,
        arg_len: int = DEFAULT_ARG_LEN,
        syscall_names: Mapping[int, str] | None = None,
    ) -> None:
        self.argv_max = argv_max
        self.arg_len = arg_len
        self.syscall_names = dict(syscall_names or {})
        # sizeof(struct th_exec_event), the largest exec record: padded to
        # the 8-byte alignment of its header. Records are sent shorter.
        self.exec_fixed = HEADER.size + EXEC_BODY.size
        self.exec_size = (self.exec_fixed + exec_data_size(argv_max, arg_len) + 7) & ~7
        self.sizes = {
            KIND_EXEC: self.exec_fixed,
            KIND_FORK: HEADER.size + FORK_BODY.size,
            KIND_EXIT: HEADER.size + EXIT_BODY.size,
            KIND_FILE: HEADER.size + FILE_BODY.size,
            KIND_NET: HEADER.size + NET_BODY.size,
            KIND_URING: HEADER.size + URING_BODY.size,  # the least: a path may follow
            KIND_CALL: HEADER.size + CALL_BODY.size,
        }

    def kind_of(self, data: bytes) -> int:
        """The record's kind number, without decoding the rest."""
        if len(data) < 4:
            raise WireError(f"record of {len(data)} bytes is shorter than its kind field")
        return int.from_bytes(data[:4], "little")

    def decode(self, data: bytes) -> KernelEvent:
        kind = self.kind_of(data)
        want = self.sizes.get(kind)
        if want is None:
            raise WireError(f"unknown record kind {kind}")
        if len(data) < want:
            raise WireError(f"{KIND_NAMES[kind]} record of {len(data)} bytes, expected {want}")
        _, pid, ts_ns, tid, uid, gid, _pad, cgroup_id = HEADER_NUMS.unpack_from(data)
        comm = _cstr_at(data, COMM_OFFSET, COMM_LEN)[0]
        off = HEADER.size
        if kind == KIND_FILE:  # the hot one: one unpack, slices
            (ret, op, nr, dfd, dfd2, flags, mode, owner, group, n1, n2, n3, n4,
             pflags, p2flags, aflags, a2flags, afrom, a2from) = FILE_BODY.unpack_from(data, off)  # fmt: skip
            if n1 > PATH_MAX or n2 > PATH_MAX or n3 > PATH_MAX or n4 > PATH_MAX:
                raise WireError(f"file record path lengths {n1}/{n2}/{n3}/{n4} exceed 4096")
            o1 = FILE_DATA_OFFSET + n1
            o2 = o1 + n2
            o3 = o2 + n3
            if len(data) < o3 + n4:
                raise WireError(f"file record of {len(data)} bytes, its paths need {o3 + n4}")
            path = _text(data, FILE_DATA_OFFSET, o1)
            if afrom == FROM_FILE:  # a successful open: nothing to join
                abs_path, abs_flags = _text(data, o2, o3), aflags
            elif op == FILE_SYMLINK:  # its path is the link's text, no path the kernel used
                abs_path, abs_flags = "", 0
            else:
                abs_path, abs_flags = absolute(afrom, aflags, _text(data, o2, o3), path, pflags)
            if n2 or p2flags:  # a rename's or link's target, a symlink's new link
                path2 = _text(data, o1, o2)
                abs_path2, abs2_flags = absolute(
                    a2from, a2flags, _text(data, o3, o3 + n4), path2, p2flags
                )
            else:
                path2, abs_path2, abs2_flags = "", "", 0
            return FileEvent(
                pid, tid, ts_ns, uid, gid, cgroup_id, comm,
                FILE_OPS.get(op) or f"op{op}",
                self.syscall_names.get(nr) or f"syscall_{nr}",
                ret, dfd, path, dfd2, path2, flags, mode,
                bool(pflags & PASSED_CUT), bool(p2flags & PASSED_CUT),
                abs_path, abs_path2, abs_flags, abs2_flags,
                -1 if owner == _U32_ALL else owner, -1 if group == _U32_ALL else group,
            )  # fmt: skip
        if kind == KIND_EXEC:
            return self._exec(data, pid, ts_ns, tid, uid, gid, cgroup_id, comm)
        if kind == KIND_NET:
            ret, op, fd, addrlen, backlog, msgs, proto, flags, sockaddr = NET_BODY.unpack_from(
                data, off
            )
            name = NET_OPS.get(op, f"op{op}")
            failed = bool(flags & NETF_FAILED)
            return NetEvent(
                pid, tid, ts_ns, uid, gid, cgroup_id, comm,
                op=name, ret=ret, fd=fd,
                endpoint=decode_sockaddr(sockaddr, addrlen), backlog=backlog,
                proto=NET_PROTOCOLS.get(proto, f"proto{proto}") if proto else "",
                messages=msgs,
                peer_from_socket=bool(flags & NETF_PEER),
                unchecked=bool(flags & NETF_UNCHECKED),
                more_messages=bool(flags & NETF_MORE),
                outcome=connect_outcome(ret, failed) if name == "connect_result" else "",
            )  # fmt: skip
        if kind == KIND_URING:
            return self._uring(data, pid, tid, ts_ns, uid, gid, cgroup_id, comm)
        if kind == KIND_CALL:
            return self._call(data, (pid, tid, ts_ns, uid, gid, cgroup_id, comm))
        if kind == KIND_FORK:
            child_pid, _pad, clone_flags = FORK_BODY.unpack_from(data, off)
            return ForkEvent(
                pid, tid, ts_ns, uid, gid, cgroup_id, comm,
                child_pid=child_pid, clone_flags=clone_flags,
            )  # fmt: skip
        exit_code, signal, flags, _pad = EXIT_BODY.unpack_from(data, off)
        return ExitEvent(
            pid, tid, ts_ns, uid, gid, cgroup_id, comm,
            exit_code=exit_code, signal=signal,
            have_code=bool(flags & EXIT_HAVE_CODE), have_signal=bool(flags & EXIT_HAVE_SIGNAL),
        )  # fmt: skip

    @staticmethod
    def _uring(
        data: bytes, pid: int, tid: int, ts_ns: int, uid: int, gid: int, cgroup_id: int, comm: str
    ) -> UringEvent:
        (res, user_data, complete_ns, op_flags, opcode, flags, fd, dfd, dfd2, cflags, mode,
         addrlen, abs_flags, abs_len) = URING_NUMS.unpack_from(data, HEADER.size)  # fmt: skip
        end = HEADER.size + URING_BODY.size
        if abs_len > PATH_MAX or len(data) < end + abs_len:
            raise WireError(f"uring record of {len(data)} bytes says {abs_len} path bytes follow")
        path, path_cut = _cstr_at(data, URING_PATH_OFFSET, PATH_LEN)
        path2, path2_cut = _cstr_at(data, URING_PATH_OFFSET + PATH_LEN, PATH_LEN)
        endpoint = None
        if addrlen:
            sockaddr = data[URING_SOCKADDR_OFFSET : URING_SOCKADDR_OFFSET + SOCKADDR_LEN]
            endpoint = decode_sockaddr(sockaddr, addrlen)
        abs_path = data[end : end + abs_len].decode("utf-8", "surrogateescape")
        return UringEvent(
            pid, tid, ts_ns, uid, gid, cgroup_id, comm,
            op=uring_op_name(opcode), opcode=opcode, res=res, user_data=user_data,
            complete_ns=complete_ns, fd=fd, dfd=dfd, path=path, dfd2=dfd2, path2=path2,
            op_flags=op_flags, mode=mode, cflags=cflags, endpoint=endpoint,
            abs_path=abs_path, abs_flags=abs_flags, path_cut=path_cut, path2_cut=path2_cut,
            unpaired=bool(flags & URING_UNPAIRED), sqpoll=bool(flags & URING_SQPOLL),
            fixed_file=bool(flags & URING_FIXED_FILE), direct=bool(flags & URING_DIRECT),
            no_layout=bool(flags & URING_NO_LAYOUT),
        )  # fmt: skip

    def _call(self, data: bytes, head: tuple[int, int, int, int, int, int, str]) -> CallEvent:
        """A th_call_event (rare: not on the hot path's shortcuts)."""
        nums = CALL_NUMS.unpack_from(data, HEADER.size)
        ret, op_nr, nr, flags, _pad = nums[:5]
        raw_args, ids, caps = nums[5:9], (nums[9:15], nums[15:21]), (nums[21:24], nums[24:27])
        op = CALL_OPS.get(op_nr) or f"op{op_nr}"
        start = HEADER.size + CALL_NUMS.size
        slots = (
            (start, PATH_LEN),
            (start + PATH_LEN, PATH_LEN),
            (start + 2 * PATH_LEN, CALL_SHORT_LEN),
        )
        text: dict[str, str] = {}
        cut: list[str] = []
        for name, slot in calls.string_names(op):
            text[name], was_cut = _cstr_at(data, *slots[slot])
            if was_cut:
                cut.append(name)
        after = op in CALL_CREDS_OPS
        return CallEvent(
            *head,
            op=op,
            syscall=self.syscall_names.get(nr) or f"syscall_{nr}",
            ret=ret,
            args=calls.decode_args(op, raw_args),
            text=text,
            text_cut=tuple(sorted(cut)),
            unreadable=calls.unreadable_names(op, flags),
            ids_before=calls.decode_ids(ids[0], flags),
            ids_after=calls.decode_ids(ids[1], flags) if after else None,
            caps_before=calls.decode_caps(caps[0], flags),
            caps_after=calls.decode_caps(caps[1], flags) if after else None,
        )

    def _exec(
        self, data: bytes, pid: int, ts_ns: int, tid: int, uid: int, gid: int,
        cgroup_id: int, comm: str,
    ) -> ExecEvent:  # fmt: skip
        """The variable-length exec record: the fixed part, then argv,
        filename, cwd and exe, their lengths in the fixed part."""
        (
            ret, flags, at, ppid, euid, egid, loginuid,
            filename_len, argv_len, cwd_len, exe_len, cwd_flags, exe_flags, _pad,
        ) = EXEC_BODY.unpack_from(data, HEADER.size)  # fmt: skip
        pos = self.exec_fixed
        end = pos + argv_len + filename_len + cwd_len + exe_len
        if end > len(data):
            raise WireError(f"exec record of {len(data)} bytes, its lengths need {end}")
        area = data[pos : pos + argv_len]
        pos += argv_len
        filename = _text(data, pos, pos + filename_len)
        pos += filename_len
        cwd = _text(data, pos, pos + cwd_len)
        pos += cwd_len
        exe = _text(data, pos, pos + exe_len)
        if flags & EXEC_ARGV_SLOTS:  # read entry by entry: one per slot
            step = self.arg_len
            area = b"".join(
                area[i : i + step].partition(b"\0")[0] + b"\0" for i in range(0, len(area), step)
            )
        argv, args_cut, more = split_argv(
            area, self.argv_max, self.arg_len, bool(flags & EXEC_ARGV_TRUNCATED)
        )
        resolved = not flags & EXEC_NO_LAYOUT
        unresolved = tuple(
            name
            for name, missing in (
                ("filename", flags & (EXEC_FILENAME_UNREADABLE | EXEC_NO_IMAGE)),
                ("argv", flags & (EXEC_ARGV_UNREADABLE | EXEC_NO_IMAGE)),
                ("ids", not resolved),
                ("cwd", not resolved or flags & (EXEC_FAILED_NO_PATHS | EXEC_NO_IMAGE)),
                ("exe", not resolved or flags & (EXEC_FAILED_NO_PATHS | EXEC_NO_IMAGE)),
            )
            if missing
        )
        return ExecEvent(
            pid, tid, ts_ns, uid, gid, cgroup_id, comm,
            ret=ret, filename=filename, argv=argv,
            argv_truncated=more or bool(args_cut)
            or bool(flags & (EXEC_ARG_TRUNCATED | EXEC_ARGV_UNREADABLE)),
            at=bool(at),
            filename_cut=bool(flags & EXEC_FILENAME_CUT),
            args_cut=args_cut,
            argv_more=more or bool(flags & EXEC_ARGV_UNREADABLE),
            ppid=ppid if resolved else None,
            euid=euid if resolved else None,
            egid=egid if resolved else None,
            loginuid=loginuid if resolved else None,
            cwd=cwd, cwd_flags=cwd_flags, exe=exe, exe_flags=exe_flags,
            fileless=bool(flags & EXEC_EXE_UNLINKED),
            exe_memfd=bool(flags & EXEC_EXE_MEMFD),
            unresolved=unresolved,
        )  # fmt: skip
