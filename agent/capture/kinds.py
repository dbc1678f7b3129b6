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
    "EXEC_ARGV_TRUNCATED",
    "EXEC_ARG_TRUNCATED",
    "EXIT_HAVE_CODE",
    "EXIT_HAVE_SIGNAL",
    "FILE_OPERATIONS",
    "FILE_OPS",
    "KINDS",
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
    "file_operation",
]

# Kinds, as numbered by TH_KIND_* in tracehound.h.
KIND_EXEC: Final = 1
KIND_FORK: Final = 2
KIND_EXIT: Final = 3
KIND_FILE: Final = 4
KIND_NET: Final = 5
KIND_SYSCALL: Final = 6  # no ring-buffer record: counted in a kernel map
NR_KINDS: Final = 7
KIND_NAMES: Final[dict[int, str]] = {
    KIND_EXEC: "exec",
    KIND_FORK: "fork",
    KIND_EXIT: "exit",
    KIND_FILE: "file",
    KIND_NET: "net",
    KIND_SYSCALL: "syscall",
}

KINDS: Final[tuple[str, ...]] = tuple(KIND_NAMES[n] for n in sorted(KIND_NAMES))
"""Every kind the loss ledger keeps books for, in the kernel's numbering order."""

# File and socket operations, as numbered by TH_FILE_* and TH_NET_*.
FILE_OPS: Final[dict[int, str]] = {1: "open", 2: "unlink", 3: "rename", 4: "chmod", 5: "mkdir"}
NET_OPS: Final[dict[int, str]] = {1: "connect", 2: "accept", 3: "bind", 4: "listen"}

FILE_OPERATIONS: Final[tuple[str, ...]] = ("open", "unlink", "rmdir", "rename", "chmod", "mkdir")
"""The file operations records name: the kernel's, and ``rmdir`` (an unlink
of a directory, see :func:`file_operation`). Each has an evidence type of
its own (``file.rmdir.v1``); anything else is ``file.other.v1``."""

NET_OPERATIONS: Final[tuple[str, ...]] = tuple(NET_OPS[n] for n in sorted(NET_OPS))
"""The socket operations records name; anything else is ``network.other.v1``."""

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

# How a kernel path walk ended (TH_PATH_*); 0: whole and absolute.
PATH_FLAG_NAMES: Final[dict[int, str]] = {
    1: "cut",
    2: "unreadable",
    4: "unreachable",
    8: "no_layout",
    16: "no_base",
}

LOGINUID_UNSET: Final = 4294967295
"""task->loginuid of a process no login session set (audit's -1)."""


def path_flag_names(flags: int) -> tuple[str, ...]:
    """The names of a path's TH_PATH_* flags, lowest bit first; unknown
    bits as ``bit<n>`` (never dropped)."""
    return tuple(
        PATH_FLAG_NAMES.get(1 << bit, f"bit{bit}") for bit in range(32) if flags & (1 << bit)
    )


# The kernel ABI's open(2) and *at(2) values, as the records carry them.
AT_FDCWD: Final = -100
AT_REMOVEDIR: Final = 0x200
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
