"""Forward-secure seals: ratchet, MACs, the verifier's rejections, key text."""

from __future__ import annotations

import itertools

import blake3
import msgspec
import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.chain import ZERO_HASH, ChainWriter, Head, verify_lines
from agent.evidence.seal import (
    KEY_SIZE,
    RATCHET_CONTEXT,
    KeyFormatError,
    Seal,
    Sealer,
    SealError,
    SealVerifier,
    decode_key,
    encode_key,
    epoch_key,
    keygen,
    next_epoch_key,
    seal_mac,
)

KEY = bytes(range(32))


def head(i: int) -> Head:
    """A made-up chain head: seq 10*i, a distinct hash."""
    return (10 * i, blake3.blake3(str(i).encode()).hexdigest())


def make_seals(n: int, key: bytes = KEY) -> list[Seal]:
    sealer = Sealer(key)
    return [sealer.seal(*head(i)) for i in range(n)]


def verify_all(seals: list[Seal], key: bytes = KEY) -> SealVerifier:
    verifier = SealVerifier(key)
    for seal in seals:
        verifier.feed(seal)
    verifier.finish()
    return verifier


def rejected(seals: list[Seal], key: bytes = KEY) -> SealError:
    with pytest.raises(SealError) as info:
        verify_all(seals, key)
    return info.value


def with_fields(seal: Seal, **changes: object) -> Seal:
    return msgspec.structs.replace(seal, **changes)


# --- keys and the ratchet ------------------------------------------------------


def test_keygen_makes_distinct_32_byte_keys() -> None:
    keys = {keygen() for _ in range(16)}
    assert len(keys) == 16
    assert all(len(key) == KEY_SIZE for key in keys)


def test_the_ratchet_is_blake3_derive_key() -> None:
    k1 = next_epoch_key(KEY)
    # A known answer: a log sealed today must verify with tomorrow's code.
    assert k1.hex() == "fbc15cc1f270ff9e7858e0fbaa49c1ae79dc29e34e75ad4169c4cf61c3928037"
    assert k1 == blake3.blake3(KEY, derive_key_context=RATCHET_CONTEXT).digest()
    assert k1 != KEY
    assert epoch_key(KEY, 0) == KEY
    assert epoch_key(KEY, 3) == next_epoch_key(next_epoch_key(k1))


def test_a_key_of_the_wrong_size_is_refused() -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError, match="32 bytes"):
            next_epoch_key(bad)
        with pytest.raises(ValueError, match="32 bytes"):
            Sealer(bad)
        with pytest.raises(ValueError, match="32 bytes"):
            SealVerifier(bad)


# --- sealing ---------------------------------------------------------------------


def test_a_seal_is_a_keyed_blake3_mac_over_the_jcs_checkpoint() -> None:
    sealer = Sealer(KEY)
    seal = sealer.seal(*head(0))
    checkpoint: dict[str, int | str] = {
        "epoch": 0,
        "seq": seal.seq,
        "hash": seal.hash,
        "prev_seal": ZERO_HASH,
    }
    assert seal.mac == blake3.blake3(rfc8785.dumps(checkpoint), key=KEY).hexdigest()
    assert (seal.epoch, seal.head, seal.prev_seal) == (0, head(0), ZERO_HASH)
    assert seal.mac == seal_mac(KEY, 0, head(0), ZERO_HASH)


def test_each_seal_moves_one_epoch_and_links_to_the_last() -> None:
    seals = make_seals(4)
    assert [seal.epoch for seal in seals] == [0, 1, 2, 3]
    assert seals[0].prev_seal == ZERO_HASH
    for before, after in itertools.pairwise(seals):
        assert after.prev_seal == before.mac
    assert seals[2].mac == seal_mac(epoch_key(KEY, 2), 2, head(2), seals[1].mac)


def test_the_sealer_overwrites_its_key_in_place() -> None:
    sealer = Sealer(KEY)
    buffer = sealer._key  # the one buffer the key ever lives in
    assert buffer is not None
    assert buffer == KEY
    sealer.seal(*head(0))
    assert sealer._key is buffer
    assert buffer == epoch_key(KEY, 1)
    assert bytes(buffer) != KEY
    assert sealer.export_key() == epoch_key(KEY, 1)
    assert sealer.epoch == 1


def test_erase_zeroes_the_key_and_stops_sealing() -> None:
    sealer = Sealer(KEY)
    buffer = sealer._key
    assert buffer is not None
    sealer.erase()
    assert buffer == bytearray(KEY_SIZE)
    with pytest.raises(RuntimeError, match="erased"):
        sealer.seal(*head(0))
    with pytest.raises(RuntimeError, match="erased"):
        sealer.export_key()
    sealer.erase()  # twice is fine


