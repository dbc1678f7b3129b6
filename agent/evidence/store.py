"""The evidence log on disk: segments, group commit, seals, rotation, retention, recovery.

This is the I/O layer over the sans-I/O cores (:mod:`.chain`, :mod:`.seal`,
:mod:`.recovery`); the layout it writes is :mod:`.layout` (file names,
modes, the store's own record types), its key file :mod:`.keys`. It is
synchronous on purpose: a trio task calls it with
``trio.to_thread.run_sync`` (or directly, accepting a short block) and the
tests drive it with plain files.

Modes (see :mod:`.layout`): an existing log is brought to them when it is
opened (a looser one, from before, is tightened).

Seals (when sealed): a checkpoint is written

- at the first :meth:`EvidenceStore.commit` (or :meth:`EvidenceStore.tick`)
  at least ``seal_interval_s`` (:data:`SEAL_INTERVAL_S`, 1 s) after the
  last one, when records wait for a seal: under load one seal a second,
  whatever the rate, riding on that batch's write and fsync (what it adds
  is the record and the key file's rewrite: two fsyncs and a rename); a
  quiet log is sealed about a second after its last record (the daemon
  ticks every second), not 15 minutes later;
- every ``checkpoint_every_records`` records too, if that is set (0: not),
  for whoever wants seals by count (tests, the golden log);
- at rotation, before retention prunes, and at :meth:`EvidenceStore.close`.

The first seal of a run is the pipeline's to ask for at once
(:meth:`EvidenceStore.checkpoint`): the key on disk is the verification key
until then.

Durability (``fsync``):

- ``"always"``: every :meth:`EvidenceStore.append` commits and fsyncs before
  returning; slow, nothing acknowledged is ever lost.
- ``"batch"``: :meth:`EvidenceStore.commit` writes the buffered lines and
  fsyncs once (group commit); a crash loses at most the uncommitted batch.
- ``"never"``: commits write and flush but do not fsync (the kernel decides);
  a power loss can lose acknowledged records *and a checkpoint whose key
  was already ratcheted*, which later verifies as a seal epoch gap.

Whatever the policy, :meth:`EvidenceStore.close` fsyncs, and the key file is
always written with fsync + rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Final, Literal, Protocol, TypeAlias, get_args

import blake3
import msgspec

from agent.evidence.chain import ChainRecord, ChainWriter, Head
from agent.evidence.durable import fsync_dir, set_file_mode, write_synced
from agent.evidence.keys import persist_key, read_key_state, resume_sealer
from agent.evidence.layout import (
    CHECKPOINT,
    RECOVERED,
    RESERVED_TYPES,
    SECRET_MODE,
    SEGMENT_PRUNED,
    SEGMENT_START,
    PrunedSegment,
    Recovered,
    SegmentLink,
    SegmentsPruned,
    SegmentStart,
    StoreCorruptError,
    file_mode,
    key_path,
    segment_files,
    segment_name,
)
from agent.evidence.recovery import (
    TAIL_BLOCK,
    find_last_checkpoint,
    last_line,
    lost_seal,
    read_header,
    scan_tail,
    try_record,
)
from agent.evidence.seal import Seal, Sealer
from agent.state_dir import DIR_MODE, dir_mode, ensure_dir, make_state_dir, set_owner_mode

__all__ = ["SEAL_INTERVAL_S", "EvidenceStore", "FsyncPolicy", "StoreLockedError"]

FsyncPolicy: TypeAlias = Literal["always", "batch", "never"]

SEAL_INTERVAL_S: Final = 1.0
"""Seconds from one seal to the next while records come: bounds the seals'
cost at any rate, and what an intruder who takes the host can rewrite."""


class _Body(Protocol):
    """A record to append as it is: its type and its canonical bytes."""

    @property
    def type(self) -> str: ...

    @property
    def body(self) -> bytes: ...


class StoreLockedError(Exception):
    """Another process holds the store's lock: two writers would fork the chain."""


