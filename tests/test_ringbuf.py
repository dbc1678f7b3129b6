"""walk_records against hand-built ring buffers: the kernel's protocol, no kernel."""

from __future__ import annotations

import struct

from agent.capture.ringbuf import BUSY_BIT, DISCARD_BIT, HEADER_SIZE, walk_records

SIZE = 64  # data area bytes (a power of two); mapped twice below


def put(area: bytearray, pos: int, payload: bytes, flags: int = 0) -> int:
    """Write one record at logical position ``pos``; return the next one."""
    offset = pos % SIZE
    struct.pack_into("<II", area, offset, len(payload) | flags, 0)
    for i, byte in enumerate(payload):
        area[(offset + HEADER_SIZE + i) % SIZE] = byte
    return pos + ((len(payload) + HEADER_SIZE + 7) & ~7)


def doubled(area: bytearray) -> bytes:
    """What the kernel maps: the data area twice, back to back."""
    return bytes(area) + bytes(area)


def test_reads_records_in_order_and_rounds_to_eight() -> None:
    area = bytearray(SIZE)
    end = put(area, 0, b"abc")
    end = put(area, end, b"defghijk")
    records, pos = walk_records(doubled(area), SIZE - 1, 0, end, limit=10)
    assert records == [b"abc", b"defghijk"]
    assert pos == end == 16 + 16


def test_stops_at_a_record_still_being_written() -> None:
    area = bytearray(SIZE)
    first = put(area, 0, b"done")
    end = put(area, first, b"busy", BUSY_BIT)
    records, pos = walk_records(doubled(area), SIZE - 1, 0, end, limit=10)
    assert records == [b"done"]
    assert pos == first  # resume at the busy one next pass


def test_skips_discarded_records() -> None:
    area = bytearray(SIZE)
    pos = put(area, 0, b"gone", DISCARD_BIT)
    end = put(area, pos, b"kept")
    records, got = walk_records(doubled(area), SIZE - 1, 0, end, limit=10)
    assert records == [b"kept"]
    assert got == end


def test_a_record_that_wraps_is_contiguous_in_the_double_mapping() -> None:
    area = bytearray(SIZE)
    start = 48  # header at 48..55, payload 56..71 wraps past 64
    end = put(area, start, b"0123456789abcdef")
    records, pos = walk_records(doubled(area), SIZE - 1, start, end, limit=10)
    assert records == [b"0123456789abcdef"]
    assert pos == end


def test_limit_bounds_a_pass() -> None:
    area = bytearray(SIZE)
    pos = 0
    for payload in (b"a", b"b", b"c"):
        pos = put(area, pos, payload)
    records, got = walk_records(doubled(area), SIZE - 1, 0, pos, limit=2)
    assert records == [b"a", b"b"]
    assert got == 32  # two 1-byte records, 8-byte header each, rounded to 16
    rest, end = walk_records(doubled(area), SIZE - 1, got, pos, limit=2)
    assert rest == [b"c"] and end == pos


def test_nothing_to_read() -> None:
    assert walk_records(bytes(2 * SIZE), SIZE - 1, 40, 40, limit=5) == ([], 40)
