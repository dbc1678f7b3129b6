"""The drain's fold table (agent.capture.fold), on raw records built here.

Pure: no kernel. What must hold: the first event of a key is delivered at
once; repeats inside the window come out as one event whose count is
theirs; windows close by a later repeat, by the clock, by the process's
exec or exit, and at stop; a full table lets events pass unfolded; every
record is counted once; records that differ in anything but the time (and
the absolute path, which the kernel resolved) never fold.
"""

from __future__ import annotations

import struct
from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.events import FileEvent, KernelEvent, NetEvent, event_count
from agent.capture.fold import FoldTable
from agent.capture.kinds import FROM_FILE
from agent.capture.ledger import Ledger
from agent.capture.wire import FILE_BODY, HEADER, NET_BODY, WireDecoder
from tests.file_records import file_body

MS = 1_000_000
WINDOW = 100 * MS
FILE_SIZE = HEADER.size + FILE_BODY.size
NET_SIZE = HEADER.size + NET_BODY.size

#: Byte offsets of every field of a file record that is part of its identity.
IDENTITY = {
    "kind+pid": (4, "<I"),
    "tid": (16, "<I"),
    "uid": (20, "<I"),
    "gid": (24, "<I"),
    "cgroup_id": (32, "<Q"),
    "ret": (56, "<q"),
    "op": (64, "<I"),
    "nr": (68, "<I"),
    "dfd": (72, "<i"),
    "dfd2": (76, "<i"),
    "flags": (80, "<I"),
    "mode": (84, "<I"),
    "owner": (88, "<I"),
    "group": (92, "<I"),
}


def header(buf: bytearray, kind: int, *, pid: int = 42, ts: int = 0, tid: int = 0) -> None:
    struct.pack_into("<IIQIIIIQ", buf, 0, kind, pid, ts, tid or pid, 1000, 1000, 0, 7)
    buf[40:56] = b"flood\0".ljust(16, b"\0")


def file_record(
    path: bytes = b"/tmp/x",
    *,
    ts: int = 0,
    pid: int = 42,
    tid: int = 0,
    ret: int = 3,
    path2: bytes = b"",
    abs_path: bytes = b"",
) -> bytes:
    """An open of ``path`` (resolved to ``abs_path``, default the same)."""
    buf = bytearray(HEADER.size)
    header(buf, 4, pid=pid, ts=ts, tid=tid)
    body = file_body(
        ret=ret, flags=0o2, mode=0o644, path=path, path2=path2,
        abs_path=abs_path or path, abs_flags=0, abs_from=FROM_FILE,
    )  # fmt: skip
    return bytes(buf) + body


def net_record(*, ts: int = 0, pid: int = 42, port: int = 80) -> bytes:
    buf = bytearray(NET_SIZE)
    header(buf, 5, pid=pid, ts=ts)
    sockaddr = struct.pack("<H", 2) + struct.pack("!H", port) + bytes([127, 0, 0, 1])
    struct.pack_into("<qIiIIIHH", buf, 56, 0, 1, 5, 16, 0, 0, 0, 0)
    buf[88 : 88 + len(sockaddr)] = sockaddr
    return bytes(buf)


def exit_record(*, ts: int, pid: int = 42) -> bytes:
    buf = bytearray(HEADER.size + 16)
    header(buf, 3, pid=pid, ts=ts)
    struct.pack_into("<iiII", buf, 56, 0, 0, 1, 0)
    return bytes(buf)


class Folder:
    """A fold table with its own ledger, as the drain wires it."""

    def __init__(self, window: int = WINDOW, capacity: int = 4096) -> None:
        self.ledger = Ledger()
        self.table = FoldTable(
            WireDecoder().decode,
            window_ns=window,
            capacity=capacity,
            received=self.ledger.received,
            decode_errors=self.ledger.decode_errors,
            pending=self.ledger.folding,
        )

    def feed(self, *records: bytes) -> list[KernelEvent]:
        out: list[KernelEvent] = []
        self.table.feed(list(records), out)
        return out

    def expire(self, now: int) -> list[KernelEvent]:
        out: list[KernelEvent] = []
        self.table.expire(now, out)
        return out

    def flush(self) -> list[KernelEvent]:
        out: list[KernelEvent] = []
        self.table.flush(out)
        return out


def only_file(events: list[KernelEvent]) -> list[FileEvent]:
    assert all(isinstance(e, FileEvent) for e in events), events
    return [e for e in events if isinstance(e, FileEvent)]


