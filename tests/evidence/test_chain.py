"""The hash chain: writing records, and naming the first break of a tampered log."""

from __future__ import annotations

import json

import blake3
import msgspec
import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.canonical import CanonicalError, canonical
from agent.evidence.chain import (
    ZERO_HASH,
    Break,
    ChainRecord,
    ChainVerifier,
    ChainWriter,
    record_hash,
    verify_lines,
)

N = 8  # records in the sample log; every tamper is tried at every position


def make_log(n: int = N, *, start_seq: int = 0) -> list[bytes]:
    writer = ChainWriter(start_seq=start_seq)
    return [writer.append("note", {"msg": f"hello {i}", "n": i})[1] for i in range(n)]


def fields(line: bytes) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(line)
    return decoded


def hash_at(lines: list[bytes], index: int) -> str:
    return str(fields(lines[index])["hash"])


def first_break(lines: list[bytes], **kwargs: object) -> Break | None:
    return verify_lines(lines, **kwargs)  # type: ignore[arg-type]


# --- writing -----------------------------------------------------------------


def test_first_record_starts_at_zero_with_zero_prev() -> None:
    writer = ChainWriter()
    assert writer.head is None
    assert writer.next_seq == 0
    record, line = writer.append("exec", {"argv": ["/bin/true"], "pid": 7})
    assert record.seq == 0
    assert record.prev == ZERO_HASH
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert writer.head == (0, record.hash)
    assert writer.next_seq == 1


def test_line_is_the_canonical_record() -> None:
    record, line = ChainWriter().append("exec", {"b": [1, "é"], "a": None})
    assert line == canonical(msgspec.structs.asdict(record)) + b"\n"
    assert line.startswith(b'{"body":{"a":null,"b":[1,"\xc3\xa9"]},"hash":"')
    assert msgspec.json.decode(line, type=ChainRecord) == record


def test_hash_is_blake3_of_the_jcs_form_without_hash() -> None:
    record, line = ChainWriter().append("net", {"dst": "10.0.0.1", "port": 443})
    without_hash = {k: v for k, v in fields(line).items() if k != "hash"}
    expected = blake3.blake3(rfc8785.dumps(without_hash)).hexdigest()  # type: ignore[arg-type]
    assert record.hash == expected
    assert record_hash(record) == expected
    assert record_hash(fields(line)) == expected  # a hash key is left out
    assert record_hash(without_hash) == expected


def test_records_link_to_the_previous_hash() -> None:
    writer = ChainWriter()
    first, _ = writer.append("a", 1)
    second, _ = writer.append("b", [2])
    assert second.seq == 1
    assert second.prev == first.hash
    assert first.hash != second.hash


def test_start_seq_and_resume_from_a_head() -> None:
    writer = ChainWriter(start_seq=100)
    record, _ = writer.append("a", None)
    assert record.seq == 100
    resumed = ChainWriter(head=(record.seq, record.hash))
    assert resumed.head == (100, record.hash)
    nxt, _ = resumed.append("b", None)
    assert (nxt.seq, nxt.prev) == (101, record.hash)


def test_struct_body_is_stored_as_plain_json() -> None:
    class Exec(msgspec.Struct):
        pid: int
        argv: tuple[str, ...]

    record, line = ChainWriter().append("exec", Exec(1, ("sh", "-c")))
    assert record.body == {"pid": 1, "argv": ["sh", "-c"]}
    assert msgspec.json.decode(line, type=ChainRecord) == record


def test_a_bad_body_is_refused_and_leaves_the_writer_unchanged() -> None:
    writer = ChainWriter()
    writer.append("a", 1)
    head = writer.head
    with pytest.raises(CanonicalError) as info:
        writer.append("b", {"x": 0.5})
    assert info.value.path == "$.body.x"
    with pytest.raises(CanonicalError) as info:
        writer.append("b", 2.5)
    assert info.value.path == "$.body"
    with pytest.raises(ValueError, match="type"):
        writer.append("", 1)
    with pytest.raises(CanonicalError) as info:
        writer.append("\ud800", 1)
    assert info.value.path == "$.type"
    assert writer.head == head
    assert writer.next_seq == 1


