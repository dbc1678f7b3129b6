"""Chains checked off-host: what one batch of a host's records says about its chain.

Sans-I/O. The writer (:mod:`agent.fleet.writer`) holds the host's advisory
lock inside the write transaction, inserts the batch, reads back the
stored neighbours of what it inserted (seq - 1 and seq + 1 of each) and
the host's stored state, and hands them here; what comes back are the
:class:`ChainEvent` rows to insert in the same transaction. Because the
state is the database's, read under the lock, two collectors holding
different batches of one host check each other's records correctly: the
second to commit sees the first's rows as stored neighbours.

Kinds (``chain_events.kind``):

- ``hash``: a record whose hash is not the hash of its fields (not stored);
- ``link``: a record's ``prev`` is not the stored hash of seq - 1 (checked
  both ways: the later record may have arrived first);
- ``gap``: seqs still missing ``gap_grace_s`` after a later seq was stored
  (:func:`gap_step`; a jump alone is no gap: another collector may hold
  the batch in between, or JetStream may redeliver it). Recorded once;
  records filling it later are stored as usual and the stored tip moves on;
- ``fork``: a second, different record for a stored seq (the insert's
  ``ON CONFLICT DO NOTHING`` dropped it; its hash is compared here), or a
  head naming another hash than the stored record's at its seq;
- ``rollback``: different records starting again below the highest stored
  seq (the host's log was cut or restarted), or a head whose seq is below
  the head seen before;
- ``seal``: a checkpoint whose seal does not verify with the host's key.

A run of consecutive different records (a whole restarted log) is one
event, at its first seq, per batch: the state that says "this run goes on"
(:attr:`HostCheck.diverged_to`) is the collector's own memory.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

import msgspec

from agent.evidence.chain import ZERO_HASH
from agent.evidence.seal import Seal, next_epoch_key, seal_mac
from agent.fleet.wire import ChainHead

__all__ = [
    "ChainEvent",
    "Conflict",
    "GapState",
    "HostCheck",
    "Link",
    "SealState",
    "Stored",
    "check_head",
    "check_seal",
    "gap_step",
    "is_stale",
]

_MAX_EPOCH_STEPS: Final = 10_000_000
"""Epochs derived forward at most for one seal (one per second: 115 days)."""


class ChainEvent(NamedTuple):
    """One ``chain_events`` row: what was found, where."""

    host: str
    seq: int | None
    kind: str
    detail: str


class Stored(NamedTuple):
    """A stored record's place in its chain."""

    hash: str
    prev: str


class Link(NamedTuple):
    """One record just inserted: its seq, hash and prev."""

    seq: int
    hash: str
    prev: str


class Conflict(NamedTuple):
    """A received record the insert dropped, and what is stored at its seq (None:
    the conflict was on its id, at another seq)."""

    seq: int
    hash: str
    id: str
    stored_hash: str | None


