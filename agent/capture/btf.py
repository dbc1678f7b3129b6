"""Read the running kernel's BTF: the offsets and sizes of struct members.

Pure: :func:`parse` takes the bytes of ``/sys/kernel/btf/vmlinux`` and
returns a :class:`Btf` that answers "where is ``task_struct.real_parent``,
and how big is it?". The kernel's own description of itself is the only
source of struct layouts tracehound trusts: headers from another version
(Debian ships 6.1 headers for this 6.18 kernel) give silently wrong offsets.

The format (kernel Documentation/bpf/btf.rst): a header, a type section of
variable-length records (type ids count from 1 in order), and a string
section. Only structs and unions are indexed by name; every type is kept by
id so a member's type can be followed through typedefs and qualifiers to
its size. Members of anonymous structs and unions are searched too (much of
``task_struct`` and ``sock_common`` sits in them), their offsets added.

What can go wrong: the data is not BTF, is truncated, or a record's kind is
unknown (a newer kernel): :class:`BtfError`, and the caller turns
struct-based enrichment off rather than guess.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

VMLINUX: Final = Path("/sys/kernel/btf/vmlinux")

_MAGIC: Final = 0xEB9F
_HEADER: Final = struct.Struct("<HBBIIIII")
_TYPE: Final = struct.Struct("<III")
_MEMBER: Final = struct.Struct("<III")
_ARRAY: Final = struct.Struct("<III")

# Kinds (btf.h BTF_KIND_*).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

#: Bytes that follow a type record, per kind: a fixed size, or per member.
_FIXED_EXTRA: Final = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_MEMBER: Final = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_NO_EXTRA: Final = frozenset({PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG})
_QUALIFIERS: Final = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})


class BtfError(ValueError):
    """The data is not BTF this reader understands."""


@dataclass(frozen=True, slots=True)
class Member:
    """A struct member as found: ``offset`` in bytes from the start of the
    outermost struct asked about; ``size`` in bytes (0 for a flexible
    array); ``bits`` the bitfield width, 0 if not a bitfield."""

    name: str
    offset: int
    size: int
    type_id: int
    bits: int = 0


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kind_flag: bool
    extra: int  # offset of the kind-specific data in the type section


class Btf:
    """The parsed type section; look-ups are by struct name and member path."""

    def __init__(self, types: list[_Type | None], section: bytes, strings: bytes) -> None:
        self._types = types
        self._section = section
        self._strings = strings
        self._structs: dict[str, int] = {}
        for type_id, t in enumerate(types):
            if t is not None and t.kind in (STRUCT, UNION) and t.name:
                # A name can have a forward-declared twin with no members:
                # keep the first one with members.
                known = self._structs.get(t.name)
                previous = types[known] if known is not None else None
                if previous is None or previous.vlen == 0:
                    self._structs[t.name] = type_id

    def has_struct(self, name: str) -> bool:
        return name in self._structs

    def struct_size(self, name: str) -> int:
        """sizeof(struct name). KeyError when the kernel has no such struct."""
        t = self._types[self._structs[name]]
        assert t is not None
        return t.size_or_type

    def member(self, struct_name: str, path: str) -> Member | None:
        """``struct_name.path`` (``path`` may be dotted, through embedded
        structs: ``"f_path.dentry"``), or None when a part is absent."""
        type_id = self._structs.get(struct_name)
        if type_id is None:
            return None
        offset = 0
        found: Member | None = None
        for part in path.split("."):
            found = self._find(type_id, part)
            if found is None:
                return None
            offset += found.offset
            type_id = self._resolve(found.type_id)
        assert found is not None
        return Member(found.name, offset, found.size, found.type_id, found.bits)

    def _find(self, type_id: int, name: str) -> Member | None:
        t = self._types[type_id]
        if t is None or t.kind not in (STRUCT, UNION):
            return None
        for i in range(t.vlen):
            name_off, member_type, raw_offset = _MEMBER.unpack_from(self._section, t.extra + 12 * i)
            if t.kind_flag:
                bit_offset, bits = raw_offset & 0xFFFFFF, raw_offset >> 24
            else:
                bit_offset, bits = raw_offset, 0
            member_name = self._string(name_off)
            if member_name == name:
                size = 0 if bits else self.size_of(member_type)
                return Member(name, bit_offset // 8, size, member_type, bits)
            if not member_name:  # an anonymous struct or union: look inside
                inner = self._find(self._resolve(member_type), name)
                if inner is not None:
                    return Member(
                        inner.name,
                        bit_offset // 8 + inner.offset,
                        inner.size,
                        inner.type_id,
                        inner.bits,
                    )
        return None

    def _resolve(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the type they name."""
        for _ in range(64):
            t = self._types[type_id] if 0 < type_id < len(self._types) else None
            if t is None or t.kind not in _QUALIFIERS:
                return type_id
            type_id = t.size_or_type
        raise BtfError(f"type {type_id}: qualifier chain longer than 64")

    def size_of(self, type_id: int) -> int:
        """The size in bytes of a type (pointers are 8: x86_64)."""
        t = self._types[self._resolve(type_id)] if type_id else None
        if t is None:
            return 0
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            elem, _index, count = _ARRAY.unpack_from(self._section, t.extra)
            return int(count) * self.size_of(int(elem))
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return t.size_or_type
        return 0

    def _string(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        return self._strings[offset:end].decode("ascii", "replace")


def parse(data: bytes) -> Btf:
    """Parse a BTF blob. Raises :class:`BtfError` on anything unexpected."""
    if len(data) < _HEADER.size:
        raise BtfError(f"{len(data)} bytes is shorter than the BTF header")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(
        data
    )
    if magic != _MAGIC:
        raise BtfError(f"bad magic {magic:#x}, expected {_MAGIC:#x}")
    types_at, strings_at = hdr_len + type_off, hdr_len + str_off
    if types_at + type_len > len(data) or strings_at + str_len > len(data):
        raise BtfError("a section runs past the end of the data")
    section = data[types_at : types_at + type_len]
    strings = data[strings_at : strings_at + str_len]
    types: list[_Type | None] = [None]  # type id 0 is void
    at, end = 0, len(section)
    unpack = _TYPE.unpack_from
    while at < end:
        if at + 12 > end:
            raise BtfError(f"type record at byte {at} is truncated")
        name_off, info, size_or_type = unpack(section, at)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        extra = at + 12
        if kind in _NO_EXTRA:
            at = extra
        elif kind in _FIXED_EXTRA:
            at = extra + _FIXED_EXTRA[kind]
        elif kind in _PER_MEMBER:
            at = extra + _PER_MEMBER[kind] * vlen
        else:
            raise BtfError(f"type {len(types)}: unknown BTF kind {kind}")
        if kind in (STRUCT, UNION) and name_off:
            stop = strings.find(b"\0", name_off)
            name = strings[name_off:stop].decode("ascii", "replace")
        else:
            name = ""
        types.append(_Type(kind, name, size_or_type, vlen, bool(info >> 31), extra))
    if at != end:
        raise BtfError("the type section ends inside a record")
    return Btf(types, section, strings)


def load(path: Path = VMLINUX) -> Btf:
    """The running kernel's BTF. OSError if the kernel publishes none."""
    return parse(path.read_bytes())