def test_the_callers_key_is_copied_not_kept() -> None:
    given_key = bytearray(KEY)
    sealer = Sealer(given_key)
    sealer.seal(*head(0))
    assert given_key == KEY


def test_the_sealer_refuses_a_head_that_goes_back() -> None:
    sealer = Sealer(KEY)
    sealer.seal(5, "a" * 64)
    sealer.seal(5, "a" * 64)  # idle: same head again
    with pytest.raises(ValueError, match="goes back"):
        sealer.seal(4, "b" * 64)
    with pytest.raises(ValueError, match="goes back"):
        sealer.seal(5, "b" * 64)
    assert sealer.epoch == 2  # refusals did not ratchet


@pytest.mark.parametrize(("seq", "digest"), [(-1, ZERO_HASH), (True, ZERO_HASH), (0, "x" * 64)])
def test_the_sealer_refuses_a_bad_head(seq: int, digest: str) -> None:
    with pytest.raises(ValueError):
        Sealer(KEY).seal(seq, digest)


def test_a_resumed_sealer_continues_the_same_seal_chain() -> None:
    first = Sealer(KEY)
    seals = [first.seal(*head(i)) for i in range(3)]
    resumed = Sealer(first.export_key(), epoch=first.epoch, prev_seal=first.prev_seal)
    first.erase()
    seals += [resumed.seal(*head(i)) for i in range(3, 6)]
    assert seals == make_seals(6)
    verify_all(seals)


def test_seals_round_trip_through_json() -> None:
    seal = make_seals(1)[0]
    encoded = msgspec.json.encode(seal)
    assert msgspec.json.decode(encoded, type=Seal) == seal
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(encoded.replace(seal.mac.encode(), b"Z" * 64), type=Seal)


# --- verifying -------------------------------------------------------------------


def test_good_seals_verify_and_yield_their_heads() -> None:
    seals = make_seals(5)
    verifier = SealVerifier(KEY)
    for i, seal in enumerate(seals):
        assert verifier.feed(seal) == head(i)
    verifier.finish(expect_epochs=5)
    assert verifier.epoch == 5
    assert verifier.checkpoints == [head(i) for i in range(5)]


def test_a_wrong_mac_is_rejected() -> None:
    seals = make_seals(4)
    digit = "0" if seals[2].mac[7] != "0" else "1"
    seals[2] = with_fields(seals[2], mac=seals[2].mac[:7] + digit + seals[2].mac[8:])
    error = rejected(seals)
    assert (error.epoch, error.kind) == (2, "mac")


@pytest.mark.parametrize(
    "change", [{"seq": 999}, {"hash": "f" * 64}, {"prev_seal": "e" * 64}], ids=str
)
def test_an_edited_seal_is_rejected(change: dict[str, object]) -> None:
    seals = make_seals(4)
    seals[1] = with_fields(seals[1], **change)
    error = rejected(seals)
    assert (error.epoch, error.kind) == (1, "mac")


def test_the_wrong_key_is_rejected_at_the_first_seal() -> None:
    error = rejected(make_seals(3), key=keygen())
    assert (error.epoch, error.kind) == (0, "mac")


def test_a_seal_must_carry_the_epoch_of_its_position() -> None:
    seals = make_seals(5)
    del seals[2]  # a dropped seal
    error = rejected(seals)
    assert (error.epoch, error.kind) == (2, "epoch")
    assert "epoch 3" in error.reason

    seals = make_seals(5)
    seals[1], seals[2] = seals[2], seals[1]  # reordered
    error = rejected(seals)
    assert (error.epoch, error.kind) == (1, "epoch")


def test_each_seal_is_checked_with_its_own_epochs_key() -> None:
    # The CVE-2023-31439 lesson. A seal made with a later key, relabelled to
    # the epoch of its position, fails the MAC of that epoch's key ...
    seals = make_seals(5)
    later_key = epoch_key(KEY, 4)
    forged = with_fields(seals[1], mac=seal_mac(later_key, 1, seals[1].head, seals[0].mac))
    error = rejected([seals[0], forged, *seals[2:]])
    assert (error.epoch, error.kind) == (1, "mac")
    # ... and one left with its own (later) epoch is out of place.
    honest_later = with_fields(
        seals[1], epoch=4, mac=seal_mac(later_key, 4, seals[1].head, seals[0].mac)
    )
    error = rejected([seals[0], honest_later])
    assert (error.epoch, error.kind) == (1, "epoch")


