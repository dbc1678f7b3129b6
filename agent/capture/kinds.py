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
    "PATH_FLAG_NAMES",
    "file_operation",
    "path_flag_names",
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
EXEC_ARGV_TRUNCATED: Final = 1  # more than TH_ARGV_MAX arguments
EXEC_ARG_TRUNCATED: Final = 2  # an argument longer than TH_ARG_LEN - 1
EXIT_HAVE_CODE: Final = 1  # exit_group()/exit() was seen: exit_code is valid
EXIT_HAVE_SIGNAL: Final = 2  # a fatal signal with the default action was delivered

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
