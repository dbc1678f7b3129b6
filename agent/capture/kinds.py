"""Record kinds, file and socket operations and flag bits, defined once.

The numbers are ``bpf/tracehound.h``'s (``TH_KIND_*``, ``TH_FILE_*``,
``TH_NET_*``, ``TH_EXEC_*``, ``TH_EXIT_*``, ``TH_AT_FDCWD``) and the
kernel ABI's (``O_*``, ``AT_REMOVEDIR``); ``tests/test_wire_layout.py``
compiles the header and ``<fcntl.h>`` with gcc and checks every value
here against them, so a change on either side that is not made on the
other fails there. The decoder (:mod:`agent.capture.wire`), the books
(:mod:`agent.capture.ledger`), the snapshot, the profile and the evidence
all take their names from here. Pure constants: no imports of the rest.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AT_FDCWD",
    "AT_REMOVEDIR",
    "AT_SYMLINK_NOFOLLOW",
    "CALL_CAPS_UNRESOLVED",
    "CALL_CREDS_OPS",
    "CALL_IDS_UNRESOLVED",
    "CALL_OPS",
    "CALL_PEEK_UNREADABLE",
    "CALL_STR_UNREADABLE",
    "EXEC_ARGV_TRUNCATED",
    "EXEC_ARG_TRUNCATED",
    "EXIT_HAVE_CODE",
    "EXIT_HAVE_SIGNAL",
    "FILE_OPERATIONS",
    "FILE_OPS",
    "FILE_SYMLINK",
    "KINDS",
    "KIND_CALL",
    "KIND_EXEC",
    "KIND_EXIT",
    "KIND_FILE",
    "KIND_FORK",
    "KIND_NAMES",
    "KIND_NET",
    "KIND_SYSCALL",
    "KIND_URING",
    "NETF_FAILED",
    "NETF_MORE",
    "NETF_PEER",
    "NETF_UNCHECKED",
    "NET_OPERATIONS",
    "NET_OPS",
    "NET_PROTOCOLS",
    "NR_KINDS",
    "O_ACCMODE",
    "O_APPEND",
    "O_CREAT",
    "O_DIRECTORY",
    "O_EXCL",
    "O_TRUNC",
    "PATH_FLAG_NAMES",
    "SEND_OPS",
    "TWO_PATH_OPS",
    "URING_DIRECT",
    "URING_FIXED_FILE",
    "URING_NO_LAYOUT",
    "URING_OPS",
    "URING_SQPOLL",
    "URING_UNPAIRED",
    "connect_outcome",
    "file_operation",
    "path_flag_names",
    "uring_op_name",
]

# Kinds, as numbered by TH_KIND_* in tracehound.h.
KIND_EXEC: Final = 1
KIND_FORK: Final = 2
KIND_EXIT: Final = 3
KIND_FILE: Final = 4
KIND_NET: Final = 5
KIND_SYSCALL: Final = 6  # no ring-buffer record: counted in a kernel map
KIND_CALL: Final = 7  # security-relevant calls that are not file operations
KIND_URING: Final = 8
NR_KINDS: Final = 9
KIND_NAMES: Final[dict[int, str]] = {
    KIND_EXEC: "exec",
    KIND_FORK: "fork",
    KIND_EXIT: "exit",
    KIND_FILE: "file",
    KIND_NET: "net",
    KIND_SYSCALL: "syscall",
    KIND_CALL: "call",
    KIND_URING: "uring",
}

KINDS: Final[tuple[str, ...]] = tuple(KIND_NAMES[n] for n in sorted(KIND_NAMES))
"""Every kind the loss ledger keeps books for, in the kernel's numbering order."""

# File and socket operations, as numbered by TH_FILE_* and TH_NET_*.
FILE_SYMLINK: Final = 7  # TH_FILE_SYMLINK: its path is the link's text, never resolved
FILE_OPS: Final[dict[int, str]] = {
    1: "open",
    2: "unlink",
    3: "rename",
    4: "chmod",
    5: "mkdir",
    6: "link",
    7: "symlink",
    8: "truncate",
    9: "chown",
}
NET_OPS: Final[dict[int, str]] = {
    1: "connect",
    2: "accept",
    3: "bind",
    4: "listen",
    5: "sendto",
    6: "sendmsg",
    7: "sendmmsg",
    8: "connect_result",
}
SEND_OPS: Final = frozenset({"sendto", "sendmsg", "sendmmsg"})
"""The operations that name a datagram's destination (UDP sockets only)."""

FILE_OPERATIONS: Final[tuple[str, ...]] = (
    *("open", "unlink", "rmdir", "rename", "chmod", "mkdir"),
    *("link", "symlink", "truncate", "chown"),
)
"""The file operations records name: the kernel's, and ``rmdir`` (an unlink
of a directory, see :func:`file_operation`). Each has an evidence type of
its own (``file.rmdir.v1``); anything else is ``file.other.v1``."""