@pytest.mark.parametrize(
    "head", [(-1, ZERO_HASH), (0, "0" * 63), (0, "A" * 64), (True, ZERO_HASH), (2**53, ZERO_HASH)]
)
def test_a_bad_resume_head_is_refused(head: tuple[int, str]) -> None:
    with pytest.raises(ValueError):
        ChainWriter(head=head)


# --- verifying a good log ------------------------------------------------------


def test_a_good_log_verifies() -> None:
    lines = make_log()
    verifier = ChainVerifier()
    for line in lines:
        assert verifier.feed_line(line) is None
    assert verifier.finish() is None
    assert verifier.verified == N
    assert verifier.head == (N - 1, hash_at(lines, N - 1))
    assert verifier.broken is None


def test_lines_may_come_without_their_newline() -> None:
    assert first_break([line.rstrip(b"\n") for line in make_log()]) is None


def test_a_log_may_start_at_any_seq() -> None:
    assert first_break(make_log(start_seq=5000)) is None


def test_a_continued_log_verifies_with_its_genesis() -> None:
    writer = ChainWriter()
    old = [writer.append("a", i)[1] for i in range(3)]
    assert writer.head is not None
    genesis = writer.head
    new = [writer.append("a", i)[1] for i in range(3, 6)]
    assert first_break(old) is None
    assert first_break(new, genesis=genesis) is None
    found = first_break(new)
    assert found is not None
    assert (found.seq, found.kind) == (2, "gap")
    assert "genesis=" in found.reason
    found = first_break(new, genesis=(2, "f" * 64))
    assert found is not None
    assert (found.seq, found.kind) == (3, "link")


def test_an_empty_log_has_no_break_unless_a_head_was_expected() -> None:
    assert first_break([]) is None
    found = first_break([], expect_head=(3, ZERO_HASH))
    assert found is not None
    assert (found.seq, found.kind) == (None, "truncated")


# --- tampering: the first break is named at the right seq ---------------------


def change_byte(line: bytes, index: int) -> bytes:
    old = line[index : index + 1]
    new = b"j" if old != b"j" else b"k"
    return line[:index] + new + line[index + 1 :]


@pytest.mark.parametrize("k", range(N))
def test_one_byte_changed_in_a_body(k: int) -> None:
    lines = make_log()
    at = lines[k].index(b"hello")
    lines[k] = change_byte(lines[k], at)
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 1, "hash")


@pytest.mark.parametrize("k", range(N))
def test_one_hex_digit_changed_in_a_hash(k: int) -> None:
    lines = make_log()
    at = lines[k].index(b'"hash":"') + len(b'"hash":"') + 10
    digit = lines[k][at : at + 1]
    lines[k] = lines[k][:at] + (b"0" if digit != b"0" else b"1") + lines[k][at + 1 :]
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.kind) == (k, "hash")


@pytest.mark.parametrize("k", range(N))
def test_a_non_hex_byte_in_a_hash(k: int) -> None:
    lines = make_log()
    at = lines[k].index(b'"hash":"') + len(b'"hash":"') + 3
    lines[k] = lines[k][:at] + b"g" + lines[k][at + 1 :]
    found = first_break(lines)
    assert found is not None
    assert found.kind == "malformed"
    assert found.line == k + 1
    # The seq due there, unknown only for a first line with no genesis.
    assert found.seq == (k if k > 0 else None)


@pytest.mark.parametrize("k", range(1, N - 1))
def test_a_record_deleted(k: int) -> None:
    lines = make_log()
    del lines[k]
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 1, "gap")


def test_the_first_record_deleted() -> None:
    lines = make_log()[1:]
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (0, 1, "gap")
    assert "start" in found.reason


