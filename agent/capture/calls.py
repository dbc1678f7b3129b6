"""What each security-relevant call's record means (kind ``call``). Pure.

``struct th_call_event`` (bpf/tracehound.h) carries the same fields for
every call: four raw 64-bit arguments, three string slots, the caller's
ids and capabilities. Which argument is the target pid and which string is
a mount's target depends on the call; this module says so once, by name,
and every reader (the decoder, the profile, the evidence, OCSF) takes the
names from here. A record's meaning never depends on a reader's guess.

Each call belongs to a *family* (``credentials``, ``ptrace``, ``mount``,
``module``, ``bpf``, ``namespace``, ``signal``, ``memfd``): one evidence
record type and one OCSF mapping per family.

What can go wrong: an op the table does not know (a newer kernel program
than this code, which cannot happen within one build) decodes with its raw
arguments under ``arg0``..``arg3`` and family ``other``, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from agent.capture.kinds import (
    CALL_CAPS_UNRESOLVED,
    CALL_IDS_UNRESOLVED,
    CALL_PEEK_UNREADABLE,
    CALL_STR_UNREADABLE,
)

__all__ = [
    "BPF_RECORDED_CMDS",
    "CALL_SPECS",
    "CAP_NAMES",
    "FAMILIES",
    "ID_NAMES",
    "CallSpec",
    "decode_args",
    "decode_caps",
    "decode_ids",
    "family_of",
    "string_names",
    "unreadable_names",
]

#: How a raw 64-bit argument becomes the number a record holds:
#: ``id``: a uid/gid as the kernel takes it (u32; 0xffffffff, "leave it
#: unchanged", becomes -1); ``s32``: an int (pids, fds, signals); ``u32``;
#: ``u64``; ``lo32``/``hi32s``: the low u32 / high s32 of an 8-byte value the
#: call's argument pointed to (bpf's attr, capset's header).
Conversion: TypeAlias = Literal["id", "s32", "u32", "u64", "lo32", "hi32s"]

#: The names of the ids (``ids_before``/``ids_after``), in wire order.
ID_NAMES: Final = ("uid", "euid", "suid", "gid", "egid", "sgid")
#: The names of the capability sets, in wire order.
CAP_NAMES: Final = ("effective", "permitted", "inheritable")
#: The string slots' field names on the wire.
_SLOTS: Final = 3
_U32: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class CallSpec:
    """``args``: (name, raw argument index, conversion) of each argument the
    record keeps; ``strings``: (name, string slot) of each string."""

    family: str
    args: tuple[tuple[str, int, Conversion], ...]
    strings: tuple[tuple[str, int], ...] = ()


def _ids(*names: str) -> tuple[tuple[str, int, Conversion], ...]:
    return tuple((name, i, "id") for i, name in enumerate(names))


_SIGNAL: Final = "signal"
CALL_SPECS: Final[dict[str, CallSpec]] = {
    "setuid": CallSpec("credentials", _ids("uid")),
    "setgid": CallSpec("credentials", _ids("gid")),
    "setreuid": CallSpec("credentials", _ids("ruid", "euid")),
    "setregid": CallSpec("credentials", _ids("rgid", "egid")),
    "setresuid": CallSpec("credentials", _ids("ruid", "euid", "suid")),
    "setresgid": CallSpec("credentials", _ids("rgid", "egid", "sgid")),
    "capset": CallSpec("credentials", (("version", 3, "lo32"), ("pid", 3, "hi32s"))),
    "ptrace": CallSpec(
        "ptrace", (("request", 0, "u64"), ("pid", 1, "s32"), ("addr", 2, "u64"), ("data", 3, "u64"))
    ),
    "mount": CallSpec(
        "mount", (("flags", 3, "u64"),), (("source", 0), ("target", 1), ("fstype", 2))
    ),
    "umount": CallSpec("mount", (("flags", 1, "u32"),), (("target", 1),)),
    "init_module": CallSpec("module", (("len", 1, "u64"),), (("params", 1),)),
    "finit_module": CallSpec("module", (("fd", 0, "s32"), ("flags", 2, "u32")), (("params", 1),)),
    "delete_module": CallSpec("module", (("flags", 1, "u32"),), (("name", 0),)),
    # attr_type: the attr's first u32 (BPF_PROG_LOAD: prog_type, BPF_MAP_CREATE: map_type).
    "bpf": CallSpec("bpf", (("cmd", 0, "u32"), ("size", 2, "u32"), ("attr_type", 3, "lo32"))),
    "unshare": CallSpec("namespace", (("flags", 0, "u64"),)),
    "setns": CallSpec("namespace", (("fd", 0, "s32"), ("nstype", 1, "u32"))),
    "kill": CallSpec(_SIGNAL, (("pid", 0, "s32"), ("sig", 1, "s32"))),
    "tkill": CallSpec(_SIGNAL, (("tid", 0, "s32"), ("sig", 1, "s32"))),
    "tgkill": CallSpec(_SIGNAL, (("tgid", 0, "s32"), ("tid", 1, "s32"), ("sig", 2, "s32"))),
    "rt_sigqueueinfo": CallSpec(_SIGNAL, (("tgid", 0, "s32"), ("sig", 1, "s32"))),
    "memfd_create": CallSpec("memfd", (("flags", 1, "u32"),), (("name", 0),)),
}

#: The bpf(2) commands the capture records (TH_CALL_BPF_CMDS; every command
#: from 64 on too): MAP_CREATE, PROG_LOAD, OBJ_PIN, OBJ_GET, PROG_ATTACH,
#: PROG_DETACH, RAW_TRACEPOINT_OPEN, BTF_LOAD, MAP_FREEZE, LINK_CREATE,
#: LINK_UPDATE, ENABLE_STATS, ITER_CREATE, LINK_DETACH, PROG_BIND_MAP,
#: TOKEN_CREATE. Map element operations, id walks, fds by id and info
#: queries are not: a tool listing the host's BPF objects (bpftool prog
#: show) makes hundreds a second, on objects whose making was seen.
BPF_RECORDED_CMDS: Final = frozenset({0, 5, 6, 7, 8, 9, 17, 18, 22, 28, 29, 32, 33, 34, 35, 36})

FAMILIES: Final[tuple[str, ...]] = tuple(sorted({s.family for s in CALL_SPECS.values()}))
"""Every family, each with an evidence record type (``other`` besides)."""

_RAW: Final = CallSpec("other", tuple((f"arg{i}", i, "u64") for i in range(4)))


def _spec(op: str) -> CallSpec:
    return CALL_SPECS.get(op, _RAW)


def family_of(op: str) -> str:
    return _spec(op).family


def _convert(raw: int, how: Conversion) -> int:
    if how == "u64":
        return raw
    value = raw >> 32 if how == "hi32s" else raw & _U32
    if how == "id":
        return -1 if value == _U32 else value
    if how in ("s32", "hi32s"):
        return value - (1 << 32) if value & 0x80000000 else value
    return value  # u32, lo32


def decode_args(op: str, raw: tuple[int, ...]) -> dict[str, int]:
    """The named arguments of a call from the record's four raw ones."""
    return {name: _convert(raw[index], how) for name, index, how in _spec(op).args}


def string_names(op: str) -> tuple[tuple[str, int], ...]:
    """(name, slot) of each string the call's record holds."""
    return _spec(op).strings


def decode_ids(values: tuple[int, ...], flags: int) -> dict[str, int] | None:
    """``{"uid": .., "euid": .., ...}``, None when the record says unresolved."""
    if flags & CALL_IDS_UNRESOLVED:
        return None
    return dict(zip(ID_NAMES, values, strict=True))


def decode_caps(values: tuple[int, ...], flags: int) -> dict[str, int] | None:
    """The capability sets as bit masks, None when unresolved."""
    if flags & CALL_CAPS_UNRESOLVED:
        return None
    return dict(zip(CAP_NAMES, values, strict=True))


def unreadable_names(op: str, flags: int) -> tuple[str, ...]:
    """The arguments and strings whose user memory could not be read."""
    names: list[str] = []
    spec = _spec(op)
    if flags & CALL_PEEK_UNREADABLE:
        names += [name for name, index, how in spec.args if how in ("lo32", "hi32s")]
    for name, slot in spec.strings:
        if slot < _SLOTS and flags & CALL_STR_UNREADABLE[slot]:
            names.append(name)
    return tuple(sorted(names))
