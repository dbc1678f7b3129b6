"""Deterministic export bundles: a tar an auditor can take elsewhere and verify.

A bundle is an uncompressed ustar archive whose members are sorted by name,
with mtime 0, uid/gid 0, empty user/group names and mode 0644::

    manifest.json                       canonical JSON (:class:`BundleManifest`)
    segments/0000000000000003.ndjson    the segments covering the range

Which records: every segment holding a record in ``[from_seq, to_seq]``,
each from its ``segment.start`` header (so each member verifies on its own
terms), the last one cut after ``to_seq``. Records before ``from_seq`` in the
first segment are included: slicing there would leave a member without a
header. Nothing depends on the clock or on the records written after
``to_seq``, so exporting the same range twice gives the same bytes; without
``to_seq`` the range ends at the head at export time, which moves as the log
grows.

Every name a message quotes (the bundle's path, a member's name, a
manifest's path, a foreign parser's error text) goes through
:func:`~agent.errors.shown`: they are the bundle maker's bytes, and
``verify`` prints the message to a terminal, where a newline or an escape
sequence would draw a fake ``OK:`` line.

The manifest is not itself protected (whoever rewrites a member can rewrite
it too): it catches damage in transit and says what the bundle claims. The
records are what is verified, chain and seals:
:func:`agent.evidence.verify.verify_bundle` (this module writes bundles and
defines their format; it imports no verifier, so the two never import each
other).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Protocol

import blake3
import msgspec

from agent.evidence.canonical import canonical
from agent.evidence.chain import ChainRecord, Hex64, Seq
from agent.evidence.layout import CHECKPOINT, segment_files
from agent.evidence.seal import Seal

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "BundleError",
    "BundleManifest",
    "BundleMember",
    "ByteSink",
    "export_bundle",
    "tar_chunks",
]

BUNDLE_FORMAT: Final = "tracehound-bundle/1"
MANIFEST: Final = "manifest.json"


class BundleError(ValueError):
    """A bundle can't be exported or read; ``member`` names the culprit when there is one.

    The message is one line, meant for a person: ``verify`` prints it as
    is, so whatever it quotes from the bundle is escaped (:func:`shown`);
    ``member`` is the name as it is, for a program.
    """

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


class ByteSink(Protocol):
    """Where a bundle goes: anything that takes bytes and writes them all
    (a binary file, :class:`~agent.output_target.OutputStream`)."""

    def write(self, data: bytes, /) -> object: ...


class BundleMember(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One archive member as the manifest lists it."""

    path: str
    size: Seq
    blake3: Hex64


class BundleManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a bundle holds: members with hashes, the range, the head, the seals.

    ``from_seq``/``to_seq`` are the range asked for (None: open);
    ``first_seq``/``last_seq`` what the members actually hold.
    """

    format: str
    from_seq: Seq | None
    to_seq: Seq | None
    first_seq: Seq
    last_seq: Seq
    head: tuple[Seq, Hex64]
    checkpoints: list[Seal]
    members: list[BundleMember]


def export_bundle(
    state_dir: Path | str,
    out: ByteSink,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> BundleManifest:
    """Write the bundle of ``[from_seq, to_seq]`` to ``out``; return its manifest.

    Reads only complete lines, so a store being written meanwhile is fine.
    Raises :class:`BundleError` for an empty range or a ``to_seq`` past the
    head (that export could not be repeated identically); then nothing was
    written. Whole or not at all is the writer's to ensure (the commands
    use :func:`~agent.output_target.replace_output`): an error from
    ``out.write`` propagates, with part of the bundle written.
    ``progress``, when given, is called with each segment's size as it is
    read (a progress bar's feed).
    """
    if from_seq is not None and to_seq is not None and from_seq > to_seq:
        raise BundleError(f"from_seq {from_seq} is after to_seq {to_seq}")
    members: list[tuple[str, bytes]] = []
    checkpoints: list[Seal] = []
    first_seq: int | None = None
    last: ChainRecord | None = None
    head_seq: int | None = None
    for _, path in segment_files(Path(state_dir) / "segments"):
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # complete lines only
        if progress is not None:  # a bar's feed: one segment read
            progress(len(data))
        kept: list[bytes] = []
        seal_here: list[Seal] = []
        in_range = False
        for line in data.splitlines(keepends=True):
            record = msgspec.json.decode(line, type=ChainRecord)
            head_seq = record.seq
            if to_seq is not None and record.seq > to_seq:
                break
            kept.append(line)
            if from_seq is None or record.seq >= from_seq:
                in_range = True
            if record.type == CHECKPOINT:
                seal_here.append(msgspec.convert(record.body, Seal))
            last = record
        if in_range:
            members.append((f"segments/{path.name}", b"".join(kept)))
            checkpoints.extend(seal_here)
            if first_seq is None:
                first_seq = msgspec.json.decode(kept[0], type=ChainRecord).seq
        if to_seq is not None and head_seq is not None and head_seq > to_seq:
            break
    if first_seq is None or last is None:
        raise BundleError(f"no records in the range {from_seq}..{to_seq}")
    if to_seq is not None and last.seq < to_seq:
        raise BundleError(f"to_seq {to_seq} is past the log's head (seq {last.seq})")
    manifest = BundleManifest(
        format=BUNDLE_FORMAT,
        from_seq=from_seq,
        to_seq=to_seq,
        first_seq=first_seq,
        last_seq=last.seq,
        head=(last.seq, last.hash),
        checkpoints=checkpoints,
        members=[
            BundleMember(path=name, size=len(data), blake3=blake3.blake3(data).hexdigest())
            for name, data in members
        ],
    )
    files = sorted([(MANIFEST, canonical(manifest) + b"\n"), *members])
    for chunk in tar_chunks(files):
        out.write(chunk)
    return manifest


def tar_chunks(files: list[tuple[str, bytes]]) -> Iterator[bytes]:
    """The ustar archive of ``files`` (in the order given), in pieces: the
    bytes ``tarfile`` writes for them with :func:`_tarinfo`'s fields (header,
    data padded to 512 bytes, two zero blocks, zeros to a 10240-byte
    record), without seeking, so a pipe or device can take it."""
    size = 0
    for name, data in files:
        header = _tarinfo(name, len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        padding = -len(data) % tarfile.BLOCKSIZE
        yield header + data + tarfile.NUL * padding
        size += len(header) + len(data) + padding
    end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
    size += len(end)
    yield end + tarfile.NUL * (-size % tarfile.RECORDSIZE)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info
