"""The evidence hash chain: NDJSON records, each bound to the one before it.

A log is one JSON object per line, in canonical form (:mod:`.canonical`)::

    {"body":...,"hash":"<64 hex>","prev":"<64 hex>","seq":7,"type":"exec"}

- ``seq``: consecutive integers, from 0 or any start;
- ``prev``: the previous record's ``hash``; :data:`ZERO_HASH` for the first
  record of a log (unless the log continues another: see ``genesis``);
- ``hash``: blake3 of the canonical form of the record *without* ``hash``;
- ``type``: what kind of evidence; ``body``: any JSON value canonical accepts.

Changing, removing, inserting or reordering a record breaks a hash or a link
that a verifier recomputes. What a chain alone cannot show: a log rewritten
from the change onward with every hash recomputed (anyone can compute blake3),
or a log whose tail was cut, since the shorter log is still a valid chain.
Those need a head known from elsewhere: an expected head given to
:meth:`ChainVerifier.finish`, or checkpoints from verified seals (:mod:`.seal`).

Both classes are sans-I/O: the writer hands back the bytes to write and the
verifier takes the bytes read; neither touches a file.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, TypeAlias

import blake3
import msgspec

from agent.evidence.canonical import MAX_SAFE_INTEGER, CanonicalError, canonical

__all__ = [
    "ZERO_HASH",
    "Break",
    "BreakKind",
    "ChainRecord",
    "ChainVerifier",
    "ChainWriter",
    "Head",
    "Hex64",
    "Seq",
    "check_hex64",
    "check_seq",
    "record_hash",
    "verify_lines",
]

ZERO_HASH: Final = "0" * 64
"""The ``prev`` of a log's first record: no record came before it."""

Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
"""A 32-byte digest as 64 lowercase hex digits (the only form written)."""

Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INTEGER)]
"""A sequence number: non-negative and exact in every JSON parser."""

_HEX64: Final = re.compile("[0-9a-f]{64}")
_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_hex: Final = binascii.b2a_hex
_TYPES_KEPT: Final = 256  # record types whose JSON a writer keeps (tracehound writes ~30)

Head: TypeAlias = tuple[int, str]
"""A position in a chain: ``(seq, hash)`` of one record."""


class ChainRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One record of the chain, as it is on disk.

    Decoding a line into this type checks the shape (field names and types,
    hex digests); it does not check the hash or the links: that is the
    verifier's work.
    """

    seq: Seq
    prev: Hex64
    hash: Hex64
    type: Annotated[str, msgspec.Meta(min_length=1)]
    body: Any


def record_hash(fields: Mapping[str, object] | ChainRecord) -> str:
    """Return the hash a record must carry: blake3 of its canonical form minus ``hash``.

    ``fields`` is a record as a mapping (a ``hash`` key, if present, is left
    out) or a :class:`ChainRecord`. Raises :class:`CanonicalError` if a field
    has no canonical form (a float in the body, say).
    """
    if isinstance(fields, ChainRecord):
        unhashed: dict[str, object] = {
            "seq": fields.seq,
            "prev": fields.prev,
            "type": fields.type,
            "body": fields.body,
        }
    else:
        unhashed = {key: value for key, value in fields.items() if key != "hash"}
    return blake3.blake3(canonical(unhashed)).hexdigest()


class ChainWriter:
    """Builds the next records of a chain; the caller writes the lines.

    Start a new log with ``ChainWriter()`` (first seq 0, or ``start_seq``), or
    resume one with ``ChainWriter(head=(seq, hash))`` of its last durable
    record.

    What can go wrong: :meth:`append` advances the head as soon as it returns.
    If the caller then fails to write the line, the writer is ahead of the
    file, and the next line written would leave a gap that verifiers report.
    After a failed write, make a new writer from the file's real last record.
    """

    def __init__(self, head: Head | None = None, *, start_seq: int = 0) -> None:
        #: The seq the next :meth:`append` will use. Read it, never set it (a
        #: plain attribute, not a property: the store reads it per record).
        self.next_seq: int
        if head is not None:
            seq, digest = head
            check_seq(seq, "head seq")
            check_hex64(digest, "head hash")
            self.next_seq = seq + 1
            self._prev = digest.encode()
        else:
            check_seq(start_seq, "start_seq")
            self.next_seq = start_seq
            self._prev = ZERO_HASH.encode()
        self._started = head is not None  # is there a head (a record, or one resumed from)?
        self._type_json: dict[str, bytes] = {}  # each type's JSON string, checked once
        hasher = blake3.blake3()  # reset per record: cheaper than a new one
        self._hasher = (hasher.reset, hasher.update, hasher.digest)

    @property
    def head(self) -> Head | None:
        """``(seq, hash)`` of the last record appended (or resumed from); None if none."""
        return (self.next_seq - 1, self._prev.decode()) if self._started else None

    def append(self, type: str, body: object) -> tuple[ChainRecord, bytes]:
        """Make the next record; return it and its line (canonical JSON + ``b"\\n"``).

        ``body`` may be any value :func:`canonical` accepts, msgspec Structs
        included; the record holds its plain-JSON form, the same value a
        reader decodes. Raises :class:`CanonicalError` (for ``body``, with a
        path like ``$.body.x``) or :class:`ValueError` (empty ``type``, seq
        past the safe range), and then the writer's state is unchanged.
        """
        try:
            body_bytes = canonical(body)
        except CanonicalError as exc:
            raise CanonicalError("$.body" + exc.path[1:], exc.problem) from None
        seq, prev = self.next_seq, self._prev.decode()
        digest, line = self.append_body(type, body_bytes)
        record = ChainRecord(
            seq=seq, prev=prev, hash=digest, type=type, body=msgspec.json.decode(body_bytes)
        )
        return record, line

    def append_body(self, type: str, body: bytes) -> tuple[str, bytes]:
        """Make the next record around ``body``, already canonical JSON bytes
        (a mapped record's, encoded once); return its hash and its line.

        The line is composed, not encoded: ``{"body":<body>,"hash":...,
        "prev":...,"seq":...,"type":...}`` is the canonical form of the
        record, keys in order, because ``body`` is canonical and the other
        values are hex digests, an integer and the JSON string of ``type``
        (tests hold the two forms equal). Raises :class:`ValueError` for an
        empty ``type`` or a seq past the safe range; the state is then
        unchanged (:class:`CanonicalError` for a ``type`` with no UTF-8
        form). ``body`` is trusted to be canonical: a verifier would
        report a record made from anything else.
        """
        line = self.append_line(type, body)
        return self._prev.decode(), line

    def append_line(self, type: str, body: bytes) -> bytes:
        """:meth:`append_body`, returning the line only (the store's call:
        the hash is in the line, and :attr:`head` has it)."""
        try:
            type_json = self._type_json.get(type)
        except TypeError:  # not even hashable: _check_type says what is wrong
            type_json = None
        if type_json is None:
            type_json = self._check_type(type)
        seq = self.next_seq
        if seq > MAX_SAFE_INTEGER:
            check_seq(seq, "next seq")
        prev = self._prev
        reset, update, digest = self._hasher
        reset()
        update(b'{"body":%s,"prev":"%s","seq":%d,"type":%s}' % (body, prev, seq, type_json))
        hashed = _hex(digest())
        line = b'{"body":%s,"hash":"%s","prev":"%s","seq":%d,"type":%s}\n' % (
            body,
            hashed,
            prev,
            seq,
            type_json,
        )
        self._prev = hashed
        self.next_seq = seq + 1
        self._started = True
        return line

    def _check_type(self, type: str) -> bytes:
        """The JSON string of a record type, kept once it passed (a few
        types serve a whole log). Raises as :meth:`append_body` says."""
        if not isinstance(type, str) or not type:
            raise ValueError(f"record type must be a non-empty str, got {type!r}")
        try:
            type_json = _ENCODER.encode(type)
        except UnicodeEncodeError:
            raise CanonicalError("$.type", "the type holds a lone surrogate") from None
        if len(self._type_json) < _TYPES_KEPT:
            self._type_json[type] = type_json
        return type_json


BreakKind: TypeAlias = Literal[
    "malformed",  # not JSON, or not a chain record (fields, types, hex)
    "noncanonical",  # a record, but not its canonical bytes (edited, reformatted)
    "hash",  # the record's hash is not the hash of its fields
    "link",  # prev is not the previous record's hash
    "gap",  # a seq is missing (deleted, or records out of order)
    "repeat",  # the previous record again, verbatim
    "fork",  # another record with the previous record's seq
    "backwards",  # a seq lower than the previous record's
    "checkpoint",  # the hash at a known seq differs from the one expected
    "truncated",  # the log ends before the expected head
]


class Break(msgspec.Struct, frozen=True):
    """Where and why a chain stops being trustworthy: the first break only.

    ``seq`` is the lowest sequence number the verifier can no longer vouch
    for. Mostly that is the seq due at the bad line (one more than the last
    good record): for a record that is unreadable or fails its own hash
    (whatever seq it claims), for a bad link, where a copy of an earlier
    record sits (repeat, backwards); for a gap or a cut tail it is the first
    missing seq. For a fork it is the seq two different, well-formed records
    claim, since the verifier can't tell which of them is real (the first
    may be a consistent forgery). On a log's first line with no ``genesis``
    nothing says which seq is due, so it is the seq the record claims (the
    one before it if it links back to a record that is not there), or None
    if the line is unreadable. ``line`` is the 1-based line number,
    None for breaks found by :meth:`ChainVerifier.finish`.
    """

    seq: int | None
    line: int | None
    kind: BreakKind
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "end of log"
        seq = f", seq {self.seq}" if self.seq is not None else ""
        return f"{where}{seq}: {self.kind}: {self.reason}"


class ChainVerifier:
    """Checks a log one line at a time and reports its first break.

    Feed every line in order with :meth:`feed_line`, then call :meth:`finish`.
    Memory stays constant whatever the log's length.

    ``genesis``: the ``(seq, hash)`` this log continues from (the last record
    of the previous log); without it the first record must have
    ``prev == ZERO_HASH``, so a log whose head was cut off is caught.
    ``checkpoints``: ``(seq, hash)`` pairs known from elsewhere (verified
    seals); the record at each such seq must carry that hash, which catches a
    log rewritten with every hash recomputed.

    After the first break nothing later in the log is trusted or examined:
    every further call returns that same break.
    """

    def __init__(self, *, genesis: Head | None = None, checkpoints: Iterable[Head] = ()) -> None:
        if genesis is not None:
            check_seq(genesis[0], "genesis seq")
            check_hex64(genesis[1], "genesis hash")
        self._genesis = genesis
        self._checkpoints: dict[int, str] = {}
        for seq, digest in checkpoints:
            check_seq(seq, "checkpoint seq")
            check_hex64(digest, "checkpoint hash")
            if self._checkpoints.setdefault(seq, digest) != digest:
                raise ValueError(f"two different checkpoint hashes for seq {seq}")
        self._last: Head | None = None
        self._first_seq: int | None = None
        self._line = 0
        self._verified = 0
        self._broken: Break | None = None

    @property
    def head(self) -> Head | None:
        """``(seq, hash)`` of the last record verified; None before the first."""
        return self._last

    @property
    def verified(self) -> int:
        """How many records verified so far."""
        return self._verified

    @property
    def broken(self) -> Break | None:
        """The first break found, if any."""
        return self._broken

    def feed_line(self, line: bytes) -> Break | None:
        """Check the next line (one trailing ``b"\\n"`` optional); return the first break or None."""
        if self._broken is not None:
            return self._broken
        self._line += 1
        found = self._check(line)
        if found is not None:
            self._broken = found
        return found

    def finish(self, expect_head: Head | None = None) -> Break | None:
        """Return the first break, including one only the end shows.

        With ``expect_head=(seq, hash)`` (a head known from elsewhere), a log
        that ends before ``seq`` is reported as cut short, and one whose record
        at ``seq`` has another hash as rewritten. If the log runs past ``seq``,
        the hash there can only be compared if ``seq`` was also passed as a
        checkpoint to the constructor (the verifier keeps no history):
        otherwise :class:`ValueError`.
        """
        if self._broken is not None:
            return self._broken
        if expect_head is None:
            return None
        exp_seq, exp_hash = expect_head
        check_seq(exp_seq, "expected head seq")
        check_hex64(exp_hash, "expected head hash")
        found = self._check_end(exp_seq, exp_hash)
        if found is not None:
            self._broken = found
        return found

    def _check_end(self, exp_seq: int, exp_hash: str) -> Break | None:
        if self._last is None:
            start = self._genesis[0] + 1 if self._genesis is not None else None
            return Break(
                seq=start,
                line=None,
                kind="truncated",
                reason=f"the log has no records, but the expected head is seq {exp_seq}",
            )
        last_seq, last_hash = self._last
        if last_seq < exp_seq:
            return Break(
                seq=last_seq + 1,
                line=None,
                kind="truncated",
                reason=(
                    f"the log ends at seq {last_seq}, but the expected head is seq {exp_seq}: "
                    f"seq {last_seq + 1} to {exp_seq} are missing (cut short?)"
                ),
            )
        if last_seq == exp_seq:
            if last_hash != exp_hash:
                return Break(
                    seq=exp_seq,
                    line=None,
                    kind="checkpoint",
                    reason=(
                        f"the hash at seq {exp_seq} is {last_hash[:16]}..., not the expected "
                        f"{exp_hash[:16]}...: rewritten from there back?"
                    ),
                )
            return None
        if exp_seq in self._checkpoints:
            # The record there already matched this checkpoint on its way past.
            if self._checkpoints[exp_seq] == exp_hash:
                return None
            return Break(
                seq=exp_seq,
                line=None,
                kind="checkpoint",
                reason=f"the hash at seq {exp_seq} is not the expected head's hash",
            )
        if self._first_seq is not None and exp_seq < self._first_seq:
            raise ValueError(
                f"expected head seq {exp_seq} is before this log's first record "
                f"(seq {self._first_seq}); verify the log that holds it"
            )
        raise ValueError(
            f"expected head seq {exp_seq} is inside the log (last seq {last_seq}); "
            "pass it in checkpoints= when making the verifier so it can be compared"
        )

    def _expected_seq(self) -> int | None:
        if self._last is not None:
            return self._last[0] + 1
        if self._genesis is not None:
            return self._genesis[0] + 1
        return None

    def _check(self, line: bytes) -> Break | None:
        raw = line[:-1] if line.endswith(b"\n") else line
        expected = self._expected_seq()

        def broken(seq: int | None, kind: BreakKind, reason: str) -> Break:
            return Break(seq=seq, line=self._line, kind=kind, reason=reason)

        if not raw:
            return broken(expected, "malformed", "empty line")
        try:
            record = msgspec.json.decode(raw, type=ChainRecord)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return broken(expected, "malformed", f"not a chain record: {exc}")

        # First the record on its own: a record that fails here is not
        # evidence of anything, its seq included, so the break is placed at
        # the seq due at this line (for a first line with no genesis, the
        # only seq there is: the one it claims).
        due = expected if expected is not None else record.seq
        try:
            unhashed_digest = record_hash(record)
            canonical_line = canonical(msgspec.structs.asdict(record))
        except CanonicalError as exc:
            return broken(due, "noncanonical", f"no canonical form: {exc}")
        if record.hash != unhashed_digest:
            return broken(
                due, "hash", "the record's hash does not match its contents (edited record?)"
            )
        if raw != canonical_line:
            return broken(
                due,
                "noncanonical",
                "the line is not the record's canonical form (edited or reformatted)",
            )

        # Then its place in the chain.
        seq = record.seq
        if expected is not None and seq != expected:
            if seq > expected:
                return broken(
                    expected,
                    "gap",
                    f"expected seq {expected}, found {seq}: "
                    "a record is missing, or records are out of order",
                )
            if self._last is not None and seq == self._last[0]:
                if record.hash == self._last[1]:
                    return broken(expected, "repeat", f"seq {seq} again: a copy of the record")
                return broken(
                    seq,
                    "fork",
                    f"a second, different record claims seq {seq}: "
                    "one of the two was inserted or replaced",
                )
            return broken(
                expected,
                "backwards",
                f"seq {seq} where seq {expected} should be (a copied record?)",
            )

        want_prev = self._last[1] if self._last is not None else None
        if want_prev is None and self._genesis is not None:
            want_prev = self._genesis[1]
        if want_prev is not None and record.prev != want_prev:
            return broken(
                seq,
                "link",
                f"prev does not match the hash of seq {seq - 1} "
                "(a record before it was changed, removed or replaced)",
            )
        if want_prev is None and record.prev != ZERO_HASH:
            # A first record that links back: at least the record before it
            # is missing. (Or this log continues another: pass genesis=.)
            return broken(
                max(seq - 1, 0),
                "gap" if seq > 0 else "link",
                f"the first record (seq {seq}) has a prev that is not all zeros: "
                "the log's start is missing (or it continues another log: pass genesis=)",
            )

        checkpoint = self._checkpoints.get(seq)
        if checkpoint is not None and checkpoint != record.hash:
            return broken(
                seq,
                "checkpoint",
                f"the hash at seq {seq} differs from the sealed checkpoint (log rewritten?)",
            )

        if self._first_seq is None:
            self._first_seq = seq
        self._last = (seq, record.hash)
        self._verified += 1
        return None


def verify_lines(
    lines: Iterable[bytes],
    *,
    genesis: Head | None = None,
    checkpoints: Iterable[Head] = (),
    expect_head: Head | None = None,
) -> Break | None:
    """Verify a whole log given as lines; return its first break or None.

    A convenience over :class:`ChainVerifier` for logs already in memory or
    read by an iterator (``open(path, "rb")`` yields lines).
    """
    verifier = ChainVerifier(genesis=genesis, checkpoints=checkpoints)
    for line in lines:
        if verifier.feed_line(line) is not None:
            break
    return verifier.finish(expect_head)


def check_seq(seq: int, what: str) -> None:
    """Raise ValueError unless ``seq`` is a valid :data:`Seq` (for values made in code).

    Decoding checks :data:`Seq` by itself; this is for arguments, where a
    bool or an out-of-range int would otherwise slip through.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SAFE_INTEGER:
        raise ValueError(f"{what} must be an int in 0..2**53-1, got {seq!r}")


def check_hex64(digest: str, what: str) -> None:
    """Raise ValueError unless ``digest`` is a valid :data:`Hex64` (for values made in code)."""
    if not isinstance(digest, str) or _HEX64.fullmatch(digest) is None:
        raise ValueError(f"{what} must be 64 lowercase hex digits, got {digest!r}")
