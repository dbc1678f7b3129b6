"""The program cache's format: what the kernel was given, keyed and checksummed.

Compiling tracehound's BPF programs with bcc (clang and LLVM) takes 1.4-1.8 s
here; loading what came out takes ~15 ms. So after a compile the compile
child (:mod:`agent.capture.compile_child`) records exactly what it handed the
kernel (:class:`CacheEntry`: each program's instructions, type and license,
each map's definition and BTF, where an instruction references a map, which
program serves which tracepoint, which program sits in which slot of a prog
array) and the next start replays it with plain bpf(2) calls
(:mod:`agent.capture.replay`), with no bcc and no child at all.

This module is the sans-I/O part: the key (:func:`cache_key`, a hash of
everything that determines the entry), and the file format
(:func:`encode_entry`, :func:`decode_entry`)::

    magic    8 bytes   b"THBPFC\\x00\\x01"
    key     32 bytes   the cache key the entry was made for
    length   8 bytes   little-endian length of the body
    digest  32 bytes   blake3 of the 48 bytes above and the body
    body               msgpack of a CacheEntry

A cache file is code the kernel will run as root. What can go wrong, all
raised as :class:`CacheFormatError` with one line saying what, and never
half-decoded: a short or truncated file, a wrong magic (not a cache file,
or another format version), an entry made for another key (foreign: another
build, kernel, bcc or configuration), a checksum mismatch (corrupt), a body
that does not decode, and an entry that is not self-consistent (a map
reference outside the instructions or not at an ``ld_imm64`` of a map fd,
an index out of range, a tracepoint name with a path in it). The checksum
finds accidents (a torn write, a flipped bit), not an attacker: whoever can
write the cache directory (root, mode 0700) could as well load programs.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

import blake3
import msgspec

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_FILE_BYTES",
    "AttachKind",
    "Attachment",
    "CacheEntry",
    "CacheFormatError",
    "CachedMap",
    "CachedProgram",
    "KeyInputs",
    "MapReference",
    "ProgSlot",
    "cache_key",
    "decode_entry",
    "encode_entry",
    "map_references",
]

FORMAT_VERSION: Final = 1
MAGIC: Final = b"THBPFC\x00" + bytes([FORMAT_VERSION])
KEY_BYTES: Final = 32
_PREFIX: Final = struct.Struct("<8s32sQ")  # magic, key, body length: what the digest covers
_DIGEST_BYTES: Final = 32
_HEAD_BYTES: Final = _PREFIX.size + _DIGEST_BYTES
#: The largest cache file read (today's entry is ~60 KiB): bounded memory.
MAX_FILE_BYTES: Final = 16 << 20

BPF_INSN_BYTES: Final = 8
BPF_LD_IMM64: Final = 0x18  # BPF_LD | BPF_DW | BPF_IMM: two instruction slots
BPF_PSEUDO_MAP_FD: Final = 1  # src_reg of an ld_imm64 whose imm is a map fd
BPF_MAP_TYPE_PROG_ARRAY: Final = 3
BPF_OBJ_NAME_LEN: Final = 16

#: ``tracepoint``: a perf event of PERF_TYPE_TRACEPOINT with the program
#: set on it (what bcc's attach_tracepoint does); ``raw_tracepoint``:
#: BPF_RAW_TRACEPOINT_OPEN.
AttachKind = Literal["tracepoint", "raw_tracepoint"]


class CacheFormatError(ValueError):
    """A cache file or entry that must not be used; the message is one line."""


class KeyInputs(msgspec.Struct, frozen=True):
    """Everything that determines a :class:`CacheEntry`; its hash is the key.

    ``code``: a digest of the agent's own sources that shape the entry (the
    compile child, the loader, the probe table, this format); ``text``: the
    whole translation unit bcc compiles; ``flags``: every compile flag;
    ``attach``: each planned (tracepoint, function, raw) in order; ``bcc``:
    bcc's version and its library's identity; ``kernel``: release, build
    and machine; ``btf``: a digest of the kernel's BTF.
    """

    tracehound: str
    code: str
    text: str
    flags: list[str]
    attach: list[tuple[str, str, bool]]
    bcc: str
    kernel: str
    btf: str
    format: int = FORMAT_VERSION


def cache_key(inputs: KeyInputs) -> bytes:
    """32 bytes: blake3 of the inputs' canonical (field-ordered) msgpack."""
    return blake3.blake3(msgspec.msgpack.encode(inputs)).digest()