def test_an_intruder_with_the_current_key_cannot_reseal_the_past() -> None:
    # The intruder takes the host after epoch 2 was sealed: they have k[3].
    sealer = Sealer(KEY)
    seals = [sealer.seal(*head(i)) for i in range(3)]
    stolen = sealer.export_key()
    lie = (seals[1].seq, "d" * 64)
    # Claiming epoch 1 with the key they have: the MAC is wrong for epoch 1.
    forger = Sealer(stolen, epoch=1, prev_seal=seals[0].mac)
    error = rejected([seals[0], forger.seal(*lie)])
    assert (error.epoch, error.kind) == (1, "mac")
    # What they can do is seal new epochs, from 3 on.
    forger = Sealer(stolen, epoch=3, prev_seal=seals[2].mac)
    verify_all([*seals, forger.seal(*head(3))])


@pytest.mark.parametrize(("source", "target"), [(1, 3), (3, 1), (0, 4), (2, 2)])
def test_a_seal_replayed_at_another_position_is_rejected(source: int, target: int) -> None:
    seals = make_seals(5)
    copy = seals[source]
    replayed = [*seals[:target], copy, *seals[target + 1 :]]
    if source == target:
        replayed = [*seals[: target + 1], copy, *seals[target + 1 :]]  # inserted twice
        target += 1
    error = rejected(replayed)
    assert (error.epoch, error.kind) == (target, "epoch")


def test_a_replayed_seal_relabelled_to_fit_is_rejected() -> None:
    seals = make_seals(5)
    moved = with_fields(seals[1], epoch=3, seq=seals[3].seq, hash=seals[3].hash)
    error = rejected([*seals[:3], moved, seals[4]])
    assert (error.epoch, error.kind) == (3, "mac")
    moved = with_fields(seals[1], epoch=3, prev_seal=seals[2].mac)
    error = rejected([*seals[:3], moved])
    assert (error.epoch, error.kind) == (3, "mac")


def test_a_seal_that_links_to_the_wrong_seal_is_rejected() -> None:
    seals = make_seals(3)
    wrong = Sealer(epoch_key(KEY, 2), epoch=2, prev_seal=seals[0].mac).seal(*head(2))
    error = rejected([*seals[:2], wrong])
    assert (error.epoch, error.kind) == (2, "link")


def test_a_sealed_head_that_goes_back_is_rejected() -> None:
    # Only a key holder can make this (the sealer itself refuses to).
    seals = make_seals(3)
    back = (seals[1].seq - 1, "c" * 64)
    mac = seal_mac(epoch_key(KEY, 2), 2, back, seals[1].mac)
    bad = Seal(epoch=2, seq=back[0], hash=back[1], prev_seal=seals[1].mac, mac=mac)
    error = rejected([*seals[:2], bad])
    assert (error.epoch, error.kind) == (2, "seq")


def test_a_failed_verifier_keeps_failing() -> None:
    seals = make_seals(3)
    verifier = SealVerifier(KEY)
    with pytest.raises(SealError) as first:
        verifier.feed(seals[1])
    with pytest.raises(SealError) as again:
        verifier.feed(seals[0])
    assert again.value is first.value
    with pytest.raises(SealError) as at_end:
        verifier.finish()
    assert at_end.value is first.value


def test_dropped_newest_seals_show_only_against_an_expected_count() -> None:
    seals = make_seals(5)
    verify_all(seals[:3])
    verifier = SealVerifier(KEY)
    for seal in seals[:3]:
        verifier.feed(seal)
    with pytest.raises(SealError) as info:
        verifier.finish(expect_epochs=5)
    assert (info.value.epoch, info.value.kind) == (3, "missing")


def test_verifying_from_a_later_epoch() -> None:
    seals = make_seals(6)
    verifier = SealVerifier(KEY, epoch=3, prev_seal=seals[2].mac)
    for seal in seals[3:]:
        verifier.feed(seal)
    verifier.finish(expect_epochs=6)


# --- seals against the log -----------------------------------------------------


def sealed_log(records: int, seal_after: list[int]) -> tuple[list[bytes], list[Seal]]:
    writer = ChainWriter()
    sealer = Sealer(KEY)
    lines, seals = [], []
    for i in range(records):
        record, line = writer.append("note", {"n": i})
        lines.append(line)
        if i in seal_after:
            seals.append(sealer.seal(record.seq, record.hash))
    return lines, seals