def test_a_flood_is_its_first_event_then_one_event_with_the_repeats_count() -> None:
    f = Folder()
    out = f.feed(*(file_record(ts=1000 + i * MS // 10) for i in range(500)))
    [first] = only_file(out)
    assert (first.count, first.last_ts_ns, first.ts_ns) == (1, 0, 1000)
    assert f.ledger.received["file"] == 500
    assert f.ledger.folding["file"] == 499
    assert f.expire(1000 + WINDOW - 1) == []  # still open
    [folded] = only_file(f.expire(1000 + WINDOW))
    assert folded.count == 499
    assert folded.ts_ns == 1000 + MS // 10  # the first repeat
    assert folded.last_ts_ns == 1000 + 499 * MS // 10
    assert msgspec.structs.replace(folded, ts_ns=0, count=1, last_ts_ns=0) == (
        msgspec.structs.replace(first, ts_ns=0)
    )
    assert f.ledger.folding["file"] == 0
    assert first.count + folded.count == 500
    stats = f.table.stats()
    assert (stats.keys, stats.folded, stats.absorbed) == (0, {"file": 1}, {"file": 499})


def test_a_repeat_after_the_window_closes_it_and_opens_the_next() -> None:
    f = Folder()
    out = f.feed(
        file_record(ts=0), file_record(ts=10 * MS), file_record(ts=20 * MS),
        file_record(ts=150 * MS), file_record(ts=160 * MS),
    )  # fmt: skip
    got = [(e.ts_ns, e.count, e.last_ts_ns) for e in only_file(out)]
    # first; the closed window's two repeats; the next window's first.
    assert got == [(0, 1, 0), (10 * MS, 2, 20 * MS), (150 * MS, 1, 0)]
    # A single repeat is delivered as itself: count 1, as if never held.
    [single] = only_file(f.flush())
    assert (single.ts_ns, single.count, single.last_ts_ns) == (160 * MS, 1, 0)
    assert sum(event_count(e) for e in out) + 1 == f.ledger.received["file"] == 5


def test_a_lone_event_is_delivered_once_and_its_entry_closes_empty() -> None:
    f = Folder()
    assert len(f.feed(file_record(ts=5))) == 1
    assert f.expire(5 + WINDOW) == []
    assert len(f.table) == 0


def test_stop_flushes_every_window_and_nothing_stays_pending() -> None:
    f = Folder()
    records = [file_record(path=b"/p%d" % (i % 3), ts=i) for i in range(30)]
    out = f.feed(*records)
    assert len(out) == 3
    out += f.flush()
    assert len(f.table) == 0 and sum(f.ledger.folding.values()) == 0
    per_path = Counter[str]()
    for e in only_file(out):
        per_path[e.path] += e.count
    assert per_path == {"/p0": 10, "/p1": 10, "/p2": 10}


def test_a_full_table_lets_new_keys_pass_unfolded_and_counts_them() -> None:
    f = Folder(capacity=2)
    out = f.feed(*(file_record(path=b"/k%d" % (i % 3), ts=i) for i in range(9)))
    paths = [e.path for e in only_file(out)]
    # /k0 and /k1 hold the two slots; every /k2 passes as itself.
    assert paths == ["/k0", "/k1", "/k2", "/k2", "/k2"]
    assert f.table.stats().overflow == {"file": 3}
    assert sum(e.count for e in only_file(out + f.flush())) == 9


def test_an_exit_first_closes_its_process_windows() -> None:
    f = Folder()
    out = f.feed(
        file_record(ts=1), file_record(ts=2), file_record(ts=3),
        file_record(ts=4, pid=43), file_record(ts=5, pid=43),
        exit_record(ts=6),
    )  # fmt: skip
    kinds = [(type(e).__name__, e.pid, event_count(e)) for e in out]
    assert kinds == [
        ("FileEvent", 42, 1),
        ("FileEvent", 43, 1),
        ("FileEvent", 42, 2),  # before the exit of 42
        ("ExitEvent", 42, 1),
    ]
    assert f.ledger.folding["file"] == 1  # 43's repeat is still held
    assert f.ledger.received == {"file": 5, "exit": 1}


def test_network_events_fold_and_differ_by_endpoint() -> None:
    f = Folder()
    out = f.feed(*(net_record(ts=i, port=80 + i % 2) for i in range(10))) + f.flush()
    assert all(isinstance(e, NetEvent) for e in out)
    counts = Counter[int]()
    for e in out:
        assert isinstance(e, NetEvent) and e.endpoint is not None
        counts[e.endpoint.port] += e.count
    assert counts == {80: 5, 81: 5}
    assert len(out) == 4


def test_network_keys_end_at_the_address_length() -> None:
    """connect's sockaddr is read from user memory in a 112-byte window: the
    bytes past addrlen are the caller's stack, different every call, and
    must not keep repeats from folding. Bytes inside it still tell apart."""
    base = net_record(ts=1)
    stale = bytearray(net_record(ts=2))
    stale[88 + 16 : 88 + 40] = b"\xaa" * 24  # past the 16-byte sockaddr_in
    inside = bytearray(net_record(ts=3))
    inside[88 + 8] = 1  # sin_zero: inside addrlen, so part of the record
    f = Folder()
    out = f.feed(base, bytes(stale), bytes(inside)) + f.flush()
    nets = [e for e in out if isinstance(e, NetEvent)]
    assert sorted((e.ts_ns, e.count) for e in nets) == [(1, 1), (2, 1), (3, 1)]
    assert f.table.stats().folded == {}
    again = Folder()
    out = again.feed(base, bytes(stale), net_record(ts=4)) + again.flush()
    assert sorted((e.ts_ns, event_count(e)) for e in out) == [(1, 1), (2, 2)]


def test_other_kinds_never_fold() -> None:
    f = Folder()
    out = f.feed(*(exit_record(ts=i, pid=50 + i % 2) for i in range(6)))
    assert len(out) == 6 and len(f.table) == 0


def test_a_record_that_does_not_decode_is_counted_not_raised() -> None:
    f = Folder()
    assert f.feed(file_record()[:100], b"\x09\0\0\0" + bytes(60), b"\x01") == []
    assert f.ledger.decode_errors == {"file": 1, "unknown": 2}
    assert f.ledger.received == {"file": 1, "unknown": 2}


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_records_differing_in_any_identity_field_never_fold(name: str) -> None:
    offset, fmt = IDENTITY[name]
    base = file_record(ts=1)
    other = bytearray(file_record(ts=2))
    (value,) = struct.unpack_from(fmt, other, offset)
    # Another value of the field (owner and group are -1, all ones: wrap).
    struct.pack_into(fmt, other, offset, value - 1 if value else value + 1)
    f = Folder()
    out = only_file(f.feed(base, bytes(other), base))
    assert len(out) == 2 and out[0] != msgspec.structs.replace(out[1], ts_ns=1)
    assert f.ledger.folding["file"] == 1  # only the third, a true repeat of the first


@pytest.mark.parametrize(
    "other",
    [
        file_record(path=b"/tmp/y"),
        file_record(path=b"/tmp/x", path2=b"/b"),
        file_record(path=b"/tmp/xx"),
        file_record(path=b"/tmp/x" + b"a" * 300),
        file_record(path=b"/tmp/x", abs_path=b"/real/x"),  # same name, another file
    ],
)
def test_records_differing_in_a_path_never_fold(other: bytes) -> None:
    f = Folder()
    out = only_file(f.feed(file_record(), other))
    assert len(out) == 2
    assert (out[0].path, out[0].path2, out[0].abs_path) != (
        out[1].path,
        out[1].path2,
        out[1].abs_path,
    )


def test_comm_is_part_of_the_key() -> None:
    other = bytearray(file_record())
    other[40:56] = b"other\0".ljust(16, b"\0")
    f = Folder()
    assert len(f.feed(file_record(), bytes(other))) == 2


_RECORDS = st.builds(
    lambda path, pid, ret, abs_path, ts: file_record(
        path=path, pid=pid, ret=ret, abs_path=abs_path, ts=ts * MS
    ),
    st.sampled_from([b"/a", b"/b", b"/a/b", b""]),
    st.sampled_from([1, 2]),
    st.sampled_from([3, -2]),
    st.sampled_from([b"", b"/r", b"/r/a"]),
    st.integers(0, 400),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_RECORDS, st.booleans()), max_size=60),
    st.integers(1, 4),
    st.sampled_from([1, 50 * MS, WINDOW]),
)
def test_folding_delivers_exactly_what_was_fed_but_for_the_times(
    feed: list[tuple[bytes, bool]], capacity: int, window: int
) -> None:
    """Whatever the records, window, capacity and clock: per identity, the
    counts delivered add up to the records fed, and nothing else comes out."""
    f = Folder(window=window, capacity=capacity)
    decode = WireDecoder().decode
    want = Counter[FileEvent]()
    got = Counter[FileEvent]()
    for raw, tick in feed:
        event = decode(raw)
        assert isinstance(event, FileEvent)
        want[msgspec.structs.replace(event, ts_ns=0)] += 1
        out = f.feed(raw)
        if tick:
            out += f.expire(event.ts_ns)
        for e in only_file(out):
            assert (e.count == 1) == (e.last_ts_ns == 0)
            assert e.count == 1 or e.ts_ns <= e.last_ts_ns
            got[msgspec.structs.replace(e, ts_ns=0, count=1, last_ts_ns=0)] += e.count
        held = sum(f.ledger.folding.values())
        assert sum(want.values()) == sum(got.values()) + held
    for e in only_file(f.flush()):
        got[msgspec.structs.replace(e, ts_ns=0, count=1, last_ts_ns=0)] += e.count
    assert got == want
    assert f.ledger.received["file"] == len(feed)
    assert sum(f.ledger.folding.values()) == 0


def test_a_window_and_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expected > 0"):
        FoldTable(WireDecoder().decode, window_ns=0, capacity=1, received=Counter(),
                  decode_errors=Counter())  # fmt: skip
