"""Raw file records (``struct th_file_event`` and its data), for tests that
feed the decoder and the fold table without the kernel.

Written here from bpf/tracehound.h, independently of wire.py's formats:
the fixed part (ret, op, nr, dfd, dfd2, flags, mode, owner, group, the four
lengths, the four flag words, the two sources: 80 bytes after the 56-byte
header), then path, path2, the absolute path and the rename target's, back
to back, only the bytes used.
"""

from __future__ import annotations

import struct

from agent.capture.kinds import FROM_NONE, PATH_OFF

_FIXED = struct.Struct("<q" + "I" * 2 + "i" * 2 + "I" * 14)
assert _FIXED.size == 80

UNCHANGED = 0xFFFFFFFF  # (u32)-1: owner/group not changed


def file_body(
    *,
    ret: int = 3,
    op: int = 1,
    nr: int = 257,
    dfd: int = -100,
    dfd2: int = -100,
    flags: int = 0,
    mode: int = 0,
    owner: int = UNCHANGED,
    group: int = UNCHANGED,
    path: bytes = b"",
    path2: bytes = b"",
    abs_path: bytes = b"",
    abs_path2: bytes = b"",
    path_flags: int = 0,
    path2_flags: int = 0,
    abs_flags: int = PATH_OFF,
    abs2_flags: int = 0,
    abs_from: int = FROM_NONE,
    abs2_from: int = FROM_NONE,
) -> bytes:
    """The record after its header, as the kernel sends it."""
    fixed = _FIXED.pack(
        ret, op, nr, dfd, dfd2, flags, mode, owner, group,
        len(path), len(path2), len(abs_path), len(abs_path2),
        path_flags, path2_flags, abs_flags, abs2_flags, abs_from, abs2_from,
    )  # fmt: skip
    return fixed + path + path2 + abs_path + abs_path2