def test_a_chain_rewritten_with_every_hash_recomputed_is_caught_by_a_seal() -> None:
    lines, seals = sealed_log(10, seal_after=[3, 7])
    # The intruder rewrites from seq 5 on and recomputes every hash after it.
    start = msgspec.json.decode(lines[4])
    writer = ChainWriter(head=(start["seq"], start["hash"]))
    rewritten = lines[:5] + [writer.append("note", {"n": -i})[1] for i in range(5, 10)]
    assert verify_lines(rewritten) is None  # the chain alone can't tell

    hashes = {record["seq"]: record["hash"] for record in map(msgspec.json.decode, rewritten)}
    verifier = SealVerifier(KEY)
    verifier.feed(seals[0], log_hash=hashes[seals[0].seq])  # seq 3: untouched
    with pytest.raises(SealError) as info:
        verifier.feed(seals[1], log_hash=hashes[seals[1].seq])
    assert (info.value.epoch, info.value.kind) == (1, "head")

    # The same through the chain verifier's checkpoints.
    checkpoints = verify_all(seals).checkpoints
    assert verify_lines(lines, checkpoints=checkpoints) is None
    found = verify_lines(rewritten, checkpoints=checkpoints)
    assert found is not None
    assert (found.seq, found.kind) == (7, "checkpoint")


def test_the_rewriter_cannot_fix_the_seal_either() -> None:
    lines, seals = sealed_log(6, seal_after=[4])
    writer = ChainWriter()
    rewritten = [writer.append("note", {"n": -i})[1] for i in range(len(lines))]
    assert verify_lines(rewritten) is None
    new_head = msgspec.json.decode(rewritten[4])["hash"]
    error = rejected([with_fields(seals[0], hash=new_head)])
    assert (error.epoch, error.kind) == (0, "mac")


# --- key text --------------------------------------------------------------------


def test_key_text_round_trips() -> None:
    text = encode_key(KEY)
    assert text.startswith("thk1-" + KEY.hex() + "-")
    assert len(text) == 5 + 64 + 1 + 8
    assert decode_key(text) == KEY
    assert decode_key(f"  {text.upper()}\n") == KEY


@given(st.binary(min_size=32, max_size=32))
def test_any_key_round_trips(key: bytes) -> None:
    assert decode_key(encode_key(key)) == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a tracehound key"),
        ("hello", "not a tracehound key"),
        ("thk2-" + "00" * 32 + "-00000000", "unsupported key version 'thk2'"),
        ("thk1-" + "00" * 31 + "-00000000", "malformed key"),
        ("thk1-" + "zz" * 32 + "-00000000", "malformed key"),
        ("thk1-" + "00" * 32, "malformed key"),
        ("thk1-" + "00" * 32 + "-00000000", "checksum mismatch"),
    ],
)
def test_bad_key_text_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        decode_key(text)


def test_every_single_character_typo_is_caught_and_the_key_is_not_echoed() -> None:
    text = encode_key(KEY)
    for index in range(len("thk1-"), len(text)):
        if text[index] == "-":
            continue
        typo = "0" if text[index] != "0" else "1"
        with pytest.raises(KeyFormatError) as info:
            decode_key(text[:index] + typo + text[index + 1 :])
        assert KEY.hex() not in str(info.value)
        assert KEY.hex()[:16] not in str(info.value)


def test_encode_key_refuses_a_wrong_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encode_key(bytes(16))


# --- property: any run of heads seals and verifies; any tamper is caught -------


@given(
    st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12),
    st.binary(min_size=32, max_size=32),
    st.data(),
)
def test_sealed_runs_verify_and_any_field_edit_fails(
    steps: list[int], key: bytes, data: st.DataObject
) -> None:
    sealer = Sealer(key)
    seq = 0
    seals = []
    for step in steps:
        seq += step
        seals.append(sealer.seal(seq, blake3.blake3(str(seq).encode()).hexdigest()))
    verify_all(seals, key)

    at = data.draw(st.integers(min_value=0, max_value=len(seals) - 1))
    field = data.draw(st.sampled_from(["epoch", "seq", "hash", "prev_seal", "mac"]))
    original = getattr(seals[at], field)
    if isinstance(original, int):
        changed: object = original + 1
    else:
        changed = ("1" if original[0] != "1" else "2") + original[1:]
    seals[at] = with_fields(seals[at], **{field: changed})
    with pytest.raises(SealError) as info:
        verify_all(seals, key)
    assert info.value.epoch == at