def test_the_last_record_deleted_needs_an_expected_head() -> None:
    full = make_log()
    lines = full[:-1]
    assert first_break(lines) is None  # a shorter chain is still a chain
    found = first_break(lines, expect_head=(N - 1, hash_at(full, N - 1)))
    assert found is not None
    assert (found.seq, found.kind) == (N - 1, "truncated")


@pytest.mark.parametrize("k", range(N - 1))
def test_two_records_swapped(k: int) -> None:
    lines = make_log()
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 1, "gap")


@pytest.mark.parametrize("k", range(1, N))
def test_a_consistent_forged_record_inserted(k: int) -> None:
    # The strongest insertion without a rewrite: a record that links
    # correctly to seq k-1 and carries seq k. It verifies; the real seq k
    # after it cannot, and two records now claim seq k.
    lines = make_log()
    forger = ChainWriter(head=(k - 1, hash_at(lines, k - 1)))
    _, forged = forger.append("note", {"msg": "forged", "n": -1})
    lines.insert(k, forged)
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 2, "fork")


@pytest.mark.parametrize("k", range(1, N))
def test_a_copy_of_the_previous_record_inserted(k: int) -> None:
    lines = make_log()
    lines.insert(k, lines[k - 1])
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 1, "repeat")


@pytest.mark.parametrize("k", range(2, N))
def test_a_copy_of_an_older_record_inserted(k: int) -> None:
    lines = make_log()
    lines.insert(k, lines[0])
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (k, k + 1, "backwards")


@pytest.mark.parametrize("k", range(N))
def test_a_record_from_another_log_inserted(k: int) -> None:
    lines = make_log()
    other = ChainWriter(start_seq=k)
    _, stranger = other.append("note", {"msg": "elsewhere"})
    lines.insert(k, stranger)
    found = first_break(lines)
    assert found is not None
    assert found.seq == k
    assert found.kind == ("link" if k > 0 else "fork")


@pytest.mark.parametrize("keep", range(1, N))
def test_tail_cut_with_an_expected_head(keep: int) -> None:
    full = make_log()
    head = (N - 1, hash_at(full, N - 1))
    assert first_break(full, expect_head=head) is None
    found = first_break(full[:keep], expect_head=head)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (keep, None, "truncated")
    assert f"seq {keep - 1}" in found.reason


def test_tail_cut_mid_line() -> None:
    lines = make_log()
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (N - 1, N, "malformed")


def test_expected_head_with_another_hash() -> None:
    found = first_break(make_log(), expect_head=(N - 1, "a" * 64))
    assert found is not None
    assert (found.seq, found.kind) == (N - 1, "checkpoint")


def test_expected_head_inside_the_log_needs_a_checkpoint() -> None:
    lines = make_log()
    head = (3, hash_at(lines, 3))
    with pytest.raises(ValueError, match="checkpoints="):
        first_break(lines, expect_head=head)
    assert first_break(lines, expect_head=head, checkpoints=[head]) is None
    found = first_break(lines, expect_head=(3, "c" * 64), checkpoints=[head])
    assert found is not None
    assert (found.seq, found.kind) == (3, "checkpoint")


def test_expected_head_before_the_log_is_a_caller_error() -> None:
    lines = make_log(start_seq=10)
    with pytest.raises(ValueError, match="before"):
        first_break(lines, expect_head=(2, ZERO_HASH), checkpoints=[])


def test_a_rewrite_with_every_hash_recomputed_shows_only_against_checkpoints() -> None:
    lines = make_log()
    checkpoints = [(2, hash_at(lines, 2)), (5, hash_at(lines, 5))]
    # Rewrite from seq 4 on, recomputing every hash: the chain itself is fine.
    writer = ChainWriter(head=(3, hash_at(lines, 3)))
    rewritten = lines[:4] + [writer.append("note", {"msg": "lie", "n": i})[1] for i in range(4, N)]
    assert first_break(rewritten) is None
    found = first_break(rewritten, checkpoints=checkpoints)
    assert found is not None
    assert (found.seq, found.kind) == (5, "checkpoint")
    assert first_break(lines, checkpoints=checkpoints) is None


