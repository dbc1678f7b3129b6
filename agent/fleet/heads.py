"""The log's head as the publisher announces it: newest record and newest seal.

:class:`HeadTracker` follows the newest segment's committed lines (like
:mod:`.outbox`, complete lines only) and keeps the last record's
``(seq, hash)`` and the last checkpoint's :class:`~agent.evidence.seal.Seal`.
At its first poll it reads the newest segment once from its start, and the
last line of the one before (the store seals before it rotates, so that
line is the previous segment's checkpoint when the log is sealed); after
that only what was committed since. Lines are canonical JSON with sorted
keys, so a checkpoint line ends in ``"type":"checkpoint"}`` and only those
and the block's last line are decoded.

A file shorter than where the tracker stood, or a newest segment older than
the one it followed, means the log was cut or replaced: it starts over on
the newest segment (the head it then reports may move backwards, which is
what the collector is there to notice).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

import msgspec

from agent.evidence.chain import Head
from agent.evidence.layout import CHECKPOINT, segment_files
from agent.evidence.seal import Seal
from agent.fleet.segment_read import read_block

__all__ = ["HeadTracker"]

_CHECKPOINT_END: Final = b'"type":"' + CHECKPOINT.encode() + b'"}'


class _SeqHash(msgspec.Struct):
    seq: int
    hash: str


class _Checkpoint(msgspec.Struct):
    body: Seal


_SEQ_HASH: Final = msgspec.json.Decoder(_SeqHash)
_CHECKPOINT: Final = msgspec.json.Decoder(_Checkpoint)


class HeadTracker:
    """The newest committed record and seal of a state directory's log."""

    def __init__(self, state_dir: Path) -> None:
        self._segments = state_dir / "segments"
        self._index: int | None = None
        self._offset = 0
        #: ``(seq, hash)`` of the newest committed record (None: no record yet).
        self.head: Head | None = None
        #: The newest checkpoint's seal (None: none seen, or the log is not sealed).
        self.seal: Seal | None = None

    def poll(self) -> Head | None:
        """Read what was committed since the last poll; the head.

        Raises:
            OSError: a segment cannot be read (the caller tries again later).
        """
        segments = segment_files(self._segments)
        if not segments:
            return self.head
        indexes = [index for index, _ in segments]
        if self._index is None or self._index > indexes[-1] or self._index < indexes[0]:
            self._start(segments)
        while True:
            assert self._index is not None
            if self._index not in indexes:  # pruned? only older ones are: start over
                self._start(segments)
            path = segments[indexes.index(self._index)][1]
            block = read_block(path, self._offset)
            if block is None or block.size < self._offset:
                self._start(segments)
                path = segments[-1][1]
                block = read_block(path, 0)
                if block is None:
                    return self.head
            self._feed(block.data)
            self._offset += len(block.data)
            if block.data:
                continue
            newer = [index for index in indexes if index > self._index]
            if not newer:
                return self.head
            self._index, self._offset = newer[0], 0

    def _start(self, segments: list[tuple[int, Path]]) -> None:
        self._index, self._offset = segments[-1][0], 0
        self.head = None
        self.seal = None
        if len(segments) >= 2:
            last = _last_line(segments[-2][1])
            if last is not None:
                self._feed(last + b"\n")

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        start = 0
        while (hit := data.find(_CHECKPOINT_END + b"\n", start)) >= 0:
            line_start = data.rfind(b"\n", 0, hit) + 1
            start = hit + len(_CHECKPOINT_END) + 1
            # not a store checkpoint if it does not decode: the verifier's to report
            with contextlib.suppress(msgspec.DecodeError):
                self.seal = _CHECKPOINT.decode(data[line_start : start - 1]).body
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            line = _SEQ_HASH.decode(data[last_start:-1])
        except msgspec.DecodeError:
            return
        self.head = (line.seq, line.hash)


def _last_line(path: Path) -> bytes | None:
    """The last complete line of ``path`` (no ``\\n``), read from its end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        want = 64 << 10
        while True:
            start = max(0, size - want)
            data = os.pread(fd, size - start, start)
            end = data.rfind(b"\n")
            if end < 0:
                return None
            begin = data.rfind(b"\n", 0, end)
            if begin >= 0 or start == 0:
                return data[begin + 1 : end]
            want *= 4
    finally:
        os.close(fd)
