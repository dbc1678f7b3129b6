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
    "KINDS",
    "KIND_CALL",
    "KIND_EXEC",
    "KIND_EXIT",
    "KIND_FILE",
    "KIND_FORK",
    "KIND_NAMES",
    "KIND_NET",
    "KIND_SYSCALL",
    "NET_OPERATIONS",
    "NET_OPS",
    "NR_KINDS",
    "O_ACCMODE",
    "O_APPEND",
    "O_CREAT",
    "O_DIRECTORY",
    "O_EXCL",
    "O_TRUNC",
    "TWO_PATH_OPS",
    "file_operation",
]

# Kinds, as numbered by TH_KIND_* in tracehound.h.
KIND_EXEC: Final = 1
KIND_FORK: Final = 2
KIND_EXIT: Final = 3
KIND_FILE: Final = 4
KIND_NET: Final = 5
KIND_SYSCALL: Final = 6  # no ring-buffer record: counted in a kernel map
KIND_CALL: Final = 7  # security-relevant calls that are not file operations
NR_KINDS: Final = 8
KIND_NAMES: Final[dict[int, str]] = {
    KIND_EXEC: "exec",
    KIND_FORK: "fork",
    KIND_EXIT: "exit",
    KIND_FILE: "file",
    KIND_NET: "net",
    KIND_SYSCALL: "syscall",
    KIND_CALL: "call",
}

KINDS: Final[tuple[str, ...]] = tuple(KIND_NAMES[n] for n in sorted(KIND_NAMES))
"""Every kind the loss ledger keeps books for, in the kernel's numbering order."""

# File and socket operations, as numbered by TH_FILE_* and TH_NET_*.
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
NET_OPS: Final[dict[int, str]] = {1: "connect", 2: "accept", 3: "bind", 4: "listen"}

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
EXEC_ARGV_TRUNCATED: Final = 1  # more than TH_ARGV_MAX arguments
EXEC_ARG_TRUNCATED: Final = 2  # an argument longer than TH_ARG_LEN - 1
EXIT_HAVE_CODE: Final = 1  # exit_group()/exit() was seen: exit_code is valid
EXIT_HAVE_SIGNAL: Final = 2  # a fatal signal with the default action was delivered

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
