"""Verifying an evidence log: a state directory, segment files, a stream of lines, a bundle.

One :class:`LogVerifier` is fed every line in order. It runs the hash chain
through :class:`~agent.evidence.chain.ChainVerifier` and adds what only the
store's format shows:

- Segments. Each segment's ``segment.start`` header must name the index one
  past the previous segment's and its last ``(seq, hash)``; a file's name
  must match the index in its header. A whole segment removed shows as a seq
  gap at its first seq (the chain) and a header naming a missing predecessor.
- Seals. Each ``checkpoint`` record's seal must cover the record just before
  it. With ``key``, every seal goes through
  :class:`~agent.evidence.seal.SealVerifier` (epochs consecutive, MACs of
  each epoch's key, seals linked): a chain rewritten with every hash
  recomputed, or a seal replayed from another position, fails there. A key
  given for a log with no seals at all is a failure too (seals stripped).
  Without a key, ``seals_checked`` is False: only the chain was checked, and
  anyone can recompute a chain.
- Pruning. Verification of a pruned log starts at the first retained
  segment's header: its ``previous`` becomes the chain's genesis, and a
  ``segment.pruned`` record later in the log must name that predecessor with
  the same last ``(seq, hash)``; otherwise the missing history is reported as
  a gap. The report's ``history_from`` says where the retained history
  starts; seals are then checked from the first retained seal's epoch on.
  With ``key``, every ``segment.pruned`` record must be covered by a
  verified seal (the store seals right after writing one, before deleting
  anything): records after the last seal are only chained, anyone on the
  host can append them, and a pruning record there could explain away any
  deleted history. Not for a partial log, whose start is taken on trust
  anyway.

Where a break's seq points (``first_break.seq``): for chain breaks, as
:class:`~agent.evidence.chain.Break` says; for a seal failure, the first seq
after the last head a verified seal vouches for (the first seq of the log if
none), because a consistent rewrite can have started anywhere after it;
for an unsealed ``segment.pruned`` record, that record's seq.

Messages: a break's ``reason`` and the report's ``where`` are printed by
``evidence verify``; the file names in them (a bundle's member names
included) and the text a parser quotes from a record are the log's bytes,
so they go through :func:`~agent.errors.shown` (a newline or an escape
sequence cannot draw a fake ``OK:`` line).

What is not caught: a log cut after its last seal, unless ``expect_head``
(a head remembered from earlier) is given; a whole log deleted.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final, TypeAlias, TypeVar

import blake3
import msgspec

from agent.errors import shown
from agent.evidence.bundle import BUNDLE_FORMAT, MANIFEST, BundleError, BundleManifest
from agent.evidence.chain import ZERO_HASH, Break, BreakKind, ChainRecord, ChainVerifier, Head
from agent.evidence.layout import (
    CHECKPOINT,
    RECOVERED,
    SEGMENT_NAME,
    SEGMENT_PRUNED,
    SEGMENT_START,
    PrunedSegment,
    Recovered,
    SegmentsPruned,
    SegmentStart,
    segment_files,
)
from agent.evidence.seal import Seal, SealError, SealVerifier

Progress: TypeAlias = Callable[[int], None]
"""A progress feed: called with a number of bytes just processed."""

_PROGRESS_STEP: Final = 1 << 20

__all__ = [
    "LogVerifier",
    "VerifyInputError",
    "VerifyReport",
    "verify_bundle",
    "verify_extent",
    "verify_store",
    "verify_stream",
]

_TAR_MAGIC_OFFSET: Final = 257
_T = TypeVar("_T")


class VerifyInputError(ValueError):
    """The thing to verify is not a log at all (no such file, an empty directory)."""


class VerifyReport(msgspec.Struct, frozen=True):
    """The outcome of verifying a log.

    ``ok`` is True only if nothing broke. ``records`` counts the records
    verified before the first break (all of them when ``ok``).
    ``where`` names the file and line of the break when files were read.
    ``seals`` counts checkpoint records seen; ``seals_checked`` says whether
    their MACs were verified (a key was given). ``sealed_head`` is the last
    head a verified seal vouches for; records after it are chained only.
    ``history_from`` is the first seq present: 0 for a complete log, more
    when older segments were pruned (then ``pruned`` lists the
    ``segment.pruned`` entries found). ``recovered`` counts crash recoveries.
    """

    ok: bool
    records: int
    first_break: Break | None
    where: str | None
    seals_checked: bool
    seals: int
    sealed_head: tuple[int, str] | None
    head: tuple[int, str] | None
    history_from: int | None
    pruned: list[PrunedSegment]
    recovered: int

    def summary(self) -> str:
        """A few lines for a person: the verdict, the first break, what was not checked."""
        lines: list[str] = []
        if self.first_break is None:
            head = f"{self.head[0]}:{self.head[1]}" if self.head else "none"
            lines.append(f"OK: {self.records} records, head {head}  (SEQ:HASH, for --expect-head)")
        else:
            where = f" ({self.where})" if self.where else ""
            brk = self.first_break
            lines.append(f"BROKEN at seq {brk.seq}{where}: {brk.kind}: {brk.reason}")
        if self.seals_checked:
            lines.append(f"seals: {self.seals} checked")
            sealed_to = self.sealed_head[0] if self.sealed_head else None
            last = self.head[0] if self.head else None
            # The checkpoint record itself follows the head it seals.
            after = 0 if last is None else last - (sealed_to if sealed_to is not None else -1) - 1
            if after > 0:
                upto = f"through seq {sealed_to}" if sealed_to is not None else "nowhere"
                lines.append(
                    f"WARNING: sealed {upto}; the {after} records after it are NOT sealed"
                    " (anyone on the host could have written them)"
                )
        else:
            lines.append(f"seals NOT checked (no key given): {self.seals} present, unverified")
        if self.history_from:
            lines.append(
                f"history before seq {self.history_from} not checked (pruned, or not included)"
            )
        if self.recovered:
            lines.append(f"{self.recovered} crash recoveries recorded")
        return "\n".join(lines)


class LogVerifier:
    """Verifies a log fed line by line, across segment files or a single stream.

    Call :meth:`start_file` before each file's lines when reading segment
    files (``index`` from the file name, or None if the name says nothing);
    for a stream, just feed lines: a ``segment.start`` record starts the
    next segment. ``partial=True`` accepts a log that starts mid-way (a
    bundle of a range, ``stream --from``): its first record, or its first
    header's ``previous``, is taken on trust as the starting point, and no
    ``segment.pruned`` record is asked for; ``history_from`` says where it
    starts.
    """

    def __init__(
        self,
        *,
        key: bytes | None = None,
        expect_head: Head | None = None,
        partial: bool = False,
    ) -> None:
        self._key = key
        self._expect_head = expect_head
        self._expect_seen = False
        self._partial = partial
        self._chain: ChainVerifier | None = None
        self._seals: SealVerifier | None = None
        self._seal_count = 0
        self._sealed_head: Head | None = None
        self._history_from: int | None = None
        self._needs_pruned: tuple[int, int, str] | None = None
        self._starts_late = False
        self._pruned: dict[int, PrunedSegment] = {}
        # The first segment.pruned record no verified seal covers yet: seq, file, line.
        self._unsealed_pruning: tuple[int, str | None, int] | None = None
        self._recovered = 0
        self._segment: int | None = None
        self._file: str | None = None
        self._file_index: int | None = None
        self._file_line = 0
        self._broken: Break | None = None
        self._where: str | None = None

    @property
    def broken(self) -> Break | None:
        """The first break so far."""
        return self._broken

    def start_file(self, name: str, index: int | None) -> None:
        """The next lines come from file ``name``, which must hold segment ``index``."""
        self._file = name
        self._file_index = index
        self._file_line = 0

    def feed_line(self, line: bytes) -> Break | None:
        """Check the next line; return the first break so far (None while good)."""
        if self._broken is not None:
            return self._broken
        self._file_line += 1
        record = _try_record(line)
        if self._chain is None:
            self._chain = ChainVerifier(genesis=self._genesis(record))
        before = self._chain.head
        found = self._chain.feed_line(line)
        if found is not None:
            return self._fail(found.seq, found.kind, found.reason)
        assert record is not None  # the chain verifier accepted it
        if self._history_from is None:
            self._history_from = record.seq
        self._check_structure(record, before)
        if self._broken is None and self._expect_head is not None:
            seq, digest = self._expect_head
            if record.seq == seq:
                self._expect_seen = True
                if record.hash != digest:
                    self._fail(
                        seq, "checkpoint", f"the hash at seq {seq} is not the expected head's hash"
                    )
        return self._broken

    def finish(self) -> VerifyReport:
        """Run the end-of-log checks and return the report."""
        if self._broken is None:
            self._check_end()
        chain = self._chain
        return VerifyReport(
            ok=self._broken is None,
            records=chain.verified if chain is not None else 0,
            first_break=self._broken,
            where=self._where,
            seals_checked=self._key is not None,
            seals=self._seal_count,
            sealed_head=self._sealed_head,
            head=chain.head if chain is not None else None,
            history_from=self._history_from,
            pruned=[self._pruned[i] for i in sorted(self._pruned)],
            recovered=self._recovered,
        )

    # --- internals ---------------------------------------------------------------

    def _genesis(self, record: ChainRecord | None) -> Head | None:
        """Where the chain starts: a pruned log's first header, or a partial stream's first record."""
        if record is None:
            return None
        if record.type == SEGMENT_START:
            start = _convert(record.body, SegmentStart)
            if start is not None and start.previous is not None:
                prev = start.previous
                if not self._partial:
                    self._needs_pruned = (prev.index, prev.seq, prev.hash)
                self._starts_late = True
                return (prev.seq, prev.hash)
        if self._partial and record.seq > 0 and record.prev != ZERO_HASH:
            self._starts_late = True
            return (record.seq - 1, record.prev)
        return None

    def _fail(self, seq: int | None, kind: BreakKind, reason: str) -> Break:
        line = self._file_line if self._file_line else None
        # The chain's reasons may quote a record's text (a parser's error).
        self._broken = Break(seq=seq, line=line, kind=kind, reason=shown(reason))
        if self._file is not None:
            self._where = f"{shown(self._file)} line {self._file_line}"
        elif line is not None:
            self._where = f"line {line}"
        else:
            self._where = "end of log"
        return self._broken

    def _check_structure(self, record: ChainRecord, before: Head | None) -> None:
        if self._file_index is not None and self._file_line == 1 and record.type != SEGMENT_START:
            self._fail(record.seq, "malformed", f"the file does not begin with {SEGMENT_START}")
            return
        if record.type == SEGMENT_START:
            self._check_header(record, before)
        elif record.type == CHECKPOINT:
            seal = _convert(record.body, Seal)
            if seal is None:
                self._fail(record.seq, "malformed", "a checkpoint body that is not a seal")
                return
            self._check_seal(seal, record.seq, before)
        elif record.type == SEGMENT_PRUNED:
            pruned = _convert(record.body, SegmentsPruned)
            if pruned is None:
                self._fail(record.seq, "malformed", "a segment.pruned body of the wrong shape")
                return
            for entry in pruned.segments:
                self._pruned[entry.index] = entry
            if self._unsealed_pruning is None:
                self._unsealed_pruning = (record.seq, self._file, self._file_line)
        elif record.type == RECOVERED:
            self._recovered += 1
            recovered = _convert(record.body, Recovered)
            if recovered is None:
                self._fail(record.seq, "malformed", "a recovered body of the wrong shape")
            elif recovered.seal is not None:
                self._check_seal(recovered.seal, record.seq, before)

    def _check_header(self, record: ChainRecord, before: Head | None) -> None:
        start = _convert(record.body, SegmentStart)
        if start is None:
            self._fail(record.seq, "malformed", "a segment.start body of the wrong shape")
            return
        if self._file_index is not None and self._file_line != 1:
            self._fail(record.seq, "link", "a segment.start record inside a segment file")
            return
        if self._file_index is not None and start.index != self._file_index:
            self._fail(
                record.seq,
                "link",
                f"the header says segment {start.index}, but the file is segment {self._file_index}",
            )
            return
        if before is not None:
            want_index = self._segment + 1 if self._segment is not None else None
            prev = start.previous
            if prev is None or (prev.seq, prev.hash) != before:
                self._fail(
                    record.seq,
                    "link",
                    "the header does not name the previous segment's last record",
                )
                return
            if want_index is not None and (
                start.index != want_index or prev.index != want_index - 1
            ):
                self._fail(
                    record.seq,
                    "link",
                    f"segment {start.index} follows segment {want_index - 1}: "
                    f"segment {want_index} is missing or out of order",
                )
                return
        self._segment = start.index

    def _check_seal(self, seal: Seal, at_seq: int, before: Head | None) -> None:
        """Check a seal found in the record at ``at_seq``; it must cover ``before``."""
        self._seal_count += 1
        if self._key is None:
            return
        not_vouched = self._sealed_head[0] + 1 if self._sealed_head else self._history_from
        if seal.epoch > at_seq:
            # Every epoch costs at least one record. A larger epoch is forged,
            # and deriving its key would take forever: refuse it up front.
            self._fail(
                at_seq, "checkpoint", f"seal epoch {seal.epoch} is beyond its position {at_seq}"
            )
            return
        if self._seals is None:
            late = self._starts_late
            self._seals = SealVerifier(
                self._key,
                epoch=seal.epoch if late else 0,
                prev_seal=seal.prev_seal if late else ZERO_HASH,
            )
        if before is None or seal.head != before:
            self._fail(
                not_vouched,
                "checkpoint",
                f"the seal in the record at seq {at_seq} covers seq {seal.seq}, not the record "
                "before it (replayed from another position, or the log was rewritten)",
            )
            return
        try:
            self._seals.feed(seal, log_hash=before[1])
        except SealError as exc:
            self._fail(
                not_vouched,
                "checkpoint",
                f"seal epoch {exc.epoch} failed: {exc.kind}: {exc.reason}",
            )
            return
        self._sealed_head = seal.head
        self._unsealed_pruning = None  # a seal covers every record before it

    def _check_end(self) -> None:
        self._file_line = 0
        self._file = None
        chain = self._chain
        head = chain.head if chain is not None else None
        if self._key is not None and not self._partial and self._unsealed_pruning is not None:
            seq, self._file, self._file_line = self._unsealed_pruning
            self._fail(
                seq,
                "checkpoint",
                "a segment.pruned record that no seal covers: anyone on the host could have "
                "written it to explain away deleted segments (if the daemon stopped before "
                "sealing it, its next start seals it)",
            )
            return
        if self._needs_pruned is not None:
            index, seq, digest = self._needs_pruned
            entry = self._pruned.get(index)
            if entry is None or (entry.last_seq, entry.last_hash) != (seq, digest):
                known = [e.last_seq for e in self._pruned.values() if e.index < index]
                missing_from = max(known) + 1 if known else 0
                self._fail(
                    missing_from,
                    "gap",
                    f"the log starts at segment {index + 1}, but no segment.pruned record "
                    f"says segment {index} (ending at seq {seq}) was pruned: history removed",
                )
                return
        if self._key is not None and head is not None and self._seal_count == 0:
            self._fail(
                self._history_from,
                "checkpoint",
                "a key was given but the log has no seals (written unsealed, or seals stripped)",
            )
            return
        if self._expect_head is not None and not self._expect_seen:
            seq, _ = self._expect_head
            if head is None or head[0] < seq:
                last = head[0] if head is not None else None
                self._fail(
                    last + 1 if last is not None else None,
                    "truncated",
                    f"the log ends at seq {last}, but the expected head is seq {seq} (cut short?)",
                )
            else:
                self._fail(
                    seq,
                    "checkpoint",
                    f"the expected head seq {seq} is before the retained history: not comparable",
                )


def verify_stream(
    lines: Iterable[bytes],
    *,
    key: bytes | None = None,
    expect_head: Head | None = None,
    partial: bool = False,
) -> VerifyReport:
    """Verify a log given as one stream of lines (``evidence stream | verify -``)."""
    verifier = LogVerifier(key=key, expect_head=expect_head, partial=partial)
    for line in lines:
        if verifier.feed_line(line) is not None:
            break
    return verifier.finish()


def verify_store(
    source: Path | str | Sequence[Path | str],
    *,
    key: bytes | None = None,
    expect_head: Head | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify a state directory, a segments directory, one file, or a list of segment files.

    A directory: its ``segments/`` (or itself), each file checked against
    the index in its name. One file: a bundle (by its tar header, see
    :func:`verify_bundle`) or NDJSON lines as a stream.
    Raises :class:`VerifyInputError` when there is nothing to verify.
    ``progress``, when given, is called with the bytes of segment files read
    since its last call (every MiB or so, and at each file's end): a
    progress bar's feed; never for a single stream or a bundle.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            segdir = path / "segments" if (path / "segments").is_dir() else path
            files = [p for _, p in segment_files(segdir)]
            if not files:
                raise VerifyInputError(f"{shown(path)}: no segment files (NNNNNNNNNNNNNNNN.ndjson)")
            return _verify_files(files, key=key, expect_head=expect_head, progress=progress)
        if not path.is_file():
            raise VerifyInputError(f"{shown(path)}: no such file or directory")
        if _looks_like_tar(path):
            return verify_bundle(path, key=key, expect_head=expect_head)
        with open(path, "rb") as handle:
            return verify_stream(handle, key=key, expect_head=expect_head)
    return _verify_files(
        [Path(p) for p in source], key=key, expect_head=expect_head, progress=progress
    )


def verify_extent(extent: Sequence[tuple[Path, int]], *, key: bytes | None = None) -> VerifyReport:
    """Verify the first ``size`` bytes of each segment file, in order.

    For a log that is still being written: ``extent`` comes from
    :meth:`agent.evidence.store.EvidenceStore.extent`, taken between two
    batches, so records appended while this runs are not half-read as a
    torn tail. A segment pruned meanwhile makes the result a break (as it
    would for any missing segment); the caller verifies again.
    """
    if not extent:
        raise VerifyInputError("no segment files to verify")
    return _verify_files([path for path, _ in extent], key=key, expect_head=None,
                         sizes=[size for _, size in extent])  # fmt: skip


def verify_bundle(
    path: Path | str,
    *,
    key: bytes | None = None,
    expect_head: Head | None = None,
) -> VerifyReport:
    """Check a bundle's members against its manifest, then verify its records.

    Raises :class:`BundleError` (one line, naming the member) for a bundle
    that is truncated, not a tar, lacks or has an unreadable manifest, or
    has a member missing, extra, or with another size or hash. A bundle that
    reads fine but whose records are broken gives a report with ``ok`` False.
    The bundle may start mid-log (``history_from`` says where).
    """
    contents = _read_members(Path(path))
    where = shown(path)
    raw_manifest = contents.pop(MANIFEST, None)
    if raw_manifest is None:
        raise BundleError(f"{where}: no {MANIFEST} in the bundle", MANIFEST)
    try:
        manifest = msgspec.json.decode(raw_manifest, type=BundleManifest)
    except msgspec.DecodeError as exc:
        # msgspec quotes the bundle's own text (an unknown key, say).
        raise BundleError(
            f"{where}: {MANIFEST} is not a valid manifest: {shown(str(exc))}", MANIFEST
        ) from None
    if manifest.format != BUNDLE_FORMAT:
        raise BundleError(f"{where}: unknown bundle format {shown(manifest.format)}", MANIFEST)
    listed = {member.path for member in manifest.members}
    for extra in sorted(set(contents) - listed):
        raise BundleError(f"{where}: member {shown(extra)} is not listed in the manifest", extra)
    verifier = LogVerifier(key=key, expect_head=expect_head, partial=True)
    for member in sorted(manifest.members, key=lambda m: m.path):
        data = contents.get(member.path)
        named = shown(member.path)
        if data is None:
            raise BundleError(f"{where}: member {named} is missing", member.path)
        if len(data) != member.size or blake3.blake3(data).hexdigest() != member.blake3:
            raise BundleError(
                f"{where}: member {named} does not match its manifest hash (altered)",
                member.path,
            )
        name = member.path.rsplit("/", 1)[-1]
        match = SEGMENT_NAME.fullmatch(name)
        if match is None:
            raise BundleError(f"{where}: member {named} is not a segment file", member.path)
        verifier.start_file(member.path, int(match.group(1)))
        for line in data.splitlines(keepends=True):
            if verifier.feed_line(line) is not None:
                return verifier.finish()
    report = verifier.finish()
    if report.ok and report.head != manifest.head:
        raise BundleError(
            f"{where}: {MANIFEST} names head seq {manifest.head[0]}, but the records end at "
            f"{report.head}",
            MANIFEST,
        )
    return report


def _verify_files(
    files: Sequence[Path],
    *,
    key: bytes | None,
    expect_head: Head | None,
    sizes: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    verifier = LogVerifier(key=key, expect_head=expect_head)
    for number, path in enumerate(files):
        match = _segment_index(path.name)
        verifier.start_file(path.name, match)
        unreported = 0
        with open(path, "rb") as handle:
            lines = handle if sizes is None else _lines_up_to(handle, sizes[number])
            for line in lines:
                if verifier.feed_line(line) is not None:
                    return verifier.finish()
                if progress is not None:
                    unreported += len(line)
                    if unreported >= _PROGRESS_STEP:
                        progress(unreported)
                        unreported = 0
        if progress is not None and unreported:
            progress(unreported)
    return verifier.finish()


def _lines_up_to(handle: IO[bytes], size: int) -> Iterator[bytes]:
    """The lines in the first ``size`` bytes, read one at a time (a segment
    can be 64 MiB; this keeps one line in memory, not the file)."""
    left = size
    while left > 0:
        line = handle.readline(left)
        if not line:
            return
        left -= len(line)
        yield line


def _segment_index(name: str) -> int | None:
    match = SEGMENT_NAME.fullmatch(name)
    return int(match.group(1)) if match is not None else None


def _looks_like_tar(path: Path) -> bool:
    if path.suffix == ".tar":
        return True
    with open(path, "rb") as handle:
        handle.seek(_TAR_MAGIC_OFFSET)
        return handle.read(5) == b"ustar"


def _try_record(line: bytes) -> ChainRecord | None:
    try:
        return msgspec.json.decode(line, type=ChainRecord)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _convert(body: object, kind: type[_T]) -> _T | None:
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError:
        return None


def _read_members(path: Path) -> dict[str, bytes]:
    """All regular members' bytes by name; tarfile's exceptions become :class:`BundleError`."""
    contents: dict[str, bytes] = {}
    current: str | None = None
    where = shown(path)
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                current = info.name
                if not info.isreg():
                    raise BundleError(
                        f"{where}: member {shown(info.name)} is not a regular file", info.name
                    )
                if info.name in contents:
                    raise BundleError(
                        f"{where}: member {shown(info.name)} appears twice", info.name
                    )
                handle = tar.extractfile(info)
                assert handle is not None  # regular files always have data
                contents[info.name] = handle.read()
                current = None
    except (tarfile.TarError, EOFError, OSError) as exc:
        member = f"member {shown(current)}: " if current else ""
        raise BundleError(
            f"{where}: {member}truncated or not a bundle ({shown(str(exc))})", current
        ) from None
    return contents
