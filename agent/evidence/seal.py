"""Forward-secure seals over the chain head, like journald's FSS but with blake3.

Why: anyone can recompute blake3, so someone who takes over the host can
rewrite the hash chain from any record onward and it still verifies. A seal
is a keyed MAC over the chain head made with a key that the host then
destroys; a later intruder holds only later keys, and cannot make a seal for
an earlier epoch. A rewrite of sealed history shows up as a seal whose head
hash no longer matches the log.

Keys. :func:`keygen` makes the initial key ``k[0]``. It is also the
verification key: store it off the host (print it with :func:`encode_key`),
because whoever holds it can forge every seal. Each seal moves the sealer one
epoch on, one way::

    k[i + 1] = blake3(k[i], derive_key_context=RATCHET_CONTEXT)

(BLAKE3's key derivation mode, domain-separated from the keyed-hash mode used
for the MAC, so the MAC key and the next key never collide.)

Seals. The seal for epoch ``i`` is::

    mac = blake3(canonical({epoch, seq, hash, prev_seal}), key=k[i])

over the head ``(seq, hash)`` of the chain at that moment, with
``prev_seal`` the previous seal's ``mac`` (:data:`ZERO_HASH` for the first),
so seals form their own chain. The verifier accepts epochs 0, 1, 2, ... only,
each checked with its own epoch's key (CVE-2023-31439 is what happens when a
verifier lets a tag's position and epoch drift apart).

What can go wrong, and what is not covered:

- Python cannot promise a key is gone from memory: :class:`Sealer` keeps its
  key in a ``bytearray`` and overwrites it in place, but the ``bytes`` object
  blake3 returns for the next key, and any copy the caller made (the
  initial key itself, :meth:`Sealer.export_key`), live on until collected.
- The host must persist its current key (and epoch, and ``prev_seal``) to
  survive a restart; that file, overwritten at each epoch, is what an
  intruder gets. Older keys must not survive in it or in backups.
- An intruder with the current key can still seal whatever they write from
  now on, and can drop the newest seals together with the records after
  them: the verifier only knows how many epochs exist if told
  (``expect_epochs`` in :meth:`SealVerifier.finish`).
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Final, Literal, TypeAlias

import blake3
import msgspec

from agent.evidence.canonical import canonical
from agent.evidence.chain import ZERO_HASH, Head, Hex64, Seq, check_hex64, check_seq

__all__ = [
    "KEY_SIZE",
    "RATCHET_CONTEXT",
    "KeyFormatError",
    "Seal",
    "SealError",
    "SealErrorKind",
    "SealVerifier",
    "Sealer",
    "decode_key",
    "encode_key",
    "epoch_key",
    "keygen",
    "next_epoch_key",
    "seal_mac",
]

KEY_SIZE: Final = 32
"""Bytes in every key: the size of a BLAKE3 key."""

RATCHET_CONTEXT: Final = "tracehound seal ratchet v1"
"""BLAKE3 derive-key context of the epoch ratchet. Changing it breaks every sealed log."""

_KEY_PREFIX: Final = "thk1-"
_KEY_CHECK_SIZE: Final = 4
_KEY_TEXT: Final = re.compile(r"thk1-([0-9a-f]{64})-([0-9a-f]{8})")


class Seal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One seal: the MAC of epoch ``epoch`` over the chain head ``(seq, hash)``."""

    epoch: Seq
    seq: Seq
    hash: Hex64
    prev_seal: Hex64
    mac: Hex64

    @property
    def head(self) -> Head:
        """The chain head this seal vouches for, as ``(seq, hash)``."""
        return (self.seq, self.hash)


def keygen() -> bytes:
    """Return a fresh random initial key (also the verification key)."""
    return secrets.token_bytes(KEY_SIZE)


def next_epoch_key(key: bytes | bytearray) -> bytes:
    """Return ``k[i + 1]`` from ``k[i]``: one way, so ``k[i]`` can't be had from it."""
    _check_key(key)
    return blake3.blake3(key, derive_key_context=RATCHET_CONTEXT).digest()


def epoch_key(initial_key: bytes | bytearray, epoch: int) -> bytes:
    """Return ``k[epoch]``, ratcheting forward from ``k[0]`` (``epoch`` steps)."""
    check_seq(epoch, "epoch")
    _check_key(initial_key)
    key = bytes(initial_key)
    for _ in range(epoch):
        key = next_epoch_key(key)
    return key


def seal_mac(key: bytes | bytearray, epoch: int, head: Head, prev_seal: str) -> str:
    """Return the hex MAC a seal of ``epoch`` over ``head`` must carry under ``key``.

    Raises :class:`ValueError` (from canonical) for values outside JSON's safe range.
    """
    _check_key(key)
    seq, digest = head
    checkpoint = {"epoch": epoch, "seq": seq, "hash": digest, "prev_seal": prev_seal}
    return blake3.blake3(canonical(checkpoint), key=key).hexdigest()