class CachedMap(msgspec.Struct, frozen=True):
    """One map as the kernel describes it (``BPF_OBJ_GET_INFO_BY_FD``), under
    bcc's full table name (the kernel keeps only 15 characters of it).
    ``btf``: index in :attr:`CacheEntry.btfs` of the BTF its key and value
    types come from, -1 for none (task storage needs one)."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    btf: int = -1
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0
    btf_vmlinux_value_type_id: int = 0
    map_extra: int = 0


class MapReference(msgspec.Struct, frozen=True, array_like=True):
    """Instruction ``insn`` (an ``ld_imm64`` of a map fd) loads map ``map``
    (an index in :attr:`CacheEntry.maps`): its imm is patched with that
    map's new fd before loading."""

    insn: int
    map: int


class CachedProgram(msgspec.Struct, frozen=True):
    """One program as given to BPF_PROG_LOAD; ``insns`` with the compile
    run's map fds still in them (patched through ``maps``)."""

    name: str
    prog_type: int
    insns: bytes
    maps: list[MapReference] = []
    expected_attach_type: int = 0


class Attachment(msgspec.Struct, frozen=True):
    """Program ``program`` (an index) attached to ``tracepoint`` (``category:event``)."""

    program: int
    kind: AttachKind
    tracepoint: str


class ProgSlot(msgspec.Struct, frozen=True, array_like=True):
    """Slot ``slot`` of prog array ``array`` (a map index) holds ``program``."""

    array: int
    slot: int
    program: int


class CacheEntry(msgspec.Struct, frozen=True):
    """What one compile gave the kernel, and what the daemon needs besides
    (bcc's syscall table: the daemon has no bcc). Attachments in the order
    they were made (the order in which they are remade)."""

    license: str
    btfs: list[bytes]
    maps: list[CachedMap]
    programs: list[CachedProgram]
    attachments: list[Attachment]
    prog_slots: list[ProgSlot] = []
    syscall_names: dict[int, str] = {}


def map_references(insns: bytes) -> list[tuple[int, int]]:
    """(instruction index, fd) of every ``ld_imm64`` of a map fd in ``insns``.

    Raises CacheFormatError for what a replay could not reproduce: a
    truncated instruction stream, or an ``ld_imm64`` of another pseudo
    source (a map value, a BTF id, a function) whose meaning would need
    more than an fd patched in.
    """
    if len(insns) % BPF_INSN_BYTES:
        raise CacheFormatError(f"{len(insns)} bytes of instructions is not a whole number")
    found: list[tuple[int, int]] = []
    count = len(insns) // BPF_INSN_BYTES
    i = 0
    while i < count:
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * BPF_INSN_BYTES)
        if code == BPF_LD_IMM64:
            if i + 1 >= count:
                raise CacheFormatError(f"instruction {i}: ld_imm64 cut off at the end")
            src = regs >> 4
            if src == BPF_PSEUDO_MAP_FD:
                found.append((i, imm))
            elif src != 0:
                raise CacheFormatError(f"instruction {i}: ld_imm64 of pseudo source {src}")
            i += 2
        else:
            i += 1
    return found