def test_conflicting_checkpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="two different"):
        ChainVerifier(checkpoints=[(1, ZERO_HASH), (1, "f" * 64)])


# --- malformed and non-canonical lines -------------------------------------------


def reencode(line: bytes, **changes: object) -> bytes:
    record = fields(line)
    record.update(changes)
    return canonical(record) + b"\n"


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"not json\n", "malformed"),
        (b"\n", "malformed"),
        (b"", "malformed"),
        (b"[1,2]\n", "malformed"),
        (b'{"seq":1}\n', "malformed"),
    ],
)
def test_unreadable_lines(bad: bytes, kind: str) -> None:
    lines = make_log()
    lines[3] = bad
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (3, 4, kind)


def test_invalid_utf8_is_malformed() -> None:
    lines = make_log()
    lines[3] = lines[3].replace(b"hello", b"h\xffllo")
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (3, 4, "malformed")


def test_a_first_record_with_a_rewritten_prev_breaks_at_it() -> None:
    lines = make_log()
    record = fields(lines[0])
    record["prev"] = "1" * 64
    record["hash"] = record_hash(record)
    lines[0] = canonical(record) + b"\n"
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.line, found.kind) == (0, 1, "link")


def test_an_unknown_field_is_malformed() -> None:
    lines = make_log()
    record = fields(lines[3])
    record["extra"] = 1
    lines[3] = canonical(record)
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.kind) == (3, "malformed")


def test_a_float_in_a_body_is_not_canonical() -> None:
    lines = make_log()
    lines[3] = lines[3].replace(b'"n":3', b'"n":3.0')
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.kind) == (3, "noncanonical")
    assert "$.body.n" in found.reason


def test_a_reformatted_line_is_not_canonical() -> None:
    lines = make_log()
    lines[3] = json.dumps(fields(lines[3]), indent=1).encode()
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.kind) == (3, "noncanonical")


def test_a_duplicated_key_is_not_canonical() -> None:
    # Two parsers may read a duplicated key differently: only one form is allowed.
    lines = make_log()
    lines[3] = lines[3].replace(b'{"body":', b'{"type":"x","body":', 1)
    found = first_break(lines)
    assert found is not None
    assert (found.seq, found.kind) == (3, "noncanonical")


def test_the_first_break_sticks() -> None:
    lines = make_log()
    lines[2] = b"garbage"
    verifier = ChainVerifier()
    results = [verifier.feed_line(line) for line in lines]
    assert results[:2] == [None, None]
    first = results[2]
    assert first is not None
    assert all(result is first for result in results[2:])
    assert verifier.finish(expect_head=(99, ZERO_HASH)) is first
    assert verifier.broken is first
    assert verifier.verified == 2


def test_break_reads_as_one_line() -> None:
    lines = make_log()
    del lines[4]
    found = first_break(lines)
    assert str(found) == "line 5, seq 4: gap: " + (found.reason if found else "")
    assert "\n" not in str(found)


# --- property: any single tamper is found at its seq -------------------------


@given(
    st.integers(min_value=2, max_value=12),
    st.data(),
)
def test_any_byte_change_inside_a_record_breaks_at_that_record(n: int, data: st.DataObject) -> None:
    lines = make_log(n)
    k = data.draw(st.integers(min_value=0, max_value=n - 1), label="record")
    body = lines[k].rstrip(b"\n")
    at = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="byte")
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != body[at]))
    lines[k] = body[:at] + bytes([value]) + body[at + 1 :] + b"\n"
    found = first_break(lines)
    assert found is not None
    assert found.line == k + 1
    if k > 0:  # on the first line, with no genesis, the seq is whatever it claims
        assert found.seq == k