class Sealer:
    """Makes seals, holding only the current epoch's key.

    Start from the initial key (``Sealer(keygen_output)``), or resume after a
    restart from the persisted state: ``Sealer(key, epoch=n, prev_seal=mac)``
    with the key of epoch ``n`` (:meth:`export_key`), the next epoch to seal
    and the last seal's MAC. A wrong resume state is not detectable here; the
    verifier will reject the seals it produces.

    The caller's ``key`` object is copied, not erased: wipe a ``bytearray``
    you passed in yourself.
    """

    def __init__(
        self,
        key: bytes | bytearray,
        *,
        epoch: int = 0,
        prev_seal: str = ZERO_HASH,
    ) -> None:
        _check_key(key)
        check_seq(epoch, "epoch")
        check_hex64(prev_seal, "prev_seal")
        self._key: bytearray | None = bytearray(key)
        self._epoch = epoch
        self._prev_seal = prev_seal
        self._last_head: Head | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next seal will carry."""
        return self._epoch

    @property
    def prev_seal(self) -> str:
        """The MAC of the last seal made (what the next one links to)."""
        return self._prev_seal

    def export_key(self) -> bytes:
        """Return a copy of the current epoch's key, to persist for a restart.

        Write it over the previous one (never beside it): an older key left on
        the host gives away every epoch from it onward.
        """
        return bytes(self._live_key())

    def seal(self, seq: int, head_hash: str) -> Seal:
        """Seal the chain head ``(seq, head_hash)``, then ratchet to the next epoch.

        Heads must not go backwards: ``seq`` below the last sealed one, or the
        same ``seq`` with another hash, is a :class:`ValueError` (it would
        vouch for two histories). Sealing the same head twice is fine: idle
        epochs still advance.
        """
        key = self._live_key()
        check_seq(seq, "seq")
        check_hex64(head_hash, "head_hash")
        if self._last_head is not None:
            last_seq, last_hash = self._last_head
            if seq < last_seq or (seq == last_seq and head_hash != last_hash):
                raise ValueError(
                    f"head (seq {seq}) goes back from the last sealed head (seq {last_seq})"
                )
        mac = seal_mac(key, self._epoch, (seq, head_hash), self._prev_seal)
        sealed = Seal(
            epoch=self._epoch, seq=seq, hash=head_hash, prev_seal=self._prev_seal, mac=mac
        )
        _ratchet_in_place(key)
        self._epoch += 1
        self._prev_seal = mac
        self._last_head = (seq, head_hash)
        return sealed

    def erase(self) -> None:
        """Zero the key now; the sealer cannot seal again."""
        if self._key is not None:
            self._key[:] = bytes(KEY_SIZE)
            self._key = None

    def _live_key(self) -> bytearray:
        if self._key is None:
            raise RuntimeError("the sealer's key was erased")
        return self._key


SealErrorKind: TypeAlias = Literal[
    "mac",  # the MAC is not this epoch's MAC over the seal's fields
    "epoch",  # the seal's epoch is not the next one (replayed, dropped, reordered)
    "link",  # prev_seal is not the previous seal's MAC
    "seq",  # the sealed head goes backwards, or forks at one seq
    "head",  # the log's hash at the sealed seq differs (log rewritten)
    "missing",  # fewer seals than epochs known to exist
]


class SealError(Exception):
    """A seal failed verification; ``epoch`` is the position where it did."""

    def __init__(self, epoch: int, kind: SealErrorKind, reason: str) -> None:
        super().__init__(f"seal at epoch {epoch}: {kind}: {reason}")
        self.epoch = epoch
        self.kind = kind
        self.reason = reason


class SealVerifier:
    """Verifies a log's seals in order, deriving each epoch's key forward.

    Feed seals with :meth:`feed` in the order they were made. Each must carry
    the next epoch (0, 1, 2, ...; or from ``epoch`` when resuming mid-way,
    with that epoch's ``prev_seal``), link to the previous seal, and carry the
    MAC of that epoch's key. The first failure raises :class:`SealError`, and
    so does every later call: nothing after a bad seal is trusted.

    A seal that verifies vouches only for its head ``(seq, hash)``; whether
    the log still has that hash at that seq is checked by passing the log's
    hash to :meth:`feed`, or by handing :attr:`checkpoints` to
    :class:`~agent.evidence.chain.ChainVerifier`.
    """

    def __init__(
        self,
        initial_key: bytes | bytearray,
        *,
        epoch: int = 0,
        prev_seal: str = ZERO_HASH,
    ) -> None:
        check_hex64(prev_seal, "prev_seal")
        self._key = bytearray(epoch_key(initial_key, epoch))
        self._epoch = epoch
        self._prev_seal = prev_seal
        self._last_head: Head | None = None
        self._checkpoints: list[Head] = []
        self._failed: SealError | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next seal must carry (= seals verified, from 0)."""
        return self._epoch

    @property
    def checkpoints(self) -> list[Head]:
        """The heads ``(seq, hash)`` of the seals verified so far, in order."""
        return list(self._checkpoints)

    def feed(self, seal: Seal, log_hash: str | None = None) -> Head:
        """Verify the next seal and return the head it vouches for.

        ``log_hash``, if given, is the hash the log has at ``seal.seq``; a
        difference means the log was rewritten after it was sealed.
        """
        if self._failed is not None:
            raise self._failed
        try:
            self._verify(seal, log_hash)
        except SealError as exc:
            self._failed = exc
            raise
        _ratchet_in_place(self._key)
        self._epoch += 1
        self._prev_seal = seal.mac
        self._last_head = seal.head
        self._checkpoints.append(seal.head)
        return seal.head

    def finish(self, expect_epochs: int | None = None) -> None:
        """Raise :class:`SealError` if a seal failed, or if fewer than
        ``expect_epochs`` epochs were sealed (newest seals dropped)."""
        if self._failed is not None:
            raise self._failed
        if expect_epochs is not None and self._epoch < expect_epochs:
            self._failed = SealError(
                self._epoch,
                "missing",
                f"seals end at epoch {self._epoch - 1}, but {expect_epochs} epochs were expected",
            )
            raise self._failed

    def _verify(self, seal: Seal, log_hash: str | None) -> None:
        at = self._epoch
        if seal.epoch != at:
            raise SealError(
                at,
                "epoch",
                f"the seal says epoch {seal.epoch}, but the next epoch is {at} "
                "(seal replayed, dropped or out of order)",
            )
        try:
            expected_mac = seal_mac(self._key, at, seal.head, seal.prev_seal)
        except ValueError as exc:
            raise SealError(at, "mac", f"fields out of range: {exc}") from None
        if not hmac.compare_digest(expected_mac, seal.mac):
            raise SealError(
                at, "mac", "the MAC is not this epoch's MAC over the seal (forged or edited)"
            )
        if seal.prev_seal != self._prev_seal:
            raise SealError(
                at,
                "link",
                "prev_seal is not the previous seal's MAC (a seal was removed or replaced)",
            )
        if self._last_head is not None:
            last_seq, last_hash = self._last_head
            if seal.seq < last_seq or (seal.seq == last_seq and seal.hash != last_hash):
                raise SealError(
                    at, "seq", f"the sealed head (seq {seal.seq}) goes back from seq {last_seq}"
                )
        if log_hash is not None and log_hash != seal.hash:
            raise SealError(
                at,
                "head",
                f"the log's hash at seq {seal.seq} is not the sealed one (log rewritten)",
            )


def encode_key(key: bytes | bytearray) -> str:
    """Return ``key`` as text for a file or paper: ``thk1-<64 hex>-<8 hex checksum>``.

    The checksum (blake3 of prefix and key, first 4 bytes) catches a
    mistyped or damaged key before it is used to "verify" a log.
    """
    _check_key(key)
    return f"{_KEY_PREFIX}{bytes(key).hex()}-{_key_check(bytes(key))}"


class KeyFormatError(ValueError):
    """Text is not a valid encoded key. The message never repeats the key."""


def decode_key(text: str) -> bytes:
    """Return the key encoded in ``text`` (surrounding whitespace and case ignored).

    Raises :class:`KeyFormatError` saying what is wrong: not a tracehound key,
    an unknown version, a wrong length or character, or a checksum mismatch
    (the key is corrupt or mistyped).
    """
    cleaned = text.strip().lower()
    if not cleaned.startswith("thk"):
        raise KeyFormatError("not a tracehound key: it should start with 'thk1-'")
    if not cleaned.startswith(_KEY_PREFIX):
        version = cleaned.split("-", 1)[0]
        raise KeyFormatError(f"unsupported key version {version!r}: this tracehound reads thk1")
    match = _KEY_TEXT.fullmatch(cleaned)
    if match is None:
        raise KeyFormatError(
            "malformed key: expected 'thk1-' then 64 hex digits, '-', and 8 hex digits "
            f"({len(_KEY_PREFIX) + 64 + 1 + 8} characters; this has {len(cleaned)})"
        )
    key = bytes.fromhex(match.group(1))
    if not hmac.compare_digest(_key_check(key), match.group(2)):
        raise KeyFormatError("key checksum mismatch: the key is corrupt or mistyped")
    return key


def _key_check(key: bytes) -> str:
    return blake3.blake3(_KEY_PREFIX.encode() + key).hexdigest(length=_KEY_CHECK_SIZE)


def _ratchet_in_place(key: bytearray) -> None:
    # Overwrite, don't rebind: the old key's bytes are gone from this buffer.
    key[:] = next_epoch_key(key)


def _check_key(key: bytes | bytearray) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"a key is {KEY_SIZE} bytes")
