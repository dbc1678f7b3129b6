"""The bpf(2) wrapper against real kernel maps (made here with BPF_MAP_CREATE)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.bpf_syscall import (
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BpfError,
    BpfMap,
    create_map,
    possible_cpus,
)

KEY = struct.Struct("<II")  # struct th_syscall_key {u32 pid; u32 nr;}
U64 = struct.Struct("<Q")


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("bpf(2) map creation needs root")


@pytest.fixture
def hash_map(root: None) -> Iterator[BpfMap]:
    m = create_map(BPF_MAP_TYPE_HASH, KEY.size, U64.size, 4096)
    yield m
    m.close()


def test_sizes_and_type_come_from_the_kernel(hash_map: BpfMap) -> None:
    again = BpfMap(os.dup(hash_map.fd))
    try:
        assert (again.map_type, again.key_size, again.value_size, again.max_entries) == (
            BPF_MAP_TYPE_HASH, 8, 8, 4096,
        )  # fmt: skip
        assert not again.per_cpu
    finally:
        again.close()


def test_hash_update_lookup_delete(hash_map: BpfMap) -> None:
    key = KEY.pack(1234, 59)
    assert hash_map.lookup(key) is None
    hash_map.update(key, U64.pack(7))
    value = hash_map.lookup(key)
    assert value is not None and U64.unpack(value)[0] == 7
    hash_map.update(key, U64.pack(2**64 - 1))
    assert hash_map.lookup(key) == U64.pack(2**64 - 1)
    assert hash_map.delete(key) is True
    assert hash_map.delete(key) is False
    assert hash_map.lookup(key) is None


def test_lookup_and_delete_returns_the_value_and_removes_it(hash_map: BpfMap) -> None:
    key = KEY.pack(99, 1)
    hash_map.update(key, U64.pack(41))
    assert hash_map.lookup_and_delete(key) == U64.pack(41)
    assert hash_map.lookup(key) is None
    assert hash_map.lookup_and_delete(key) is None


def test_iteration_and_batch_see_every_entry(hash_map: BpfMap) -> None:
    # More than one batch chunk (256), so the cursor is exercised.
    expected = {KEY.pack(pid, pid % 7): U64.pack(pid * 3) for pid in range(1, 1001)}
    for key, value in expected.items():
        hash_map.update(key, value)
    assert set(hash_map.keys()) == set(expected)
    assert dict(hash_map.items()) == expected
    batch = hash_map.lookup_batch()
    assert len(batch) == len(expected)
    assert dict(batch) == expected


def test_batch_of_an_empty_map_is_empty(hash_map: BpfMap) -> None:
    assert hash_map.lookup_batch() == []
    assert list(hash_map.keys()) == []


def test_per_cpu_array_has_a_slot_per_possible_cpu(root: None) -> None:
    m = create_map(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 3)
    try:
        cpus = possible_cpus()
        assert m.per_cpu and m.cpus == cpus
        key = struct.pack("<I", 2)
        assert m.lookup(key) == bytes(8 * cpus)  # arrays exist zeroed
        m.update(key, b"".join(U64.pack(10 + i) for i in range(cpus)))
        value = m.lookup(key)
        assert value is not None
        slots = [U64.unpack(s)[0] for s in m.per_cpu_values(value)]
        assert slots == [10 + i for i in range(cpus)]
        with pytest.raises(ValueError, match=f"expected {8 * cpus}"):
            m.update(key, U64.pack(1) * (cpus + 1))
    finally:
        m.close()


def test_array_value_of_u32_and_out_of_range_index(root: None) -> None:
    m = create_map(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    try:
        m.update(struct.pack("<I", 0), struct.pack("<I", 1))
        assert m.lookup(struct.pack("<I", 0)) == struct.pack("<I", 1)
        assert m.lookup(struct.pack("<I", 5)) is None
        with pytest.raises(BpfError) as err:
            m.update(struct.pack("<I", 5), struct.pack("<I", 1))
        assert "update in map" in str(err.value) and err.value.errno is not None
    finally:
        m.close()


def test_wrong_key_size_is_refused_before_the_kernel(hash_map: BpfMap) -> None:
    with pytest.raises(ValueError, match="key is 4 bytes, expected 8"):
        hash_map.lookup(b"\0" * 4)


def test_a_non_map_fd_is_refused(root: None, tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as f, pytest.raises(BpfError, match="map info of fd"):
        BpfMap(f.fileno())


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-1", 2), ("0-3,5-7", 8), ("0,2", 3)])
def test_possible_cpus_counts_to_the_highest_index(tmp_path: Path, text: str, count: int) -> None:
    path = tmp_path / "possible"
    path.write_text(text + "\n")
    assert possible_cpus(path) == count


def test_possible_cpus_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "possible"
    path.write_text("none")
    with pytest.raises(ValueError, match="expected CPU ranges"):
        possible_cpus(path)
