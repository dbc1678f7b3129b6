"""Read a BPF ring buffer from user space without a per-record C callback.

bcc delivers each record through a ctypes callback, ~1.3 us apiece here.
This module maps the ring buffer itself and walks its records, as libbpf's
``ringbuf_process_ring`` does, at a fraction of that:

  - ``walk_records`` is pure: given the data area, the positions and a
    limit, it returns the records and the new consumer position. Tests drive
    it with plain bytearrays.
  - ``MappedRing`` owns the two mappings of the map fd: the consumer page
    (read-write: we publish our position there) and the producer page plus
    the data area (read-only, mapped twice back to back by the kernel, so a
    record that wraps around is contiguous).

What can go wrong: a record still being written has the BUSY bit set, and
the walk stops there until the next pass; a discarded record is skipped.
Loads from the mapping are plain loads: on x86-64 (TSO) seeing the producer
position implies seeing the record, as libbpf's acquire load ensures
elsewhere. The map fd itself polls readable when data is waiting.
"""

from __future__ import annotations

import mmap
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8  # struct bpf_ringbuf_hdr: u32 len, u32 pg_off
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def walk_records(
    data: bytes | bytearray | memoryview | mmap.mmap,
    mask: int,
    consumer_pos: int,
    producer_pos: int,
    limit: int,
) -> tuple[list[bytes], int]:
    """Records between the positions, at most ``limit``, and where to resume.

    ``data`` is the data area mapped twice (2 * (mask + 1) bytes), so a
    record never needs to be stitched. Pure.
    """
    records: list[bytes] = []
    pos = consumer_pos
    unpack_len = _U32.unpack_from
    while pos < producer_pos and len(records) < limit:
        offset = pos & mask
        (length,) = unpack_len(data, offset)
        if length & BUSY_BIT:
            break
        size = length & ~(BUSY_BIT | DISCARD_BIT)
        if not length & DISCARD_BIT:
            start = offset + HEADER_SIZE
            records.append(bytes(data[start : start + size]))
        pos += (size + HEADER_SIZE + 7) & ~7
    return records, pos


class MappedRing:
    """The kernel ring buffer of BPF map ``map_fd`` of ``data_size`` bytes."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {data_size}")
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.mask = data_size - 1
        self._consumer = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer = mmap.mmap(
            map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._data = memoryview(self._producer)[page:]
        self._pos: int = int(_U64.unpack_from(self._consumer, 0)[0])

    @property
    def capacity(self) -> int:
        return self.mask + 1

    def backlog(self) -> int:
        """Bytes written by the kernel and not yet read: the ring's depth."""
        return max(0, self._producer_pos() - int(self._pos))

    def pending(self) -> bool:
        return bool(self._producer_pos() > self._pos)

    def _producer_pos(self) -> int:
        return int(_U64.unpack_from(self._producer, 0)[0])

    def read(self, limit: int) -> list[bytes]:
        """Up to ``limit`` committed records, oldest first; their space is
        handed back to the kernel before this returns."""
        records, pos = walk_records(self._data, self.mask, self._pos, self._producer_pos(), limit)
        if pos != self._pos:
            self._pos = pos
            _U64.pack_into(self._consumer, 0, pos)
        return records

    def close(self) -> None:
        self._data.release()
        self._producer.close()
        self._consumer.close()
