"""The evidence log on disk: segments, group commit, seals, rotation, retention, recovery.

This is the I/O layer over the sans-I/O cores (:mod:`.chain`, :mod:`.seal`).
It is synchronous on purpose: a trio task calls it with
``trio.to_thread.run_sync`` (or directly, accepting a short block) and the
tests drive it with plain files.

Layout of ``state_dir``::

    segments/0000000000000000.ndjson   one canonical ChainRecord per line
    segments/0000000000000001.ndjson
    keys/seal.key                      current sealing state, if sealed
    recovered/<segment>-<offset>.torn  bytes cut off a torn tail, kept aside
    lock                               flock'ed by the one writer

Modes: the state directory, ``segments/`` and ``recovered/`` are 0700 and
their files 0600; given a ``group``, 0750 and 0640 with that group, so its
members can read (verify, export) the log. ``keys/`` stays 0700 and its
files 0600 whatever the group: the sealing key lets whoever reads it forge
the seals to come. The lock stays 0600 too: anyone who can open it can
flock it and keep the writer out. An existing log is brought to these
modes when it is opened (a looser one, from before, is tightened).

The chain (seq, prev) runs on across segments. Every segment starts with a
``segment.start`` record (:class:`SegmentStart`) naming its index and the
previous segment's last ``(seq, hash)``, so removing a whole segment leaves a
header that names a predecessor which is not there, and a seq jump.

Record types this layer writes (callers may not use them, see
:data:`RESERVED_TYPES`): ``segment.start``, ``checkpoint`` (body: a
:class:`~agent.evidence.seal.Seal` over the record just before it),
``segment.pruned`` (:class:`SegmentsPruned`), ``recovered``
(:class:`Recovered`).

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
import errno
import fcntl
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Final, Literal, TypeAlias, get_args

import blake3
import msgspec

from agent.evidence.canonical import canonical
from agent.evidence.chain import (
    ZERO_HASH,
    ChainRecord,
    ChainVerifier,
    ChainWriter,
    Head,
    Hex64,
    Seq,
    record_hash,
)
from agent.evidence.seal import KEY_SIZE, Seal, Sealer, encode_key, keygen, next_epoch_key
from agent.state_dir import (
    DIR_MODE,
    dir_mode,
    ensure_dir,
    make_state_dir,
    remove_created,
    set_owner_mode,
)

__all__ = [
    "CHECKPOINT",
    "RECOVERED",
    "RESERVED_TYPES",
    "SEGMENT_NAME",
    "SEGMENT_PRUNED",
    "SEGMENT_START",
    "EvidenceStore",
    "FsyncPolicy",
    "KeyState",
    "PrunedSegment",
    "Recovered",
    "SegmentLink",
    "SegmentStart",
    "SegmentsPruned",
    "StoreCorruptError",
    "StoreLockedError",
    "key_path",
    "segment_files",
    "segment_name",
]

SEGMENT_START: Final = "segment.start"
CHECKPOINT: Final = "checkpoint"
SEGMENT_PRUNED: Final = "segment.pruned"
RECOVERED: Final = "recovered"
RESERVED_TYPES: Final = frozenset({SEGMENT_START, CHECKPOINT, SEGMENT_PRUNED, RECOVERED})
"""Record types only the store writes: a caller forging them could fake structure."""

FsyncPolicy: TypeAlias = Literal["always", "batch", "never"]

SEGMENT_NAME: Final = re.compile(r"(\d{16})\.ndjson")
"""A segment file's name: its index in 16 digits."""
SECRET_MODE: Final = 0o600
"""Key files and the lock: the owner's alone, whatever the group."""
_TAIL_BLOCK: Final = 64 * 1024


class SegmentLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The last record of a segment: what the next segment's header links to."""

    index: Seq
    seq: Seq
    hash: Hex64