def _check_policy(fsync: str | None, **positive: float) -> None:
    """Refuse an unknown fsync policy (None: none given) or a size, age or
    interval that is not above 0."""
    if fsync is not None and fsync not in get_args(FsyncPolicy):
        raise ValueError(f"fsync must be one of always, batch, never; got {fsync!r}")
    for name, value in positive.items():
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _check_count(name: str, value: int) -> None:
    """Refuse a count that is not an int of 0 or more (0: off)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be 0 (off) or more, got {value!r}")


class EvidenceStore:
    """Appends records to the segmented, hash-chained, sealed evidence log.

    Opening recovers from a crash (see :meth:`_recover`), resumes the chain
    and reopens the sealer from ``keys/seal.key``. Without a key file the
    store still chains but writes no seals: :attr:`sealed` is False.

    Not thread-safe: one task owns it. A second process opening the same
    ``state_dir`` gets :class:`StoreLockedError`.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        segment_max_bytes: int = 64 * 1024 * 1024,
        segment_max_age_s: float = 24 * 3600,
        retain_max_bytes: int = 1024 * 1024 * 1024,
        checkpoint_every_records: int = 0,
        seal_interval_s: float = SEAL_INTERVAL_S,
        fsync: FsyncPolicy = "batch",
        clock: Callable[[], int] = time.time_ns,
        group: int | None = None,
    ) -> None:
        """Open (or create) the log in ``state_dir``.

        ``group``: a gid whose members may read the log (the daemon passes
        the API group): directories 0750 and files 0640 with that group
        instead of 0700 and 0600.

        Raises:
            StateDirError: the state directory cannot be made or is a
                symlink, not a directory, or shared (sticky).
            StoreLockedError, StoreCorruptError, OSError, ValueError.
        """
        _check_policy(None, seal_interval_s=seal_interval_s)
        self.configure(
            fsync=fsync,
            segment_max_bytes=segment_max_bytes,
            segment_max_age_s=segment_max_age_s,
            retain_max_bytes=retain_max_bytes,
            checkpoint_every_records=checkpoint_every_records,
        )
        self._dir = Path(state_dir)
        self._segments_dir = self._dir / "segments"
        self._seal_interval_ns = int(seal_interval_s * 1_000_000_000)
        self._clock = clock

        self._buffer: list[bytes] = []
        #: Seq of the last record written to the file (None before any):
        #: after an error, what is at or below it is in the log, the rest not.
        self.written_seq: int | None = None
        self._file: IO[bytes] | None = None
        self._closed = False
        self._writer = ChainWriter()
        self._segment_index = 0
        self._segment_first_seq = 0
        self._segment_bytes = 0
        self._segment_started_ms = 0
        self._since_checkpoint = 0
        self._last_checkpoint_ns = clock()
        self._sealer: Sealer | None = None
        self._group = group
        self._file_mode = file_mode(group)
        self._dir_mode = dir_mode(group)

        make_state_dir(self._dir, gid=group)
        self._lock = self._take_lock()
        try:
            self._set_modes()
            self._open()
        except BaseException:
            self._release()
            raise

    # --- public --------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """True if checkpoints are sealed; False if there is no key file (chain only)."""
        return self._sealer is not None

    @property
    def head(self) -> Head | None:
        """``(seq, hash)`` of the last record appended (committed or not)."""
        return self._writer.head

    @property
    def checkpoint_age_s(self) -> float:
        """Seconds since the last checkpoint was written (or the store opened):
        the ``no checkpoint for too long`` alert reads it."""
        return max(0.0, (self._clock() - self._last_checkpoint_ns) / 1e9)

    def configure(
        self,
        *,
        fsync: FsyncPolicy,
        segment_max_bytes: int,
        segment_max_age_s: float,
        retain_max_bytes: int,
        checkpoint_every_records: int,
    ) -> None:
        """Set the write policy: ``__init__`` does, and a configuration reload
        changes it on an open store, from the next append.

        Raises:
            ValueError: an unknown fsync policy, or a value not above 0.
        """
        _check_policy(
            fsync,
            segment_max_bytes=segment_max_bytes,
            segment_max_age_s=segment_max_age_s,
            retain_max_bytes=retain_max_bytes,
        )
        _check_count("checkpoint_every_records", checkpoint_every_records)
        self._fsync = fsync
        self._segment_max_bytes = segment_max_bytes
        self._segment_max_age_ms = int(segment_max_age_s * 1000)
        self._retain_max_bytes = retain_max_bytes
        self._checkpoint_every_records = checkpoint_every_records

    def extent(self) -> list[tuple[Path, int]]:
        """Every segment file with its size now: a prefix of the log that holds
        only whole, committed records when called between batches (the
        pipeline calls it under its store lock), so a verifier can read it
        while the log keeps growing."""
        return [(path, path.stat().st_size) for _, path in segment_files(self._segments_dir)]

    @property
    def segment_index(self) -> int:
        """Index of the segment being written."""
        return self._segment_index

    @property
    def state_dir(self) -> Path:
        """The state directory this store writes."""
        return self._dir

    def append(self, type: str, body: object) -> ChainRecord:
        """Append a record; it is durable only after :meth:`commit` (or at once with ``"always"``).

        May also write a checkpoint or rotate the segment when one is due.
        Raises :class:`ValueError` for a reserved or empty type and
        :class:`~agent.evidence.canonical.CanonicalError` for a body without a
        canonical form; then nothing was appended.
        """
        self._check_open()
        if type in RESERVED_TYPES:
            raise ValueError(f"record type {type!r} is reserved for the store itself")
        record = self._append_record(type, body)
        self._since_checkpoint += 1
        self._maybe_roll(seal_by_time=False)
        if self._fsync == "always":
            self.commit()
        return record

    def append_body(self, type: str, body: bytes) -> int:
        """Append a record whose body is canonical JSON bytes already (a
        mapped record's :attr:`~agent.evidence.types.EvidenceRecord.body`,
        written as it is); return its seq. Otherwise like :meth:`append`."""
        self._check_open()
        if type in RESERVED_TYPES:
            raise ValueError(f"record type {type!r} is reserved for the store itself")
        seq = self._writer.next_seq
        self._appended(self._writer.append_line(type, body))
        return seq

    def append_bodies(self, records: Iterable[_Body], seqs: list[int]) -> None:
        """:meth:`append_body` of each record's ``type`` and ``body`` (an
        :class:`~agent.evidence.types.EvidenceRecord`'s), in order, for the
        price of one call, adding to ``seqs`` the seq each one got as it
        goes. A record the store refuses (a reserved or empty type, a body
        that is not bytes) gets -1 and the rest go on. An error once a
        record is chained (the disk, at a checkpoint or rotation it made
        due) is raised with that record's seq already in ``seqs``:
        :attr:`written_seq` then says which seqs reached the file.
        """
        self._check_open()
        writer = self._writer
        line_of = writer.append_line
        add = seqs.append
        appended = self._appended
        for record in records:
            type = record.type
            seq = writer.next_seq
            try:
                if type in RESERVED_TYPES:
                    raise ValueError(f"record type {type!r} is reserved for the store itself")
                line = line_of(type, record.body)
            except Exception:  # this record has no place in the log; the caller counts it
                add(-1)
                continue
            add(seq)
            appended(line)

    def append_many(self, items: Iterable[tuple[str, object]]) -> list[ChainRecord]:
        """Append ``(type, body)`` pairs, then commit once."""
        records = [self.append(type, body) for type, body in items]
        self.commit()
        return records

    def commit(self) -> None:
        """Write and flush the buffered records; fsync unless the policy is ``"never"``.

        A seal that is due by time goes with the batch: the checkpoint record
        is appended after the batch's records and one write and one fsync
        carry both (then the ratcheted key is persisted), so sealing costs a
        record and a key write per interval, not a write and an fsync more.
        """
        self._check_open()
        if self._seal_due(self._clock()):
            self._checkpoint()
        else:
            self._flush(sync=self._fsync != "never")

    def tick(self) -> None:
        """Write a checkpoint or rotate if one is due by time; call it about
        every second, so the last records of a burst are sealed soon."""
        self._check_open()
        self._maybe_roll()

    def checkpoint(self) -> Seal | None:
        """Seal the current head now (None without a key); commits."""
        self._check_open()
        return self._checkpoint()

    def close(self) -> None:
        """Final checkpoint, commit, fsync, release the lock. Idempotent."""
        if self._closed:
            return
        try:
            if self._since_checkpoint:
                self._checkpoint()
            self._flush(sync=True)
        finally:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._sealer is not None:
                self._sealer.erase()
            self._release()

    def discard(self) -> None:
        """Give up on this store after an error: close and unlock without
        writing anything more (the file keeps only whole records: a failed
        write was cut back). Idempotent; a new store reopens the log."""
        if self._closed:
            return
        if self._file is not None:
            self._abandon(None)
        else:
            self._closed = True
            if self._sealer is not None:
                self._sealer.erase()
            self._release()

    def __enter__(self) -> EvidenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the evidence store is closed")

    def _appended(self, line: bytes) -> None:
        """Buffer a record's line just chained; then seal by count or rotate
        if due (a seal by time waits for the batch's :meth:`commit`, see
        :meth:`_maybe_roll`), and commit at once under ``"always"``."""
        self._buffer.append(line)
        self._segment_bytes += len(line)
        self._since_checkpoint += 1
        now = self._clock()
        every = self._checkpoint_every_records
        if every and self._since_checkpoint >= every and self._sealer is not None:
            self._checkpoint()
        if (
            self._segment_bytes >= self._segment_max_bytes
            or now // 1_000_000 - self._segment_started_ms >= self._segment_max_age_ms
        ):
            self._rotate()
        if self._fsync == "always":
            self.commit()

    def _append_record(self, type: str, body: object) -> ChainRecord:
        record, line = self._writer.append(type, body)
        self._buffer.append(line)
        self._segment_bytes += len(line)
        return record

    def _flush(self, *, sync: bool) -> None:
        """Write the buffered lines; on any error leave the file as it was.

        A failed write (disk full, EIO) may have put part of the batch on
        disk. The file is cut back to where the batch began and the store
        closes itself: appending after a torn fragment would corrupt the
        log for good, and records already taken by this store must never
        be written twice. The next open resumes from the durable head.
        """
        assert self._file is not None
        if self._buffer:
            data = memoryview(b"".join(self._buffer))
            fd = self._file.fileno()
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                self._abandon(start)
                raise
            self._buffer.clear()
            head = self._writer.head
            self.written_seq = head[0] if head is not None else None
        if sync:
            try:
                os.fsync(self._file.fileno())
            except OSError:
                self._abandon(None)
                raise

    def _abandon(self, truncate_to: int | None) -> None:
        """Give up after a write error: restore the file, close, unlock."""
        assert self._file is not None
        with contextlib.suppress(OSError):
            if truncate_to is not None:
                os.ftruncate(self._file.fileno(), truncate_to)
        self._buffer.clear()
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        self._closed = True
        if self._sealer is not None:
            self._sealer.erase()
        self._release()

    def _maybe_roll(self, *, seal_by_time: bool = True) -> None:
        """Seal or rotate if due. An append passes ``seal_by_time=False``:
        the interval's seal then waits for the batch's :meth:`commit`."""
        now = self._clock()
        if self._seal_due(now, by_time=seal_by_time):
            self._checkpoint()
        age_ms = now // 1_000_000 - self._segment_started_ms
        if self._segment_bytes >= self._segment_max_bytes or age_ms >= self._segment_max_age_ms:
            self._rotate()

    def _seal_due(self, now: int, *, by_time: bool = True) -> bool:
        """Records wait for a seal, and the seal interval has passed since
        the last one (``by_time``), or the count, if set, is reached: see
        the module."""
        if self._sealer is None or not self._since_checkpoint:
            return False
        every = self._checkpoint_every_records
        if every and self._since_checkpoint >= every:
            return True
        return by_time and now - self._last_checkpoint_ns >= self._seal_interval_ns

    def _checkpoint(self, *, durable: bool = False) -> Seal | None:
        """Seal the head, append the seal, make it durable, then persist the ratcheted key.

        Record first, key second: after a crash in between, the log has a seal
        the key file has not caught up with, and :meth:`_open` ratchets the
        key forward to match. The other order could lose a seal for good.
        ``durable``: fsync the log whatever the policy (before pruning).
        """
        sync = durable or self._fsync != "never"
        if self._sealer is None:
            self._flush(sync=sync)
            return None
        head = self._writer.head
        assert head is not None  # every segment starts with its header
        sealed = self._sealer.seal(*head)
        self._append_record(CHECKPOINT, sealed)
        self._flush(sync=sync)
        self._persist_key()
        self._since_checkpoint = 0
        self._last_checkpoint_ns = self._clock()
        return sealed

    def _persist_key(self) -> None:
        assert self._sealer is not None
        persist_key(self._dir, self._sealer)

    def _rotate(self) -> None:
        """Close the segment (checkpoint first), start the next one, then apply retention."""
        if self._since_checkpoint:
            self._checkpoint()
        self._flush(sync=self._fsync != "never")
        assert self._file is not None
        self._file.close()
        head = self._writer.head
        assert head is not None
        previous = SegmentLink(index=self._segment_index, seq=head[0], hash=head[1])
        self._start_segment(self._segment_index + 1, previous)
        self._enforce_retention()

    def _start_segment(self, index: int, previous: SegmentLink | None) -> None:
        path = self._segments_dir / segment_name(index)
        self._file = self._open_segment(path)
        self._segment_index = index
        self._segment_bytes = self._file.seek(0, os.SEEK_END)
        self._segment_started_ms = self._clock() // 1_000_000
        self._segment_first_seq = self._writer.next_seq
        body = SegmentStart(index=index, previous=previous, started_ms=self._segment_started_ms)
        self._append_record(SEGMENT_START, body)
        self._flush(sync=self._fsync != "never")
        fsync_dir(self._segments_dir)

    def _enforce_retention(self) -> None:
        """Delete the oldest whole segments (never the current) while over budget.

        Order: the ``segment.pruned`` record, a checkpoint sealing it (when
        sealed), fsync, and only then the deletions. A pruning record no seal
        covers is a break for the verifier with a key (anyone on the host can
        append chained records), so it must be sealed before it is needed to
        explain a missing segment. A crash before the files go leaves
        segments recorded as pruned but still there, which verifies; one
        before the seal is durable leaves the record unsealed, and the next
        open seals it (:meth:`_open`). The other order would leave a hole no
        sealed record explains.
        """
        older = [(i, p) for i, p in segment_files(self._segments_dir) if i < self._segment_index]
        sizes = [p.stat().st_size for _, p in older]
        total = sum(sizes) + self._segment_bytes
        doomed: list[tuple[int, Path, int]] = []
        for (index, path), size in zip(older, sizes, strict=True):
            if total <= self._retain_max_bytes:
                break
            doomed.append((index, path, size))
            total -= size
        if not doomed:
            return
        pruned = [_describe_segment(index, path, size) for index, path, size in doomed]
        self._append_record(SEGMENT_PRUNED, SegmentsPruned(segments=pruned))
        self._checkpoint(durable=True)
        for _, path, _ in doomed:
            path.unlink()
        fsync_dir(self._segments_dir)

    # --- opening and recovery ----------------------------------------------------

    def _take_lock(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._dir / "lock", flags, SECRET_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{self._dir}: another process is writing this store") from None
        try:
            set_owner_mode(fd, SECRET_MODE, None)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _set_modes(self) -> None:
        """Bring the directories and files to this store's modes (see the
        module): new ones are made so, older ones tightened here."""
        ensure_dir(self._segments_dir, self._dir_mode, self._group)
        for _, path in segment_files(self._segments_dir):
            set_file_mode(path, self._file_mode, self._group)
        recovered = self._dir / "recovered"
        if recovered.is_dir():
            ensure_dir(recovered, self._dir_mode, self._group)
            for path in recovered.iterdir():
                set_file_mode(path, self._file_mode, self._group)
        keys = key_path(self._dir).parent
        if keys.is_dir():
            ensure_dir(keys, DIR_MODE)
            for path in keys.iterdir():
                set_file_mode(path, SECRET_MODE, None)

    def _open_segment(self, path: Path) -> IO[bytes]:
        """A segment for appending, made with this store's mode and group;
        never through a symlink."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, self._file_mode)
        try:
            set_owner_mode(fd, self._file_mode, self._group)
        except OSError:
            os.close(fd)
            raise
        return os.fdopen(fd, "ab")

    def _release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _open(self) -> None:
        segments = segment_files(self._segments_dir)
        last_seal: Seal | None = None
        unsealed_pruning: tuple[int, SegmentsPruned] | None = None
        if not segments:
            self._start_segment(0, None)
        else:
            last_seal, unsealed_pruning = self._recover(segments)
            if last_seal is None:
                last_seal = _last_seal(p for _, p in reversed(segments[:-1]))
        self._open_sealer(last_seal)
        if unsealed_pruning is not None and self._sealer is not None:
            self._finish_pruning(*unsealed_pruning, segments)
        self._enforce_retention()

    def _finish_pruning(
        self, seq: int, pruned: SegmentsPruned, segments: list[tuple[int, Path]]
    ) -> None:
        """Seal a ``segment.pruned`` record a crash left unsealed, then delete
        what it names, as the interrupted retention would have.

        Only this store's own crash leaves one, and then every segment it
        names is still there (files go only after the seal is durable). One
        whose segments are already gone was not written by this store: a
        seal now would vouch for a forged explanation of deleted history,
        so the store refuses to write (:class:`StoreCorruptError`).
        """
        present = {index: path for index, path in segments}
        missing = [entry.index for entry in pruned.segments if entry.index not in present]
        if missing:
            raise StoreCorruptError(
                f"the segment.pruned record at seq {seq} is not sealed and segment"
                f" {missing[0]} it names is already gone: this store did not write it"
                " (the log was edited); verify the log before writing to it"
            )
        self._checkpoint(durable=True)  # the crash came between pruning and its seal
        for entry in pruned.segments:
            present[entry.index].unlink()
        fsync_dir(self._segments_dir)

    def _recover(
        self, segments: list[tuple[int, Path]]
    ) -> tuple[Seal | None, tuple[int, SegmentsPruned] | None]:
        """Check the last segment from its last checkpoint on, cut off a torn
        tail, resume the chain there (what is checked: :mod:`.recovery`).

        Returns the last seal found in the last segment, for the sealer, and
        the seq and body of a ``segment.pruned`` record after it, if any (only
        the last segment can hold one: rotation seals first). Only the last
        line may be bad (a crash tears at most what was being written);
        anything else is :class:`StoreCorruptError`.
        """
        index, path = segments[-1]
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            found = find_last_checkpoint(lambda at, n: _read_at(handle, at, n), size)
            base = 0 if found is None else found[0]
            data = _read_at(handle, base, size - base)
            header = (
                None if base == 0 else read_header(_read_at(handle, 0, -1, line=True), str(path))
            )
        scan = scan_tail(data, base=base, at_start=base == 0, name=str(path))

        torn: tuple[int, bytes] | None = None
        if scan.torn_at is not None:
            torn_at = scan.torn_at
            torn = (torn_at, data[torn_at - base :])
            kept = self._dir / "recovered" / f"{path.stem}-{torn_at}.torn"
            ensure_dir(kept.parent, self._dir_mode, self._group)
            write_synced(kept, torn[1], self._file_mode, self._group)
            with open(path, "r+b") as handle:
                handle.truncate(torn_at)
                os.fsync(handle.fileno())

        if scan.head is None:
            # Nothing good left in the last segment: rewrite its header.
            previous: SegmentLink | None = None
            if len(segments) > 1:
                prev_index, prev_path = segments[-2]
                last = _last_record(prev_path)
                previous = SegmentLink(index=prev_index, seq=last.seq, hash=last.hash)
                self._writer = ChainWriter(head=(last.seq, last.hash))
            elif index != 0:
                raise StoreCorruptError(
                    f"{path}: the only segment has no valid header and is not segment 0"
                )
            with open(path, "r+b") as handle:
                handle.truncate(0)
            self._start_segment(index, previous)
        else:
            if header is None:
                assert scan.first is not None
                first, start = scan.first, msgspec.convert(scan.first.body, SegmentStart)
            else:
                first, start = header
            self._writer = ChainWriter(head=scan.head)
            self._file = self._open_segment(path)
            self._segment_index = index
            self._segment_bytes = self._file.seek(0, os.SEEK_END)
            self._segment_first_seq = first.seq
            self._segment_started_ms = start.started_ms

        last_seal, unsealed_pruning = scan.last_seal, scan.unsealed_pruning
        if torn is not None:
            offset, raw = torn
            carried = lost_seal(raw, self._writer.head)
            self._append_record(
                RECOVERED,
                Recovered(
                    segment=path.name,
                    offset=offset,
                    length=len(raw),
                    blake3=blake3.blake3(raw).hexdigest(),
                    kept_as=f"recovered/{path.stem}-{offset}.torn",
                    seal=carried,
                ),
            )
            self._flush(sync=True)
            if carried is not None:
                last_seal, unsealed_pruning = carried, None
        return last_seal, unsealed_pruning

    def _open_sealer(self, last_seal: Seal | None) -> None:
        """Load the key file; if the log holds seals it hasn't caught up with, ratchet on."""
        state = read_key_state(self._dir)
        if state is None:
            return
        self._sealer, behind = resume_sealer(state, last_seal)
        if behind:
            self._persist_key()


def _read_at(handle: IO[bytes], offset: int, size: int, *, line: bool = False) -> bytes:
    """``size`` bytes at ``offset`` (all to the end if negative), or with
    ``line`` the one line there."""
    handle.seek(offset)
    return handle.readline() if line else handle.read(size)


def _first_record(path: Path) -> ChainRecord:
    with open(path, "rb") as handle:
        line = handle.readline()
    record = try_record(line)
    if record is None:
        raise StoreCorruptError(f"{path}: the first line is not a chain record")
    return record


def _last_record(path: Path) -> ChainRecord:
    """The last complete line of ``path``, read backwards from the end in blocks."""
    with open(path, "rb") as handle:
        pos = handle.seek(0, os.SEEK_END)
        tail = b""
        line: bytes | None = None
        while pos > 0 and line is None:
            step = min(TAIL_BLOCK, pos)
            pos -= step
            tail = _read_at(handle, pos, step) + tail
            line = last_line(tail)
        if line is None:  # the file is one line
            line = tail.rstrip(b"\n")
    record = try_record(line)
    if record is None:
        raise StoreCorruptError(f"{path}: the last line is not a chain record")
    return record


def _last_seal(paths: Iterable[Path]) -> Seal | None:
    """The newest checkpoint's seal in ``paths`` (newest segment first), or None;
    each segment searched backwards from its end."""
    for path in paths:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            found = find_last_checkpoint(lambda at, n: _read_at(handle, at, n), size)
        if found is not None:
            return msgspec.convert(found[1].body, Seal)
    return None


def _describe_segment(index: int, path: Path, size: int) -> PrunedSegment:
    first, last = _first_record(path), _last_record(path)
    return PrunedSegment(
        index=index, first_seq=first.seq, last_seq=last.seq, last_hash=last.hash, bytes=size
    )
