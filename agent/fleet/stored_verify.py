"""Re-verifying one host's chain from the collector's database: the pure half of ``fleet verify``.

The caller reads the host's ``chain`` rows in seq order, each with its
``records`` line and ``altered`` note (the line is None when retention
dropped its partition), and feeds them to :class:`StoredChainCheck`. It
checks, to the first break:

- the skeleton, on every row: seqs consecutive (a missing one is a
  ``gap``), each ``prev`` the previous row's ``hash`` (``link``), and the
  hash the host published as its head, where the rows reach it
  (``checkpoint``);
- each stored line as received (``altered`` NULL): it names the row's own
  seq, hash and prev, and the line itself goes through
  :class:`agent.evidence.verify.LogVerifier` (the verifier of the host's own
  log): canonical bytes, hash recomputed, links, store records' shapes and,
  with the host's key, every seal.

A line the collector changed (``altered``: a never-store field stripped, a
secret redacted) or no longer has cannot be re-hashed: its row is checked
by the skeleton only (its hash is the one the collector checked on the
bytes as received) and counted in ``not_rehashed``. The next stored line
starts a new :class:`LogVerifier` run that takes its ``prev`` as given
(the skeleton has just linked it); seals are then checked from that run's
first seal on.

What this cannot see: rows rewritten consistently in both tables with every
hash recomputed (the seals catch that, with the key), and records the host
never published (the host's head and ``fleet hosts``' lag show those).
Messages quote nothing from the rows but hex and numbers, except what
:class:`LogVerifier` quotes, which it passes through ``shown``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from agent.evidence.chain import Break, BreakKind, Head
from agent.evidence.verify import LogVerifier

__all__ = ["StoredChainCheck", "StoredReport", "StoredRow"]


class StoredRow(msgspec.Struct, frozen=True):
    """One ``chain`` row with its ``records`` line (None: not stored)."""

    seq: int
    hash: str
    prev: str
    line: bytes | None
    altered: str | None = None


class _LineHead(msgspec.Struct):
    seq: int
    hash: str
    prev: str


_HEAD: Final = msgspec.json.Decoder(_LineHead)


class StoredReport(msgspec.Struct, frozen=True):
    """The outcome: ``ok``, the first break, and what was and was not checked."""

    ok: bool
    first_break: Break | None
    records: int
    first_seq: int | None
    last: Head | None
    not_rehashed: int
    seals: int
    seals_checked: bool

    def line(self, host: str) -> str:
        """One line for a person (``host`` already made safe by the caller)."""
        if self.first_break is not None:
            brk = self.first_break
            seq = f"seq {brk.seq}" if brk.seq is not None else "the end"
            return f"BROKEN: host {host} at {seq}: {brk.kind}: {brk.reason}"
        span = "no records" if self.last is None else (
            f"{self.records} records, seq {self.first_seq} to {self.last[0]},"
            f" head {self.last[1][:16]}"
        )  # fmt: skip
        seals = f"{self.seals} seals checked" if self.seals_checked else (
            f"seals NOT checked (no --key): {self.seals} present"
        )  # fmt: skip
        history = f"; history before seq {self.first_seq} not stored" if self.first_seq else ""
        rehash = (
            f"; {self.not_rehashed} rows not re-hashed (altered by the collector or dropped)"
            if self.not_rehashed
            else ""
        )
        return f"OK: host {host}: {span}; {seals}{history}{rehash}"


class StoredChainCheck:
    """Feed every row of one host in seq order, then :meth:`finish`."""

    def __init__(self, *, key: bytes | None = None, published_head: Head | None = None) -> None:
        self._key = key
        self._published = published_head
        self._last: Head | None = None
        self._first_seq: int | None = None
        self._records = 0
        self._not_rehashed = 0
        self._run: LogVerifier | None = None
        self._run_seals = 0
        self._seals_before = 0  # seals seen by earlier runs
        self._broken: Break | None = None

    @property
    def broken(self) -> Break | None:
        return self._broken

    def feed(self, row: StoredRow) -> Break | None:
        """Check the next row; the first break so far (None while good)."""
        if self._broken is not None:
            return self._broken
        last = self._last
        if last is not None:
            if row.seq != last[0] + 1:
                if row.seq == last[0]:
                    return self._fail(row.seq, "fork", f"two stored records for seq {row.seq}")
                if row.seq < last[0]:
                    return self._fail(last[0] + 1, "backwards", f"seq {row.seq} after {last[0]}")
                missing = f"seq {last[0] + 1}" + (
                    f" to {row.seq - 1}" if row.seq > last[0] + 2 else ""
                )
                return self._fail(last[0] + 1, "gap", f"{missing} not in the database")
            if row.prev != last[1]:
                return self._fail(
                    row.seq, "link", f"prev is not the hash of seq {last[0]} (row replaced?)"
                )
        else:
            self._first_seq = row.seq
        published = self._published
        if published is not None and row.seq == published[0] and row.hash != published[1]:
            return self._fail(
                row.seq, "checkpoint", "the stored hash is not the head the host published"
            )
        if row.line is None or row.altered is not None:
            self._end_run()
            self._not_rehashed += 1
        elif (found := self._check_line(row)) is not None:
            return found
        self._last = (row.seq, row.hash)
        self._records += 1
        return None

    def finish(self) -> StoredReport:
        """The end-of-chain checks (seals, through the last run) and the report."""
        if self._broken is None and self._run is not None:
            report = self._run.finish()
            no_seals_here = report.seals == 0 and self._seals_before > 0
            if report.first_break is not None and not no_seals_here:
                brk = report.first_break
                self._broken = Break(seq=brk.seq, line=None, kind=brk.kind, reason=brk.reason)
            self._run_seals = report.seals
        elif (
            self._broken is None
            and self._key is not None
            and self._last is not None
            and self._seals_before == 0
        ):
            self._fail(self._first_seq, "checkpoint", "a key was given but no stored seals")
        return StoredReport(
            ok=self._broken is None,
            first_break=self._broken,
            records=self._records,
            first_seq=self._first_seq,
            last=self._last,
            not_rehashed=self._not_rehashed,
            seals=self._seals_before + (self._run_seals if self._run is not None else 0),
            seals_checked=self._key is not None,
        )

    # --- internals ---------------------------------------------------------------

    def _check_line(self, row: StoredRow) -> Break | None:
        assert row.line is not None
        try:
            head = _HEAD.decode(row.line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            head = None
        if head is None or (head.seq, head.hash, head.prev) != (row.seq, row.hash, row.prev):
            return self._fail(
                row.seq, "hash", "the stored line is not the record its chain row names"
            )
        if self._run is None:
            self._run = LogVerifier(key=self._key, partial=True)
        found = self._run.feed_line(row.line)
        if found is not None:
            return self._fail(row.seq if found.seq is None else found.seq, found.kind, found.reason)
        return None

    def _end_run(self) -> None:
        if self._run is not None:
            self._seals_before += self._run.finish().seals
            self._run = None

    def _fail(self, seq: int | None, kind: BreakKind, reason: str) -> Break:
        self._broken = Break(seq=seq, line=None, kind=kind, reason=reason)
        return self._broken