TWO_PATH_OPS: Final = frozenset({"rename", "link", "symlink"})
"""The file operations whose record names a second path (``path2``): the new name."""

NET_OPERATIONS: Final[tuple[str, ...]] = tuple(NET_OPS[n] for n in sorted(NET_OPS))
"""The socket operations records name; anything else is ``network.other.v1``."""

# th_net_event.flags (TH_NETF_*).
NETF_PEER: Final = 1  # no address passed: the destination is the connected socket's peer
NETF_UNCHECKED: Final = 2  # enrichment off: not checked to be UDP, or the error not read
NETF_MORE: Final = 4  # sendmmsg sent more messages than were looked at
NETF_FAILED: Final = 8  # connect_result: the connection was not established
#: th_net_event.proto: the socket's IPPROTO_* (0: not known).
NET_PROTOCOLS: Final[dict[int, str]] = {6: "tcp", 17: "udp", 136: "udplite"}

_ECONNREFUSED: Final = 111  # Linux's, as sk_err carries it


def connect_outcome(ret: int, failed: bool) -> str:
    """What a ``connect_result`` record says: ``established``, ``refused``
    (the peer answered with a reset: ECONNREFUSED) or ``failed`` (any other
    error, a timeout, the socket closed first, or the error not known)."""
    if not failed:
        return "established"
    return "refused" if ret == -_ECONNREFUSED else "failed"


# Security-relevant calls, as numbered by TH_CALL_* (th_call_event.op): the
# names are the syscalls' (umount2's is "umount").
CALL_OPS: Final[dict[int, str]] = {
    1: "setuid",
    2: "setgid",
    3: "setreuid",
    4: "setregid",
    5: "setresuid",
    6: "setresgid",
    7: "capset",
    8: "ptrace",
    9: "mount",
    10: "umount",
    11: "init_module",
    12: "finit_module",
    13: "delete_module",
    14: "bpf",
    15: "unshare",
    16: "setns",
    17: "kill",
    18: "tkill",
    19: "tgkill",
    20: "rt_sigqueueinfo",
    21: "memfd_create",
}
CALL_CREDS_OPS: Final = frozenset(CALL_OPS[n] for n in range(1, 8))
"""The calls that change credentials: their records carry the ids after."""
# th_call_event.flags (TH_CALL_*_UNRESOLVED, _UNREADABLE).
CALL_IDS_UNRESOLVED: Final = 1
CALL_CAPS_UNRESOLVED: Final = 2
CALL_PEEK_UNREADABLE: Final = 4
CALL_STR_UNREADABLE: Final = (8, 16, 32)  # str0, str1, str2

# Flags of the records (TH_EXEC_*, TH_EXIT_*).
EXEC_ARGV_TRUNCATED: Final = 1  # more argv than captured (entries or bytes)
EXEC_ARG_TRUNCATED: Final = 2  # an argument read at entry filled TH_ARG_LEN - 1 bytes
EXEC_FILENAME_CUT: Final = 4  # the filename was longer than TH_PATH_MAX - 1
EXEC_FILENAME_UNREADABLE: Final = 8  # the filename could not be read
EXEC_ARGV_UNREADABLE: Final = 16  # (part of) argv could not be read
EXEC_ARGV_AT_ENTRY: Final = 32  # argv read at syscall entry (enrichment off)
EXEC_NO_LAYOUT: Final = 64  # enrichment off: ppid, ids, loginuid, cwd, exe unresolved
EXEC_NO_IMAGE: Final = 128  # succeeded, but the image probe did not run
EXEC_FAILED_NO_PATHS: Final = 256  # a failed exec: cwd and exe not resolved
EXEC_EXE_UNLINKED: Final = 512  # the executable has no link left (memfd, O_TMPFILE, deleted)
EXEC_EXE_MEMFD: Final = 1024  # the executable is a memfd
EXEC_ARGV_SLOTS: Final = 2048  # argv area in TH_ARG_LEN slots (read from pointers)
EXIT_HAVE_CODE: Final = 1  # exit_group()/exit() was seen: exit_code is valid
EXIT_HAVE_SIGNAL: Final = 2  # a fatal signal with the default action was delivered

# io_uring (TH_URING_*: th_uring_event.flags).
URING_UNPAIRED: Final = 1  # no submission seen: only the completion's facts
URING_SQPOLL: Final = 2  # submitted by the ring's SQPOLL thread
URING_FIXED_FILE: Final = 4  # fd is an index into the ring's registered files
URING_DIRECT: Final = 8  # opened/accepted into a registered-file slot
URING_NO_LAYOUT: Final = 16  # enrichment off: nothing read from the request

