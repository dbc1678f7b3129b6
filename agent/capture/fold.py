"""Fold floods at the drain: identical events in a short window become one.

Sans-I/O (no trio, no clock of its own): the drain feeds it raw ring-buffer
records and the time, and delivers what it appends to the batch.

Which events fold: file and network records that are identical in every
byte that means something, except their time (``ts_ns``). The key is the raw
record with ``ts_ns`` cut out. A file record is sent with only the bytes
its paths use (the lengths are in its fixed part), so the whole record is
the key, with no stale bytes in it. Everything else stays in the key: pid,
tid, uid, gid, cgroup, comm, the operation, syscall, result, fds, flags,
mode, owner, group, the paths as passed and the absolute paths with their
flags, and for network records the sockaddr cut at its length (connect's
address is read from user memory in one fixed-size window: the bytes past
it are whatever the caller's stack held). Stricter than
"(pid, kind, operation, path(s), flags, mode, result)": a folded record's
header is true of every event it stands for (a flood from several threads
folds per thread). Distinct events never fold: two records with the same
key decode to the same event but for ``ts_ns``.

exec, fork and exit never fold (one per process), nor do syscall counts
(already folded by the kernel's map).

How: the first event of a key is decoded and delivered at once (the live
tail's latency does not grow). It opens a window of ``window_ns`` from its
own ``ts_ns``. A repeat inside the window only bumps the entry: it is not
even decoded. When the window closes (a repeat arrives after it, the
drain's pass finds it past, the process execs or exits, or at stop), an
entry with repeats is delivered as one event with ``count`` the number of
repeats, ``ts_ns`` the first repeat's time and ``last_ts_ns`` the last
one's; a single repeat is delivered as itself, unchanged. Windows are
decided by the events' own times, so the same records give the same
folding, except that an entry closed by the clock sees a repeat that was
still in the ring as the start of a new window: the counts are exact
either way.

Exactly counted: every record taken is counted ``received`` once; repeats
held are in :attr:`FoldTable.pending` until they are delivered, so at any
moment received = decode errors + delivered (in kernel events, see
``agent.capture.events.event_count``) + dropped + pending, and after
:meth:`FoldTable.flush` pending is 0.

Bounded: at most ``capacity`` keys are held (each about 33 KiB at worst:
its key, up to four 4 KiB paths, and its decoded first event with the
same paths and two joined ones; a few hundred bytes usually). When the table is full a new key's
event passes unfolded, counted in ``overflow``: never lost, never held.

What can go wrong: a record that does not decode is counted as a decode
error of its kind, never raised.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from agent.capture.events import FileEvent, KernelEvent, NetEvent
from agent.capture.kinds import KIND_EXEC, KIND_EXIT, KIND_FILE, KIND_NAMES, KIND_NET
from agent.capture.wire import FILE_BODY, HEADER, NET_BODY, SOCKADDR_LEN, WireError

__all__ = ["FoldSettings", "FoldStats", "FoldTable"]

#: Where ``ts_ns`` lies in ``struct th_header`` (after kind and pid).
_TS_START = 8
_TS_END = 16
_FILE_SIZE = HEADER.size + FILE_BODY.size
_NET_SIZE = HEADER.size + NET_BODY.size
#: Where a network record's addrlen and sockaddr are (struct th_net_event).
_NET_ADDRLEN = HEADER.size + 16
_NET_SOCKADDR = _NET_SIZE - SOCKADDR_LEN
#: kind, pid, ts_ns: the start of ``struct th_header``.
_HEAD = struct.Struct("<IIQ")


class FoldSettings(msgspec.Struct, frozen=True):
    """``[capture] fold_window_ms`` and ``fold_capacity`` (their defaults and
    checks are the configuration schema's): ``window_ms`` 0 turns folding off."""

    window_ms: int
    capacity: int

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0


class FoldStats(msgspec.Struct, frozen=True):
    """The fold table now. ``keys`` and ``pending`` are gauges (keys held;
    repeats held per kind, not yet delivered); ``folded`` (records delivered
    that stand for several events), ``absorbed`` (repeats delivered inside
    them) and ``overflow`` (events passed unfolded, the table full) are
    counters, per kind. ``window_ms`` 0: folding is off."""

    window_ms: int
    capacity: int
    keys: int
    pending: dict[str, int]
    folded: dict[str, int]
    absorbed: dict[str, int]
    overflow: dict[str, int]


@dataclass(slots=True)
class _Entry:
    event: FileEvent | NetEvent  # the first one, delivered already
    opened: int  # its ts_ns: the window is [opened, opened + window_ns)
    kind: str
    repeats: int = 0
    first: int = 0  # of the repeats
    last: int = 0


class FoldTable:
    """Decodes a drain's raw records, folding repeats (see the module doc).

    ``decode`` is the capture's wire decoder; ``received`` and
    ``decode_errors`` are the ledger's counters, bumped here once per record
    taken, and ``pending`` the ledger's count of repeats held here;
    ``window_ns`` above 0, ``capacity`` at least 1 (0 window: use no table
    at all).
    """

    def __init__(
        self,
        decode: Callable[[bytes], KernelEvent],
        *,
        window_ns: int,
        capacity: int,
        received: Counter[str],
        decode_errors: Counter[str],
        pending: Counter[str] | None = None,
    ) -> None:
        if window_ns <= 0 or capacity < 1:
            raise ValueError(f"fold window {window_ns} ns and capacity {capacity}: expected > 0")
        self._decode = decode
        self.window_ns = window_ns
        self.capacity = capacity
        self._received = received
        self._decode_errors = decode_errors
        #: Insertion order is opening order (close enough: records come in
        #: reservation order, and the kernel stamps them at reservation).
        self._table: dict[bytes, _Entry] = {}
        self._by_pid: dict[int, dict[bytes, None]] = {}
        self.pending: Counter[str] = Counter() if pending is None else pending
        self.folded: Counter[str] = Counter()
        self.absorbed: Counter[str] = Counter()
        self.overflow: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._table)

    def feed(self, records: list[bytes], out: list[KernelEvent]) -> None:
        """Take ``records`` in order; append to ``out`` what is to be
        delivered now (first events, closed windows, everything else)."""
        table = self._table
        received = self._received
        window = self.window_ns
        head = _HEAD.unpack_from
        # Repeats are added to the books once per call (the loop below
        # closes entries, which subtracts, so pending may dip meanwhile).
        file_repeats = net_repeats = 0
        for raw in records:
            # The hot path (every record of a flood): one unpack, two slices,
            # one lookup. About a quarter of a decode.
            if len(raw) < _TS_END:
                self._other(raw, int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0, out)
                continue
            kind, _, ts = head(raw)
            if kind == KIND_FILE and len(raw) >= _FILE_SIZE:
                key = raw[:_TS_START] + raw[_TS_END:]
            elif kind == KIND_NET and len(raw) >= _NET_SIZE:
                addrlen = min(
                    int.from_bytes(raw[_NET_ADDRLEN : _NET_ADDRLEN + 4], "little"), SOCKADDR_LEN
                )
                key = raw[:_TS_START] + raw[_TS_END : _NET_SOCKADDR + addrlen]
            else:
                self._other(raw, kind, out)
                continue
            entry = table.get(key)
            if entry is not None:
                if ts - entry.opened < window:
                    if kind == KIND_FILE:
                        file_repeats += 1
                    else:
                        net_repeats += 1
                    if entry.repeats == 0:
                        entry.first = entry.last = ts
                    elif ts < entry.first:
                        entry.first = ts
                    elif ts > entry.last:
                        entry.last = ts
                    entry.repeats += 1
                    continue
                self._close(key, entry, out)
            event = self._decoded(raw, kind)
            if event is None:
                continue
            out.append(event)
            if len(table) >= self.capacity:
                self.overflow[KIND_NAMES[kind]] += 1
                continue
            assert isinstance(event, FileEvent | NetEvent)
            table[key] = _Entry(event, ts, KIND_NAMES[kind])
            keys = self._by_pid.get(event.pid)
            if keys is None:
                keys = self._by_pid[event.pid] = {}
            keys[key] = None
        for name, n in (("file", file_repeats), ("net", net_repeats)):
            if n:
                received[name] += n
                self.pending[name] += n

    def expire(self, now_ns: int, out: list[KernelEvent]) -> None:
        """Close every window that ended by ``now_ns`` (CLOCK_BOOTTIME, the
        events' clock). Cheap: walks only the expired entries, oldest first."""
        window = self.window_ns
        done: list[tuple[bytes, _Entry]] = []
        for key, entry in self._table.items():
            if entry.opened + window > now_ns:
                break
            done.append((key, entry))
        for key, entry in done:
            self._close(key, entry, out)

    def flush(self, out: list[KernelEvent]) -> None:
        """Close every window (at stop): afterwards nothing is pending."""
        for key, entry in list(self._table.items()):
            self._close(key, entry, out)

    def stats(self) -> FoldStats:
        def table(counts: Counter[str]) -> dict[str, int]:
            return {k: n for k, n in sorted(counts.items()) if n}

        return FoldStats(
            window_ms=self.window_ns // 1_000_000,
            capacity=self.capacity,
            keys=len(self._table),
            pending=table(self.pending),
            folded=table(self.folded),
            absorbed=table(self.absorbed),
            overflow=table(self.overflow),
        )

    # -- internals ------------------------------------------------------------
    def _decoded(self, raw: bytes, kind: int) -> KernelEvent | None:
        name = KIND_NAMES.get(kind, "unknown")
        self._received[name] += 1
        try:
            return self._decode(raw)
        except WireError:
            self._decode_errors[name] += 1
            return None

    def _other(self, raw: bytes, kind: int, out: list[KernelEvent]) -> None:
        """A record that does not fold. An exec or exit first closes its
        process's windows: what it did before comes before it, and no folded
        event of an exited process arrives after its exit."""
        event = self._decoded(raw, kind)
        if event is None:
            return
        if kind in (KIND_EXIT, KIND_EXEC):
            keys = self._by_pid.get(event.pid)
            if keys is not None:
                for key in list(keys):
                    self._close(key, self._table[key], out)
        out.append(event)

    def _close(self, key: bytes, entry: _Entry, out: list[KernelEvent]) -> None:
        del self._table[key]
        pid = entry.event.pid
        keys = self._by_pid[pid]
        del keys[key]
        if not keys:
            del self._by_pid[pid]
        n = entry.repeats
        if n == 0:
            return
        replace = msgspec.structs.replace
        if n == 1:
            out.append(replace(entry.event, ts_ns=entry.first))
        else:
            out.append(replace(entry.event, ts_ns=entry.first, count=n, last_ts_ns=entry.last))
            self.folded[entry.kind] += 1
            self.absorbed[entry.kind] += n
        self.pending[entry.kind] -= n
