"""The program cache's format and its files: round trip, and everything refused.

No kernel here: entries are built by hand (instructions as bytes), the key
from made-up inputs. What the kernel makes of a real entry is
tests/test_program_cache_kernel.py's.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import msgspec
import pytest

from agent.capture import cache_store, program_cache
from agent.capture.cache_store import CacheDir, CacheFileError
from agent.capture.program_cache import (
    Attachment,
    CachedMap,
    CachedProgram,
    CacheEntry,
    CacheFormatError,
    KeyInputs,
    MapReference,
    ProgSlot,
    cache_key,
    decode_entry,
    encode_entry,
    map_references,
)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def ld_map_fd(fd: int) -> bytes:
    """ld_imm64 r1, map fd: two slots, src_reg BPF_PSEUDO_MAP_FD."""
    return insn(0x18, dst=1, src=1, imm=fd) + insn(0)


EXIT = insn(0x95)
MOV_R0_0 = insn(0xB7)


def program(name: str = "th_prog", fds: tuple[int, ...] = (7,)) -> CachedProgram:
    body = b"".join(ld_map_fd(fd) for fd in fds) + MOV_R0_0 + EXIT
    return CachedProgram(
        name=name,
        prog_type=5,
        insns=body,
        maps=[MapReference(2 * i, i) for i in range(len(fds))],
    )


def entry(**changes: object) -> CacheEntry:
    base = CacheEntry(
        license="GPL",
        btfs=[b"\x9f\xeb\x01\x00btf"],
        maps=[
            CachedMap("th_enabled", 2, 4, 8, 1),
            CachedMap("th_pending", 29, 4, 40, 0, 1, 0, 1, 5),
            CachedMap("th_progs", 3, 4, 4, 512),
        ],
        programs=[program("th_a", (7, 8)), program("th_b", (9,))],
        attachments=[
            Attachment(0, "tracepoint", "syscalls:sys_enter_openat"),
            Attachment(1, "raw_tracepoint", "raw_syscalls:sys_enter"),
        ],
        prog_slots=[ProgSlot(2, 257, 0)],
        syscall_names={59: "execve", 257: "openat"},
    )
    return msgspec.structs.replace(base, **changes)


def inputs(**changes: object) -> KeyInputs:
    base = KeyInputs(
        tracehound="0.1.0",
        code="c0de",
        text="int x;",
        flags=["-DTH_BCC", "-DTH_SCOPED=0"],
        attach=[("syscalls:sys_enter_openat", "th_enter_openat", False)],
        bcc="0.26.0",
        kernel="6.18 #1 x86_64",
        btf="b7f",
    )
    return msgspec.structs.replace(base, **changes)


KEY = cache_key(inputs())


# -- the key ---------------------------------------------------------------


def test_key_is_stable_and_32_bytes() -> None:
    assert cache_key(inputs()) == KEY
    assert len(KEY) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"tracehound": "0.2.0"},
        {"code": "c0df"},
        {"text": "int y;"},
        {"flags": ["-DTH_BCC", "-DTH_SCOPED=1"]},
        {"flags": ["-DTH_SCOPED=0", "-DTH_BCC"]},
        {"attach": [("syscalls:sys_enter_openat", "th_enter_openat", True)]},
        {"bcc": "0.27.0"},
        {"kernel": "6.18 #2 x86_64"},
        {"btf": "b7e"},
    ],
)
def test_every_input_changes_the_key(change: dict[str, object]) -> None:
    assert cache_key(inputs(**change)) != KEY


def test_key_inputs_of_this_host_are_deterministic_and_see_the_text() -> None:
    attach = [("a:b", "f", False)]
    one = cache_store.key_inputs("text", ["-DX"], attach)
    assert one == cache_store.key_inputs("text", ["-DX"], attach)
    assert one.kernel.startswith(os.uname().release)
    assert cache_key(one) != cache_key(cache_store.key_inputs("text2", ["-DX"], attach))


# -- the format --------------------------------------------------------------


def test_round_trip() -> None:
    data = encode_entry(KEY, entry())
    assert data.startswith(program_cache.MAGIC)
    assert decode_entry(data, KEY) == entry()


def test_every_flipped_byte_is_refused() -> None:
    data = encode_entry(KEY, entry())
    refused = 0
    for i in range(0, len(data), 7):
        broken = bytearray(data)
        broken[i] ^= 0x40
        with pytest.raises(CacheFormatError):
            decode_entry(bytes(broken), KEY)
        refused += 1
    assert refused == len(range(0, len(data), 7))


def test_a_flipped_body_byte_is_a_checksum_mismatch() -> None:
    data = bytearray(encode_entry(KEY, entry()))
    data[-3] ^= 1
    with pytest.raises(CacheFormatError, match="checksum mismatch"):
        decode_entry(bytes(data), KEY)


@pytest.mark.parametrize("keep", [0, 10, 79, 80, 81, -1])
def test_truncated_files_are_refused(keep: int) -> None:
    data = encode_entry(KEY, entry())
    with pytest.raises(CacheFormatError, match="truncated"):
        decode_entry(data[:keep] if keep >= 0 else data[:-1], KEY)


def test_bytes_appended_are_refused() -> None:
    with pytest.raises(CacheFormatError, match="truncated"):
        decode_entry(encode_entry(KEY, entry()) + b"\0", KEY)


def test_an_entry_of_another_key_is_foreign() -> None:
    data = encode_entry(KEY, entry())
    with pytest.raises(CacheFormatError, match="key differs"):
        decode_entry(data, cache_key(inputs(kernel="other")))


def test_another_format_version_is_refused() -> None:
    data = bytearray(encode_entry(KEY, entry()))
    data[7] = program_cache.FORMAT_VERSION + 1
    with pytest.raises(CacheFormatError, match="format version"):
        decode_entry(bytes(data), KEY)


def test_a_checksummed_body_of_the_wrong_shape_is_refused() -> None:
    body = msgspec.msgpack.encode({"license": "GPL"})
    prefix = struct.pack("<8s32sQ", program_cache.MAGIC, KEY, len(body))
    import blake3

    data = prefix + blake3.blake3(prefix + body).digest() + body
    with pytest.raises(CacheFormatError, match="does not decode"):
        decode_entry(data, KEY)


def _refused(bad: CacheEntry, match: str) -> None:
    with pytest.raises(CacheFormatError, match=match):
        encode_entry(KEY, bad)


def test_inconsistent_entries_are_refused() -> None:
    good = entry()
    a, b = good.programs
    _refused(msgspec.structs.replace(good, programs=[]), "no programs")
    _refused(msgspec.structs.replace(good, license=""), "license")
    # A map reference that is not an ld_imm64 of a map fd, or one left out.
    moved = msgspec.structs.replace(a, maps=[MapReference(1, 0), MapReference(2, 1)])
    _refused(msgspec.structs.replace(good, programs=[moved, b]), "do not match")
    dropped = msgspec.structs.replace(a, maps=a.maps[:1])
    _refused(msgspec.structs.replace(good, programs=[dropped, b]), "do not match")
    outside = msgspec.structs.replace(b, maps=[MapReference(0, 3)])
    _refused(msgspec.structs.replace(good, programs=[a, outside]), "out of range")
    cut = msgspec.structs.replace(b, insns=b.insns[:-3])
    _refused(msgspec.structs.replace(good, programs=[a, cut]), "whole number")
    _refused(msgspec.structs.replace(good, programs=[a, a]), "listed twice")
    _refused(
        msgspec.structs.replace(good, attachments=[Attachment(2, "tracepoint", "a:b")]),
        "out of range",
    )
    for tracepoint in ("syscalls/../x:y", "nocolon", "a:", "a:b/c", "a:b c"):
        _refused(
            msgspec.structs.replace(good, attachments=[Attachment(0, "tracepoint", tracepoint)]),
            "bad tracepoint",
        )
    _refused(msgspec.structs.replace(good, prog_slots=[ProgSlot(0, 0, 0)]), "not a prog array")
    _refused(msgspec.structs.replace(good, prog_slots=[ProgSlot(2, 512, 0)]), "slot 512")
    maps = list(good.maps)
    maps[1] = msgspec.structs.replace(maps[1], btf=1)
    _refused(msgspec.structs.replace(good, maps=maps), "BTF 1 out of range")
    maps[1] = msgspec.structs.replace(maps[1], btf=0, name="th_enabled")
    _refused(msgspec.structs.replace(good, maps=maps), "listed twice")


def test_map_references_finds_map_fds_and_refuses_other_pseudo_sources() -> None:
    insns = MOV_R0_0 + ld_map_fd(11) + insn(0x18, dst=2, imm=5) + insn(0) + ld_map_fd(12) + EXIT
    assert map_references(insns) == [(1, 11), (5, 12)]
    map_value = insn(0x18, dst=1, src=2, imm=3) + insn(0)
    with pytest.raises(CacheFormatError, match="pseudo source 2"):
        map_references(map_value + EXIT)
    with pytest.raises(CacheFormatError, match="cut off"):
        map_references(EXIT + insn(0x18, src=1, imm=3))


# -- the files ---------------------------------------------------------------


def test_write_then_read_with_private_modes(tmp_path: Path) -> None:
    where = tmp_path / "var" / "cache"
    with CacheDir(where) as directory:
        assert directory.read(KEY) is None
        directory.write(KEY, entry())
        assert directory.read(KEY) == entry()
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(where.parent).st_mode) == 0o755
    files = os.listdir(where)
    assert files == [KEY.hex() + ".bpfcache"]
    assert stat.S_IMODE(os.stat(where / files[0]).st_mode) == 0o600


def test_a_corrupt_file_is_refused_naming_it(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        directory.write(KEY, entry())
        path = tmp_path / "c" / CacheDir.file_name(KEY)
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(CacheFileError) as err:
            directory.read(KEY)
    assert str(err.value) == f"{path}: checksum mismatch: the file is corrupt"


def test_a_symlinked_file_is_refused(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        directory.write(KEY, entry())
        real = tmp_path / "c" / CacheDir.file_name(KEY)
        os.rename(real, tmp_path / "elsewhere")
        os.symlink(tmp_path / "elsewhere", real)
        with pytest.raises(CacheFileError, match="is a symlink; refused"):
            directory.read(KEY)


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(CacheFileError, match="symlink"):
        CacheDir(tmp_path / "link")


def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        directory.write(KEY, entry())
        os.chmod(tmp_path / "c" / CacheDir.file_name(KEY), 0o622)
        with pytest.raises(CacheFileError, match="expected this user's and 0600"):
            directory.read(KEY)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        directory.write(KEY, entry())
        os.chown(tmp_path / "c" / CacheDir.file_name(KEY), 65534, 65534)
        with pytest.raises(CacheFileError, match="owned by uid 65534"):
            directory.read(KEY)


def test_a_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        (tmp_path / "c" / CacheDir.file_name(KEY)).mkdir()
        with pytest.raises(CacheFileError):
            directory.read(KEY)


def test_writing_replaces_a_bad_file(tmp_path: Path) -> None:
    with CacheDir(tmp_path / "c") as directory:
        (tmp_path / "c" / CacheDir.file_name(KEY)).write_bytes(b"garbage")
        with pytest.raises(CacheFileError, match="truncated"):
            directory.read(KEY)
        directory.write(KEY, entry())
        assert directory.read(KEY) == entry()


def test_pruning_keeps_the_most_recently_used(tmp_path: Path) -> None:
    keep = cache_store.KEEP_ENTRIES
    keys = [cache_key(inputs(text=f"t{i}")) for i in range(keep + 3)]
    with CacheDir(tmp_path / "c") as directory:
        for age, key in enumerate(keys[:keep]):
            directory.write(key, entry())
            # Older first, a second apart (mtime is what pruning goes by).
            when = 1_000_000 + age
            os.utime(tmp_path / "c" / CacheDir.file_name(key), (when, when))
        assert directory.read(keys[0]) == entry()  # used now: no longer the oldest
        stale = tmp_path / "c" / ".x.bpfcache.1.ab.tmp"
        stale.write_bytes(b"half")
        os.utime(stale, (1, 1))
        for key in keys[keep:]:
            directory.write(key, entry())
    left = set(os.listdir(tmp_path / "c"))
    kept = {keys[0], *keys[4:]}  # the one used again, and the newest keep - 1
    assert len(kept) == keep
    assert left == {CacheDir.file_name(k) for k in kept}


def test_cache_dir_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache_store.CACHE_DIR_ENV, raising=False)
    assert cache_store.cache_dir_setting() == Path("/var/lib/tracehound/cache")
    monkeypatch.setenv(cache_store.CACHE_DIR_ENV, "/tmp/x")
    assert cache_store.cache_dir_setting() == Path("/tmp/x")
    monkeypatch.setenv(cache_store.CACHE_DIR_ENV, "")
    assert cache_store.cache_dir_setting() is None