#: io_uring opcode names, numbered as ``enum io_uring_op`` in
#: include/uapi/linux/io_uring.h (a test checks them against liburing's
#: copy); newer ones are named ``op<N>`` (:func:`uring_op_name`).
URING_OPS: Final[dict[int, str]] = dict(
    enumerate(
        (
            *("nop", "readv", "writev", "fsync", "read_fixed", "write_fixed"),
            *("poll_add", "poll_remove", "sync_file_range", "sendmsg", "recvmsg"),
            *("timeout", "timeout_remove", "accept", "async_cancel", "link_timeout"),
            *("connect", "fallocate", "openat", "close", "files_update", "statx"),
            *("read", "write", "fadvise", "madvise", "send", "recv", "openat2"),
            *("epoll_ctl", "splice", "provide_buffers", "remove_buffers", "tee"),
            *("shutdown", "renameat", "unlinkat", "mkdirat", "symlinkat", "linkat"),
            *("msg_ring", "fsetxattr", "setxattr", "fgetxattr", "getxattr", "socket"),
            *("uring_cmd", "send_zc", "sendmsg_zc"),
        )
    )
)


def uring_op_name(opcode: int) -> str:
    """``openat`` for 18; ``op<N>`` for an opcode this table predates;
    ``unknown`` when the record could not say (0xffffffff: an unpaired
    completion without the kernel layout)."""
    if opcode == 0xFFFFFFFF:
        return "unknown"
    return URING_OPS.get(opcode) or f"op{opcode}"


# How a file record's absolute path was found (TH_PATH_*, th_file_event's
# abs_flags; 0: whole, absolute, read from the kernel). The kernel's bits:
PATH_CUT: Final = 1  # longer than 4096 bytes or 48 components: the leading part is missing
PATH_UNREADABLE: Final = 2  # a kernel read failed mid-walk: the rest is unknown
PATH_UNREACHABLE: Final = 4  # not below the process's root (another mount namespace, pseudo fs)
PATH_NO_LAYOUT: Final = 8  # enrichment is off (no BTF, or the self-check failed): not resolved
PATH_NO_BASE: Final = 16  # the base (cwd or the dirfd's file) could not be found
PATH_OFF: Final = 32  # resolution is turned off ([capture] resolve_paths = false)
# User space's bits (64 and up), set when it joins a name to its base:
PATH_JOINED: Final = 64  # the base directory joined with the name, not read from a file
PATH_LEXICAL: Final = 128  # a ".." after a name component was kept: not resolved through it
PATH_NAME_CUT: Final = 256  # the name as passed may have been cut: so is the join
PATH_NO_NAME: Final = 512  # the name could not be read from the process: nothing to join
PATH_FLAG_NAMES: Final[dict[int, str]] = {
    PATH_CUT: "cut",
    PATH_UNREADABLE: "unreadable",
    PATH_UNREACHABLE: "unreachable",
    PATH_NO_LAYOUT: "no_layout",
    PATH_NO_BASE: "no_base",
    PATH_OFF: "off",
    PATH_JOINED: "joined",
    PATH_LEXICAL: "lexical",
    PATH_NAME_CUT: "name_cut",
    PATH_NO_NAME: "no_name",
}
# How a path as passed was read from user memory (TH_PASSED_*).
PASSED_CUT: Final = 1  # filled the 4096-byte buffer: may be cut (or exactly 4095 bytes)
PASSED_UNREADABLE: Final = 2  # the pointer could not be read: no path
# What a record's absolute-path bytes are (TH_FROM_*).
FROM_NONE: Final = 0  # nothing resolved: the flags say why
FROM_FILE: Final = 1  # the file's own path (the fd an open installed, an fd-only op's fd)
FROM_BASE: Final = 2  # the base directory: user space joins the name
FROM_NAME: Final = 3  # the name was absolute: no base was walked


def path_flag_names(flags: int) -> tuple[str, ...]:
    """The names of the bits set in ``flags``, lowest first; an unknown bit
    as ``bit<n>`` (never dropped)."""
    names = []
    bit = 1
    while bit <= flags:
        if flags & bit:
            names.append(PATH_FLAG_NAMES.get(bit) or f"bit{bit.bit_length() - 1}")
        bit <<= 1
    return tuple(names)


LOGINUID_UNSET: Final = 4294967295
"""task->loginuid of a process no login session set (audit's -1)."""


# The kernel ABI's open(2) and *at(2) values, as the records carry them.
AT_FDCWD: Final = -100
AT_REMOVEDIR: Final = 0x200
AT_SYMLINK_NOFOLLOW: Final = 0x100
O_ACCMODE: Final = 0o3
O_CREAT: Final = 0o100
O_EXCL: Final = 0o200
O_TRUNC: Final = 0o1000
O_APPEND: Final = 0o2000
O_DIRECTORY: Final = 0o200000


def file_operation(op: str, flags: int) -> str:
    """The operation a file record names: ``rmdir`` for an unlink that
    removes a directory (``rmdir(2)``, or ``unlinkat(2)`` with
    ``AT_REMOVEDIR``: the probes pass that flag for both), else ``op``."""
    return "rmdir" if op == "unlink" and flags & AT_REMOVEDIR else op