def encode_entry(key: bytes, entry: CacheEntry) -> bytes:
    """The file's bytes for ``entry`` made under ``key``. Raises
    CacheFormatError for an entry :func:`decode_entry` would refuse."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a cache key is {KEY_BYTES} bytes, got {len(key)}")
    _check(entry)
    body = msgspec.msgpack.encode(entry)
    prefix = _PREFIX.pack(MAGIC, key, len(body))
    return prefix + _digest(prefix, body) + body


def _digest(prefix: bytes, body: bytes) -> bytes:
    hasher = blake3.blake3(prefix)
    hasher.update(body)
    return hasher.digest()


_DECODER: Final = msgspec.msgpack.Decoder(CacheEntry)


def decode_entry(data: bytes, key: bytes) -> CacheEntry:
    """The entry in a cache file's ``data``, made under ``key``; see the
    module for everything refused (CacheFormatError, one line)."""
    if len(data) < _HEAD_BYTES:
        raise CacheFormatError(f"truncated: {len(data)} bytes, shorter than the header")
    magic, stored_key, length = _PREFIX.unpack_from(data)
    digest = data[_PREFIX.size : _HEAD_BYTES]
    if magic != MAGIC:
        raise CacheFormatError("not a program cache file of this format version")
    if stored_key != key:
        raise CacheFormatError("made for another build, kernel or configuration (key differs)")
    body = data[_HEAD_BYTES:]
    if len(body) != length:
        raise CacheFormatError(f"truncated: body of {len(body)} bytes, header says {length}")
    if _digest(data[: _PREFIX.size], body) != digest:
        raise CacheFormatError("checksum mismatch: the file is corrupt")
    try:
        entry = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise CacheFormatError(f"body does not decode: {err}") from None
    _check(entry)
    return entry


def _check_name(what: str, name: str) -> None:
    if not name or not name.isascii() or not name.isprintable() or len(name) > 255:
        raise CacheFormatError(f"{what}: bad name {name[:40]!r}")


def _check_tracepoint(what: str, tracepoint: str) -> None:
    category, sep, event = tracepoint.partition(":")
    for part in (category, event):
        if not sep or not part or not part.replace("_", "a").isalnum() or not part.isascii():
            raise CacheFormatError(f"{what}: bad tracepoint {tracepoint[:60]!r}")


def _check(entry: CacheEntry) -> None:
    """Refuse an entry that is not self-consistent: every index in range,
    every map reference at an ld_imm64 of a map fd, names printable."""
    if not entry.license or not entry.license.isascii() or "\x00" in entry.license:
        raise CacheFormatError(f"bad license {entry.license[:40]!r}")
    if not entry.programs:
        raise CacheFormatError("no programs")
    names = set()
    for number, table in enumerate(entry.maps):
        _check_name(f"map {number}", table.name)
        if table.name in names:
            raise CacheFormatError(f"map {table.name}: listed twice")
        names.add(table.name)
        if not -1 <= table.btf < len(entry.btfs):
            raise CacheFormatError(f"map {table.name}: BTF {table.btf} out of range")
    prog_names = set()
    for prog in entry.programs:
        _check_name("program", prog.name)
        if prog.name in prog_names:
            raise CacheFormatError(f"program {prog.name}: listed twice")
        prog_names.add(prog.name)
        if not prog.insns:
            raise CacheFormatError(f"program {prog.name}: no instructions")
        try:
            at = dict(map_references(prog.insns))
        except CacheFormatError as err:
            raise CacheFormatError(f"program {prog.name}: {err}") from None
        patched = {ref.insn for ref in prog.maps}
        if patched != set(at) or len(patched) != len(prog.maps):
            raise CacheFormatError(
                f"program {prog.name}: map references do not match its ld_imm64 instructions"
            )
        for ref in prog.maps:
            if not 0 <= ref.map < len(entry.maps):
                raise CacheFormatError(f"program {prog.name}: map {ref.map} out of range")
    for attachment in entry.attachments:
        if not 0 <= attachment.program < len(entry.programs):
            raise CacheFormatError(f"attachment: program {attachment.program} out of range")
        _check_tracepoint("attachment", attachment.tracepoint)
    for slot in entry.prog_slots:
        if not 0 <= slot.array < len(entry.maps):
            raise CacheFormatError(f"prog array slot: map {slot.array} out of range")
        table = entry.maps[slot.array]
        if table.map_type != BPF_MAP_TYPE_PROG_ARRAY:
            raise CacheFormatError(f"prog array slot: map {table.name} is not a prog array")
        if not 0 <= slot.slot < table.max_entries:
            raise CacheFormatError(f"prog array {table.name}: slot {slot.slot} out of range")
        if not 0 <= slot.program < len(entry.programs):
            raise CacheFormatError(f"prog array {table.name}: program out of range")
