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

from agent.capture.abspath import absolute
from agent.capture.events import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    KernelEvent,
    NetEvent,
)

# Kinds, operations and flags: defined once, in agent.capture.kinds.
from agent.capture.kinds import (  # re-exported: defined once there
    EXEC_ARG_TRUNCATED,
    EXEC_ARGV_TRUNCATED,
    EXIT_HAVE_CODE,
    EXIT_HAVE_SIGNAL,
    FILE_OPS,
    FROM_FILE,
    KIND_EXEC,
    KIND_EXIT,
    KIND_FILE,
    KIND_FORK,
    KIND_NAMES,
    KIND_NET,
    NET_OPS,
    PASSED_CUT,
)
from agent.capture.sockaddr import decode_sockaddr

COMM_LEN = 16
PATH_LEN = 256
SOCKADDR_LEN = 112
DEFAULT_ARGV_MAX = 16
DEFAULT_ARG_LEN = 128

HEADER = struct.Struct("<IIQIIIIQ16s")  # struct th_header
EXEC_BODY = struct.Struct(f"<iIII{PATH_LEN}s")  # struct th_exec_event, up to argv
FORK_BODY = struct.Struct("<IIQ")  # struct th_fork_event
EXIT_BODY = struct.Struct("<iiII")  # struct th_exit_event
#: struct th_file_event's fixed part: ret, op, nr, dfd, dfd2, flags, mode,
#: owner, group, the four lengths, path_flags, path2_flags, abs_flags,
#: abs2_flags, abs_from, abs2_from. The data (path, path2, abs, abs2) follows.
FILE_BODY = struct.Struct("<qIIiiIIIIIIIIIIIIII")
#: Bytes of each path in a file record at most (TH_PATH_MAX).
FILE_PATH_MAX = 4096
NET_BODY = struct.Struct(f"<qIiII{SOCKADDR_LEN}s")  # struct th_net_event


class WireError(ValueError):
    """A record that does not match any layout: counted, never fatal."""


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
_U32_ALL = 0xFFFFFFFF


def _text(data: bytes, start: int, end: int) -> str:
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
        # sizeof(struct th_exec_event): padded to the 8-byte alignment of its header.
        self.exec_size = (HEADER.size + EXEC_BODY.size + argv_max * arg_len + 7) & ~7
        self.sizes = {
            KIND_EXEC: self.exec_size,
            KIND_FORK: HEADER.size + FORK_BODY.size,
            KIND_EXIT: HEADER.size + EXIT_BODY.size,
            KIND_FILE: HEADER.size + FILE_BODY.size,
            KIND_NET: HEADER.size + NET_BODY.size,
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
            if n1 > FILE_PATH_MAX or n2 > FILE_PATH_MAX or n3 > FILE_PATH_MAX or n4 > FILE_PATH_MAX:
                raise WireError(f"file record path lengths {n1}/{n2}/{n3}/{n4} exceed 4096")
            o1 = FILE_DATA_OFFSET + n1
            o2 = o1 + n2
            o3 = o2 + n3
            if len(data) < o3 + n4:
                raise WireError(f"file record of {len(data)} bytes, its paths need {o3 + n4}")
            path = _text(data, FILE_DATA_OFFSET, o1)
            if afrom == FROM_FILE:  # a successful open: nothing to join
                abs_path, abs_flags = _text(data, o2, o3), aflags
            else:
                abs_path, abs_flags = absolute(afrom, aflags, _text(data, o2, o3), path, pflags)
            if n2 or p2flags:  # a rename's target
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
            ret, argc, flags, at, _ = EXEC_BODY.unpack_from(data, off)
            filename, filename_cut = _cstr_at(data, off + EXEC_BODY.size - PATH_LEN, PATH_LEN)
            base = off + EXEC_BODY.size
            step = self.arg_len
            argc = min(argc, self.argv_max)
            entries = [_cstr_at(data, base + i * step, step) for i in range(argc)]
            return ExecEvent(
                pid, tid, ts_ns, uid, gid, cgroup_id, comm,
                ret=ret, filename=filename, argv=tuple(text for text, _ in entries),
                argv_truncated=bool(flags & (EXEC_ARGV_TRUNCATED | EXEC_ARG_TRUNCATED)),
                at=bool(at),
                filename_cut=filename_cut,
                args_cut=tuple(i for i, (_, cut) in enumerate(entries) if cut),
                argv_more=bool(flags & EXEC_ARGV_TRUNCATED),
            )  # fmt: skip
        if kind == KIND_NET:
            ret, op, fd, addrlen, backlog, sockaddr = NET_BODY.unpack_from(data, off)
            return NetEvent(
                pid, tid, ts_ns, uid, gid, cgroup_id, comm,
                op=NET_OPS.get(op, f"op{op}"), ret=ret, fd=fd,
                endpoint=decode_sockaddr(sockaddr, addrlen), backlog=backlog,
            )  # fmt: skip
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