class HostCheck:
    """One host's chain check across batches (state that is not in the database:
    where a divergent run of records ends, to report it once)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.diverged_to: int | None = None

    def batch(
        self,
        inserted: Sequence[Link],
        conflicts: Sequence[Conflict],
        neighbours: Mapping[int, Stored],
        high_before: int | None,
    ) -> list[ChainEvent]:
        """The events of one batch.

        ``inserted``: the records the insert returned, any order;
        ``conflicts``: those it dropped; ``neighbours``: stored records by seq
        (after the insert) at least at seq - 1 and seq + 1 of each inserted
        one; ``high_before``: the highest stored seq before this batch (None:
        the host had no records).
        """
        events: list[ChainEvent] = []
        host = self.host
        mine = {link.seq for link in inserted}
        for link in sorted(inserted):
            before = neighbours.get(link.seq - 1)
            if before is not None and before.hash != link.prev:
                events.append(
                    ChainEvent(
                        host,
                        link.seq,
                        "link",
                        f"prev {link.prev[:16]}... is not the stored hash of seq "
                        f"{link.seq - 1} ({before.hash[:16]}...)",
                    )
                )
            after = neighbours.get(link.seq + 1)
            if after is not None and link.seq + 1 not in mine and after.prev != link.hash:
                events.append(
                    ChainEvent(
                        host,
                        link.seq + 1,
                        "link",
                        f"the stored seq {link.seq + 1} links to {after.prev[:16]}..., "
                        f"not to seq {link.seq}'s hash {link.hash[:16]}...",
                    )
                )
        events.extend(self._conflicts(conflicts, high_before))
        return events

    def _conflicts(
        self, conflicts: Iterable[Conflict], high_before: int | None
    ) -> list[ChainEvent]:
        events: list[ChainEvent] = []
        for conflict in sorted(conflicts):
            if conflict.stored_hash == conflict.hash:
                continue  # the same record again: a republish, dropped by the key
            continuing = self.diverged_to is not None and conflict.seq == self.diverged_to + 1
            self.diverged_to = conflict.seq
            if continuing:
                continue
            if conflict.stored_hash is None:
                events.append(
                    ChainEvent(
                        self.host,
                        conflict.seq,
                        "fork",
                        f"record id {conflict.id[:64]!r} is already stored at another seq",
                    )
                )
                continue
            below = high_before is not None and conflict.seq < high_before
            kind = "rollback" if below else "fork"
            why = (
                "different records again below the highest stored seq "
                f"{high_before}: the host's log was cut or restarted"
                if below
                else "a second, different record for a stored seq"
            )
            events.append(
                ChainEvent(
                    self.host,
                    conflict.seq,
                    kind,
                    f"{why} (stored {conflict.stored_hash[:16]}..., "
                    f"received {conflict.hash[:16]}...)",
                )
            )
        return events


class GapState(NamedTuple):
    """A host's gap watch (``hosts.checked_seq/gap_seq/gap_since``).

    ``checked``: every seq up to it is stored or reported missing; ``gap``:
    the first missing seq after it, seen missing since ``since`` (seconds,
    the database's clock), None when nothing is missing.
    """

    checked: int | None
    gap: int | None
    since: float | None


def gap_step(
    host: str,
    state: GapState,
    run_end: int,
    next_present: int | None,
    now: float,
    grace: float,
) -> tuple[GapState, ChainEvent | None, bool]:
    """One step of the gap watch: the stored run from ``state.checked + 1``
    ends at ``run_end``; ``next_present`` is the next stored seq after it
    (None: nothing after). Returns the new state, a gap event if one is due
    now, and whether to step again (from the seq after the reported gap)."""
    if next_present is None:
        return GapState(run_end, None, None), None, False
    missing = run_end + 1
    if state.gap != missing or state.since is None:
        return GapState(run_end, missing, now), None, False
    if now - state.since < grace:
        return GapState(run_end, missing, state.since), None, False
    event = ChainEvent(
        host,
        missing,
        "gap",
        f"{next_present - missing} record(s) missing for {now - state.since:.0f} s: "
        f"seq {missing} to {next_present - 1}",
    )
    return GapState(next_present, None, None), event, True


def is_stale(head: ChainHead, last_time_us: int | None) -> bool:
    """Whether ``head`` is older than the newest head taken from its host:
    JetStream redelivers what a collector took and never acknowledged (it
    was killed), after newer heads, and a head is what the host says at its
    own ``time_ns``: an old one moving "back" is no rollback. Compared in
    microseconds, the precision ``hosts.head_time`` keeps."""
    return last_time_us is not None and head.time_ns // 1000 <= last_time_us


def check_head(
    head: ChainHead,
    last_head_seq: int | None,
    stored_hash_at: str | None,
) -> ChainEvent | None:
    """A published head against the last one seen and the stored record at its seq."""
    if last_head_seq is not None and head.seq < last_head_seq:
        return ChainEvent(
            head.host,
            head.seq,
            "rollback",
            f"the head moved back from seq {last_head_seq} to {head.seq}",
        )
    if stored_hash_at is not None and stored_hash_at != head.hash:
        return ChainEvent(
            head.host,
            head.seq,
            "fork",
            f"the head names hash {head.hash[:16]}... at seq {head.seq}, "
            f"the stored record has {stored_hash_at[:16]}...",
        )
    return None


class SealState(msgspec.Struct, frozen=True):
    """The last verified seal of a host (``hosts.seal_epoch/seal_seq/seal_mac``)."""

    epoch: int
    seq: int
    mac: str


class _KeyCache:
    """Each host's newest derived epoch key, so a seal costs one ratchet step."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[bytes, int, bytes]] = {}

    def key(self, host: str, initial: bytes, epoch: int) -> bytes | None:
        cached = self.keys.get(host)
        if cached is not None and cached[0] == initial and cached[1] <= epoch:
            key, at = cached[2], cached[1]
        else:
            key, at = initial, 0
        if epoch - at > _MAX_EPOCH_STEPS:
            return None
        while at < epoch:
            key = next_epoch_key(key)
            at += 1
        self.keys[host] = (initial, epoch, key)
        return key


KEYS: Final = _KeyCache()


def check_seal(
    host: str,
    initial_key: bytes,
    state: SealState | None,
    seal: Seal,
    at_seq: int,
    before: Stored | None,
    *,
    cache: _KeyCache = KEYS,
) -> tuple[SealState | None, ChainEvent | None]:
    """Verify the seal in the checkpoint record at ``at_seq``.

    ``state``: the last verified seal; ``before``: the stored record at
    ``at_seq - 1`` (what the seal must cover). Returns the new state (the
    old one when the seal fails) and the event, if any.
    """

    def bad(why: str) -> tuple[SealState | None, ChainEvent]:
        return state, ChainEvent(host, at_seq, "seal", f"seal epoch {seal.epoch}: {why}")

    if seal.epoch > at_seq:
        return bad(f"epoch beyond its position {at_seq} (forged)")
    if seal.seq != at_seq - 1 or (before is not None and seal.hash != before.hash):
        return bad("it does not cover the record before it")
    if state is not None:
        if seal.epoch <= state.epoch:
            return bad(f"epoch not after the last verified one ({state.epoch})")
        if seal.epoch == state.epoch + 1 and seal.prev_seal != state.mac:
            return bad("prev_seal is not the previous seal's MAC")
    elif seal.epoch == 0 and seal.prev_seal != ZERO_HASH:
        return bad("the first seal's prev_seal is not zero")
    key = cache.key(host, initial_key, seal.epoch)
    if key is None:
        return bad("too many epochs past the last verified seal")
    expected = seal_mac(key, seal.epoch, seal.head, seal.prev_seal)
    if not hmac.compare_digest(expected, seal.mac):
        return bad("the MAC is not this epoch's MAC (forged, or the wrong key)")
    return SealState(seal.epoch, at_seq, seal.mac), None
