"""The evidence log's on-disk layout: file names, modes, and the store's own record types.

Defined once here, for the writer (:mod:`.store`), its recovery
(:mod:`.recovery`), its key (:mod:`.keys`) and every reader (:mod:`.verify`,
:mod:`.bundle`, :mod:`.log_reader`), so none of them imports the writer.

Layout of a state directory::

    segments/0000000000000000.ndjson   one canonical ChainRecord per line
    segments/0000000000000001.ndjson
    keys/seal.key                      current sealing state, if sealed (KeyState)
    recovered/<segment>-<offset>.torn  bytes cut off a torn tail, kept aside
    lock                               flock'ed by the one writer

Modes: the state directory, ``segments/`` and ``recovered/`` are 0700 and
their files 0600; given a ``group``, 0750 and 0640 with that group, so its
members can read (verify, export) the log. ``keys/`` stays 0700 and its
files 0600 whatever the group: the sealing key lets whoever reads it forge
the seals to come. The lock stays 0600 too: anyone who can open it can
flock it and keep the writer out.

The chain (seq, prev) runs on across segments. Every segment starts with a
``segment.start`` record (:class:`SegmentStart`) naming its index and the
previous segment's last ``(seq, hash)``, so removing a whole segment leaves a
header that names a predecessor which is not there, and a seq jump.

Record types only the store writes (:data:`RESERVED_TYPES`):
``segment.start``, ``checkpoint`` (body: a :class:`~agent.evidence.seal.Seal`
over the record just before it), ``segment.pruned`` (:class:`SegmentsPruned`),
``recovered`` (:class:`Recovered`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import msgspec

from agent.evidence.chain import Hex64, Seq
from agent.evidence.seal import Seal

__all__ = [
    "CHECKPOINT",
    "FILE_MODE",
    "GROUP_FILE_MODE",
    "RECOVERED",
    "RESERVED_TYPES",
    "SECRET_MODE",
    "SEGMENT_NAME",
    "SEGMENT_PRUNED",
    "SEGMENT_START",
    "KeyState",
    "PrunedSegment",
    "Recovered",
    "SegmentLink",
    "SegmentStart",
    "SegmentsPruned",
    "StoreCorruptError",
    "file_mode",
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

SEGMENT_NAME: Final = re.compile(r"(\d{16})\.ndjson")
"""A segment file's name: its index in 16 digits."""

SECRET_MODE: Final = 0o600
"""Key files and the lock: the owner's alone, whatever the group."""
FILE_MODE: Final = 0o600
"""Segments and recovered tails without a reading group."""
GROUP_FILE_MODE: Final = 0o640
"""Segments and recovered tails readable by the log's group."""


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


def file_mode(group: int | None) -> int:
    """The mode of segments and recovered tails: 0640 with a reading group, else 0600."""
    return FILE_MODE if group is None else GROUP_FILE_MODE


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