class SegmentStart(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``segment.start``: this segment's index and its predecessor's end.

    ``previous`` is None only for segment 0 of a log. ``started_ms`` is wall
    time in milliseconds (nanoseconds exceed JSON's safe integer range); age
    rotation counts from it, also after a restart.
    """

    index: Seq
    previous: SegmentLink | None
    started_ms: Seq


class PrunedSegment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One segment deleted by retention: what it held, so the gap is explained."""

    index: Seq
    first_seq: Seq
    last_seq: Seq
    last_hash: Hex64
    bytes: Seq


class SegmentsPruned(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``segment.pruned``: the segments deleted (oldest first)."""

    segments: list[PrunedSegment]


class Recovered(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``recovered``: a torn tail found at open and moved aside.

    ``seal``: if the torn bytes were a complete checkpoint whose newline never
    made it to disk, its seal, carried over. The key file has already
    ratcheted past that epoch, so without this the seals would show a gap.
    """

    segment: str
    offset: Seq
    length: Seq
    blake3: Hex64
    kept_as: str
    seal: Seal | None = None


class KeyState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Contents of ``keys/seal.key``: the sealer's current epoch, key and last MAC."""

    epoch: Seq
    key: Hex64
    prev_seal: Hex64


class StoreCorruptError(Exception):
    """The log on disk is damaged in a way a crash cannot explain; the store won't write.

    A crash tears at most the last line. A bad line before the last one
    means something else changed the file: run the verifier, don't paper
    over it with new records.
    """


class StoreLockedError(Exception):
    """Another process holds the store's lock: two writers would fork the chain."""


def _check_policy(fsync: str | None, **positive: float) -> None:
    """Refuse an unknown fsync policy (None: none given) or a size, age or
    count that is not above 0."""
    if fsync is not None and fsync not in get_args(FsyncPolicy):
        raise ValueError(f"fsync must be one of always, batch, never; got {fsync!r}")
    for name, value in positive.items():
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def segment_name(index: int) -> str:
    """File name of segment ``index``: 16 digits, so names sort like indexes."""
    return f"{index:016d}.ndjson"


def segment_files(segments_dir: Path) -> list[tuple[int, Path]]:
    """The segment files in ``segments_dir`` as ``(index, path)``, oldest first."""
    found: list[tuple[int, Path]] = []
    if not segments_dir.is_dir():
        return found
    for entry in segments_dir.iterdir():
        match = SEGMENT_NAME.fullmatch(entry.name)
        if match is not None and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def key_path(state_dir: Path | str) -> Path:
    """Where the sealing key of ``state_dir`` lives."""
    return Path(state_dir) / "keys" / "seal.key"


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
        checkpoint_every_records: int = 1000,
        checkpoint_every_s: float = 900,
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
        _check_policy(None, checkpoint_every_s=checkpoint_every_s)
        self.configure(
            fsync=fsync,
            segment_max_bytes=segment_max_bytes,
            segment_max_age_s=segment_max_age_s,
            retain_max_bytes=retain_max_bytes,
            checkpoint_every_records=checkpoint_every_records,
        )
        self._dir = Path(state_dir)
        self._segments_dir = self._dir / "segments"
        self._checkpoint_every_ns = int(checkpoint_every_s * 1_000_000_000)
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
        self._file_mode = SECRET_MODE if group is None else 0o640
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

    @staticmethod
    def keygen(state_dir: Path | str, *, publish: Callable[[str], None] | None = None) -> str:
        """Create the initial sealing key in ``state_dir``; return the verification key text.

        The returned ``thk1-...`` text is the only copy of epoch 0's key once
        the store has sealed once: store it off the host. Refuses
        (:class:`FileExistsError`) if a key already exists, since replacing it
        would orphan the verification key already handed out.

        The state directory and ``keys/`` are made if missing (parents
        0755, as :func:`~agent.state_dir.make_state_dir`). On any failure
        nothing is left behind: no key file, empty or partial, and none of
        the directories made here. ``publish`` is given the verification key
        text once the key is in place; if it raises (the key could not be
        printed), the key is removed again: a sealing key whose
        verification key nobody has is worse than none.

        Raises:
            FileExistsError: there is a key already.
            StateDirError: the state directory cannot be made.
            OSError: the key cannot be written.
        """
        path = key_path(state_dir)
        # No API group known here: a log directory shared with one keeps it.
        created = make_state_dir(state_dir, keep_group=True)
        made_keys = linked = False
        tmp: Path | None = None
        try:
            made_keys = ensure_dir(path.parent, DIR_MODE)
            if os.path.lexists(path):
                raise FileExistsError(f"{path}: a seal key already exists; refusing to replace it")
            initial = keygen()
            state = KeyState(epoch=0, key=initial.hex(), prev_seal=ZERO_HASH)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
            _write_synced(tmp, canonical(state) + b"\n", SECRET_MODE, exclusive=True)
            os.link(tmp, path)  # fails if a key appeared meanwhile: never overwrite
            linked = True
            tmp.unlink()
            tmp = None
            _fsync_dir(path.parent)
            text = encode_key(initial)
            if publish is not None:
                publish(text)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if linked:
                with contextlib.suppress(OSError):
                    path.unlink()
            if made_keys:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            remove_created(created)
            raise
        return text

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
            checkpoint_every_records=checkpoint_every_records,
        )
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
        self._maybe_roll()
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
        _, line = self._writer.append_body(type, body)
        self._buffer.append(line)
        self._segment_bytes += len(line)
        self._since_checkpoint += 1
        self._maybe_roll()
        if self._fsync == "always":
            self.commit()
        return seq

    def append_many(self, items: Iterable[tuple[str, object]]) -> list[ChainRecord]:
        """Append ``(type, body)`` pairs, then commit once."""
        records = [self.append(type, body) for type, body in items]
        self.commit()
        return records

    def commit(self) -> None:
        """Write and flush the buffered records; fsync unless the policy is ``"never"``."""
        self._check_open()
        self._flush(sync=self._fsync != "never")

    def tick(self) -> None:
        """Write a checkpoint or rotate if one is due by time; call it periodically when idle."""
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

    def _maybe_roll(self) -> None:
        now = self._clock()
        if (
            self._sealer is not None
            and self._since_checkpoint
            and (
                self._since_checkpoint >= self._checkpoint_every_records
                or now - self._last_checkpoint_ns >= self._checkpoint_every_ns
            )
        ):
            self._checkpoint()
        age_ms = now // 1_000_000 - self._segment_started_ms
        if self._segment_bytes >= self._segment_max_bytes or age_ms >= self._segment_max_age_ms:
            self._rotate()

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
        state = KeyState(
            epoch=self._sealer.epoch,
            key=self._sealer.export_key().hex(),
            prev_seal=self._sealer.prev_seal,
        )
        path = key_path(self._dir)
        tmp = path.with_name(path.name + ".new")
        _write_synced(tmp, canonical(state) + b"\n", SECRET_MODE)
        os.replace(tmp, path)  # the old key's file is gone with the rename
        _fsync_dir(path.parent)

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
        _fsync_dir(self._segments_dir)

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
        _fsync_dir(self._segments_dir)

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
            _set_file_mode(path, self._file_mode, self._group)
        recovered = self._dir / "recovered"
        if recovered.is_dir():
            ensure_dir(recovered, self._dir_mode, self._group)
            for path in recovered.iterdir():
                _set_file_mode(path, self._file_mode, self._group)
        keys = key_path(self._dir).parent
        if keys.is_dir():
            ensure_dir(keys, DIR_MODE)
            for path in keys.iterdir():
                _set_file_mode(path, SECRET_MODE, None)

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
        _fsync_dir(self._segments_dir)

    def _recover(
        self, segments: list[tuple[int, Path]]
    ) -> tuple[Seal | None, tuple[int, SegmentsPruned] | None]:
        """Check the last segment, cut off a torn tail, resume the chain there.

        Returns the last seal found in the last segment, for the sealer, and
        the seq and body of a ``segment.pruned`` record after it, if any (only
        the last segment can hold one: rotation seals first). Only the last
        line may be bad (a crash tears at most what was being written);
        anything else is :class:`StoreCorruptError`.
        """
        index, path = segments[-1]
        data = path.read_bytes()
        pieces = _split_lines(data)
        verifier: ChainVerifier | None = None
        torn_at: int | None = None
        first: ChainRecord | None = None
        last_seal: Seal | None = None
        unsealed_pruning: tuple[int, SegmentsPruned] | None = None
        for number, (offset, piece) in enumerate(pieces):
            is_last = number == len(pieces) - 1
            if not piece.endswith(b"\n"):
                torn_at = offset
                break
            if verifier is None:
                first = _try_record(piece)
                genesis = None if first is None or first.seq == 0 else (first.seq - 1, first.prev)
                verifier = ChainVerifier(genesis=genesis)
            if verifier.feed_line(piece) is not None:
                if not is_last:
                    raise StoreCorruptError(
                        f"{path}: line {number + 1} is not a valid next record, and it is not "
                        "the last line: not a crash; verify the log before writing to it"
                    )
                torn_at = offset
                break
            record = msgspec.json.decode(piece, type=ChainRecord)
            if number == 0 and record.type != SEGMENT_START:
                raise StoreCorruptError(f"{path}: does not begin with a {SEGMENT_START} record")
            if record.type == CHECKPOINT:
                last_seal = msgspec.convert(record.body, Seal)
                unsealed_pruning = None
            elif record.type == SEGMENT_PRUNED:
                try:
                    unsealed_pruning = (record.seq, msgspec.convert(record.body, SegmentsPruned))
                except msgspec.ValidationError:
                    raise StoreCorruptError(
                        f"{path}: line {number + 1}: a segment.pruned body of the wrong shape"
                    ) from None

        torn: tuple[int, bytes] | None = None
        if torn_at is not None:
            torn = (torn_at, data[torn_at:])
            kept = self._dir / "recovered" / f"{path.stem}-{torn_at}.torn"
            ensure_dir(kept.parent, self._dir_mode, self._group)
            _write_synced(kept, torn[1], self._file_mode, self._group)
            with open(path, "r+b") as handle:
                handle.truncate(torn_at)
                os.fsync(handle.fileno())

        head = verifier.head if verifier is not None else None
        if head is None:
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
            assert first is not None
            self._writer = ChainWriter(head=head)
            self._file = self._open_segment(path)
            self._segment_index = index
            self._segment_bytes = self._file.seek(0, os.SEEK_END)
            self._segment_first_seq = first.seq
            start = msgspec.convert(first.body, SegmentStart)
            self._segment_started_ms = start.started_ms

        if torn is not None:
            offset, raw = torn
            lost_seal = _lost_seal(raw, self._writer.head)
            self._append_record(
                RECOVERED,
                Recovered(
                    segment=path.name,
                    offset=offset,
                    length=len(raw),
                    blake3=blake3.blake3(raw).hexdigest(),
                    kept_as=f"recovered/{path.stem}-{offset}.torn",
                    seal=lost_seal,
                ),
            )
            self._flush(sync=True)
            if lost_seal is not None:
                last_seal, unsealed_pruning = lost_seal, None
        return last_seal, unsealed_pruning

    def _open_sealer(self, last_seal: Seal | None) -> None:
        """Load the key file; if the log holds seals it hasn't caught up with, ratchet on."""
        path = key_path(self._dir)
        if not path.exists():
            return
        state = msgspec.json.decode(path.read_bytes(), type=KeyState)
        key = bytes.fromhex(state.key)
        if len(key) != KEY_SIZE:
            raise StoreCorruptError(f"{path}: not a {KEY_SIZE}-byte key")
        epoch, prev_seal = state.epoch, state.prev_seal
        if last_seal is not None and last_seal.epoch >= epoch:
            for _ in range(last_seal.epoch + 1 - epoch):
                key = next_epoch_key(key)
            epoch, prev_seal = last_seal.epoch + 1, last_seal.mac
        self._sealer = Sealer(key, epoch=epoch, prev_seal=prev_seal)
        if epoch != state.epoch:
            self._persist_key()


def _lost_seal(raw: bytes, head: Head | None) -> Seal | None:
    """The seal in ``raw`` if it is a whole, valid checkpoint record over ``head``."""
    record = _try_record(raw.rstrip(b"\n"))
    if record is None or head is None or record.type != CHECKPOINT:
        return None
    if record.prev != head[1] or record.seq != head[0] + 1 or record_hash(record) != record.hash:
        return None
    try:
        seal = msgspec.convert(record.body, Seal)
    except msgspec.ValidationError:
        return None
    return seal if seal.head == head else None


def _split_lines(data: bytes) -> list[tuple[int, bytes]]:
    """``(offset, line)`` pairs; each line keeps its ``\\n``, a torn last one has none."""
    pieces: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline + 1
        pieces.append((pos, data[pos:end]))
        pos = end
    return pieces


def _try_record(line: bytes) -> ChainRecord | None:
    try:
        return msgspec.json.decode(line, type=ChainRecord)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _first_record(path: Path) -> ChainRecord:
    with open(path, "rb") as handle:
        line = handle.readline()
    record = _try_record(line)
    if record is None:
        raise StoreCorruptError(f"{path}: the first line is not a chain record")
    return record


def _last_record(path: Path) -> ChainRecord:
    """The last complete line of ``path``, read backwards from the end in blocks."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        tail = b""
        pos = end
        while pos > 0:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            handle.seek(pos)
            tail = handle.read(step) + tail
            body = tail[:-1] if tail.endswith(b"\n") else tail
            cut = body.rfind(b"\n")
            if cut >= 0:
                tail = body[cut + 1 :]
                break
        line = tail.rstrip(b"\n")
    record = _try_record(line)
    if record is None:
        raise StoreCorruptError(f"{path}: the last line is not a chain record")
    return record


def _last_seal(paths: Iterable[Path]) -> Seal | None:
    """The newest checkpoint's seal in ``paths`` (newest segment first), or None."""
    for path in paths:
        found: Seal | None = None
        with open(path, "rb") as handle:
            for line in handle:
                record = _try_record(line)
                if record is not None and record.type == CHECKPOINT:
                    found = msgspec.convert(record.body, Seal)
        if found is not None:
            return found
    return None


def _describe_segment(index: int, path: Path, size: int) -> PrunedSegment:
    first, last = _first_record(path), _last_record(path)
    return PrunedSegment(
        index=index, first_seq=first.seq, last_seq=last.seq, last_hash=last.hash, bytes=size
    )


def _set_file_mode(path: Path, mode: int, gid: int | None) -> None:
    """Set a file's mode (and group) without following a symlink.

    Raises:
        StoreCorruptError: it is a symlink or not a regular file: not
            something this store wrote.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StoreCorruptError(f"{path}: is a symlink, not a file this store wrote") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreCorruptError(f"{path}: is not a regular file")
        set_owner_mode(fd, mode, gid)
    finally:
        os.close(fd)


def _write_synced(
    path: Path, data: bytes, mode: int, gid: int | None = None, *, exclusive: bool = False
) -> None:
    """Write ``path`` whole and fsync it, mode exactly ``mode``; ``exclusive``:
    the file must not exist yet (``O_EXCL``). Never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, mode)
    try:
        set_owner_mode(fd, mode, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse directory fsync
            os.fsync(fd)
    finally:
        os.close(fd)
