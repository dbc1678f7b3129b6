"""The tamper matrix over a real store: each tamper found, at the right first-break seq."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.evidence.chain import ChainRecord, ChainWriter, Head
from agent.evidence.keys import create_key
from agent.evidence.layout import KeyState, key_path, segment_files
from agent.evidence.seal import Sealer, decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import VerifyInputError, verify_store, verify_stream

Files = list[tuple[Path, list[bytes]]]


class Clock:
    def __call__(self) -> int:
        return 1_700_000_000 * 10**9


@pytest.fixture
def sealed_log(tmp_path: Path) -> tuple[bytes, Path]:
    """A sealed log of 60 notes over several segments, a checkpoint every 5 records."""
    state = tmp_path / "state"
    key = decode_key(create_key(state))
    with EvidenceStore(
        state,
        segment_max_bytes=2500,
        segment_max_age_s=3600,
        retain_max_bytes=10**9,
        checkpoint_every_records=5,
        seal_interval_s=3600,
        clock=Clock(),
    ) as store:
        for i in range(60):
            store.append("note", {"n": i, "msg": f"hello {i}"})
        store.commit()
    assert len(segment_files(state / "segments")) >= 3
    return key, state


def load(state: Path) -> Files:
    return [
        (p, p.read_bytes().splitlines(keepends=True)) for _, p in segment_files(state / "segments")
    ]


def save(files: Files) -> None:
    for path, lines in files:
        path.write_bytes(b"".join(lines))


def rec(line: bytes) -> ChainRecord:
    return msgspec.json.decode(line, type=ChainRecord)


def locate(files: Files, seq: int) -> tuple[int, int]:
    for f, (_, lines) in enumerate(files):
        for i, line in enumerate(lines):
            if rec(line).seq == seq:
                return f, i
    raise AssertionError(f"seq {seq} not found")


def a_note_in_segment(files: Files, segment: int, nth: int = 2) -> int:
    notes = [rec(line).seq for line in files[segment][1] if rec(line).type == "note"]
    return notes[nth]


def all_records(files: Files) -> list[ChainRecord]:
    return [rec(line) for _, lines in files for line in lines]


def check(state: Path, key: bytes | None, seq: int, kind: str, **kw: Any) -> None:
    report = verify_store(state, key=key, **kw)
    assert not report.ok, report.summary()
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (seq, kind), report.summary()
    assert report.where is not None


def test_untouched_log_verifies(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    report = verify_store(state, key=key)
    assert report.ok and report.seals_checked and report.first_break is None
    assert report.sealed_head is not None and report.head is not None
    assert verify_store(state, key=None).ok


@pytest.mark.parametrize("with_key", [True, False])
def test_one_byte_changed_in_a_body(sealed_log: tuple[bytes, Path], with_key: bool) -> None:
    key, state = sealed_log
    files = load(state)
    target = a_note_in_segment(files, 1)
    f, i = locate(files, target)
    files[f][1][i] = files[f][1][i].replace(b'"hello ', b'"hellp ')
    save(files)
    check(state, key if with_key else None, target, "hash")


def test_one_byte_changed_in_a_hash(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    target = a_note_in_segment(files, 1)
    f, i = locate(files, target)
    line = files[f][1][i]
    at = line.index(b'"hash":"') + len(b'"hash":"')
    flipped = b"1" if line[at : at + 1] != b"1" else b"2"
    files[f][1][i] = line[:at] + flipped + line[at + 1 :]
    save(files)
    check(state, key, target, "hash")


def test_a_record_deleted(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    target = a_note_in_segment(files, 1)
    f, i = locate(files, target)
    del files[f][1][i]
    save(files)
    check(state, key, target, "gap")


def test_two_records_swapped(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    target = a_note_in_segment(files, 1, nth=1)
    f, i = locate(files, target)
    lines = files[f][1]
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    save(files)
    check(state, key, target, "gap")


def test_a_record_inserted(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    target = a_note_in_segment(files, 1)
    f, i = locate(files, target)
    before = rec(files[f][1][i - 1])
    _, forged = ChainWriter(head=(before.seq, before.hash)).append("note", {"n": -1})
    files[f][1].insert(i, forged)
    save(files)
    check(state, key, target, "fork")


def test_tail_cut_is_caught_with_expect_head(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    last = rec(files[-1][1][-1])
    remembered: Head = (last.seq, last.hash)
    del files[-1][1][-3:]
    save(files)
    assert verify_store(state, key=key).ok  # a valid prefix: only a remembered head shows it
    check(state, key, last.seq - 2, "truncated", expect_head=remembered)


def test_expect_head_inside_the_log(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    middle = rec(files[1][1][3])
    assert verify_store(state, key=key, expect_head=(middle.seq, middle.hash)).ok
    check(state, key, middle.seq, "checkpoint", expect_head=(middle.seq, "0" * 64))


def test_a_whole_segment_removed(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    first_missing = rec(files[1][1][0]).seq
    files[1][0].unlink()
    check(state, key, first_missing, "gap")
    check(state, None, first_missing, "gap")


def rechain(
    files: Files,
    from_seq: int,
    edit: Callable[[ChainRecord, Head], tuple[str, Any]],
) -> Files:
    """Rewrite every record from ``from_seq`` on, with hashes and links recomputed."""
    first = all_records(files)[from_seq - 1]
    writer = ChainWriter(head=(first.seq, first.hash))
    out: Files = []
    for path, lines in files:
        new_lines: list[bytes] = []
        for line in lines:
            record = rec(line)
            if record.seq < from_seq:
                new_lines.append(line)
                continue
            head = writer.head
            assert head is not None
            type_, body = edit(record, head)
            if type_ == "segment.start":
                body = {
                    **body,
                    "previous": {"index": body["index"] - 1, "seq": head[0], "hash": head[1]},
                }
            new_lines.append(writer.append(type_, body)[1])
        out.append((path, new_lines))
    return out


def test_chain_rewritten_without_the_key_is_caught_by_the_seals(
    sealed_log: tuple[bytes, Path],
) -> None:
    key, state = sealed_log
    files = load(state)
    records = all_records(files)
    target = a_note_in_segment(files, 1)
    checkpoints = [r for r in records if r.type == "checkpoint"]
    last_good = max(c.body["seq"] for c in checkpoints if c.seq < target)
    first_forged = min(c.body["epoch"] for c in checkpoints if c.seq > target)
    previous_mac = next(c.body["mac"] for c in checkpoints if c.body["epoch"] == first_forged - 1)
    # The intruder holds the host's current key, which is of a later epoch.
    stolen = msgspec.json.decode(key_path(state).read_bytes(), type=KeyState)
    forger = Sealer(bytes.fromhex(stolen.key), epoch=first_forged, prev_seal=previous_mac)

    def edit(record: ChainRecord, head: Head) -> tuple[str, Any]:
        if record.seq == target:
            return "note", {**record.body, "msg": "nothing to see"}
        if record.type == "checkpoint":
            return "checkpoint", forger.seal(*head)
        return record.type, record.body

    save(rechain(files, target, edit))
    plain = verify_store(state, key=None)
    assert plain.ok and not plain.seals_checked  # the chain alone cannot tell
    check(state, key, last_good + 1, "checkpoint")
    report = verify_store(state, key=key)
    assert report.first_break is not None and "mac" in report.first_break.reason


def test_a_seal_replayed_from_another_position(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    files = load(state)
    checkpoints = [r for r in all_records(files) if r.type == "checkpoint"]
    replayed, victim = checkpoints[1], checkpoints[4]

    def edit(record: ChainRecord, head: Head) -> tuple[str, Any]:
        if record.seq == victim.seq:
            return "checkpoint", replayed.body
        return record.type, record.body

    save(rechain(files, victim.seq, edit))
    check(state, key, checkpoints[3].body["seq"] + 1, "checkpoint")


def test_wrong_key_is_a_seal_failure(sealed_log: tuple[bytes, Path]) -> None:
    _, state = sealed_log
    check(state, bytes(32), 0, "checkpoint")
    report = verify_store(state, key=bytes(32))
    assert report.first_break is not None and "mac" in report.first_break.reason
    assert "BROKEN at seq 0" in report.summary()


def test_verify_stream_of_the_whole_log(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    lines = [line for _, ls in load(state) for line in ls]
    assert verify_stream(lines, key=key).ok
    # Dropping the first segment's header is a cut head, unless the stream is partial.
    tail = lines[lines.index(next(x for x in lines[1:] if b'"segment.start"' in x)) :]
    assert not verify_stream(tail, key=key).ok
    mid = lines[7:]
    assert not verify_stream(mid).ok
    assert verify_stream(mid, partial=True).history_from == 7


def test_verify_a_single_concatenated_file(sealed_log: tuple[bytes, Path], tmp_path: Path) -> None:
    key, state = sealed_log
    dump = tmp_path / "log.ndjson"
    dump.write_bytes(b"".join(line for _, ls in load(state) for line in ls))
    assert verify_store(dump, key=key).ok
    dump.write_bytes(b"not json\n")
    report = verify_store(dump)
    assert not report.ok and report.first_break is not None
    assert report.first_break.kind == "malformed"


def test_nothing_to_verify(tmp_path: Path) -> None:
    with pytest.raises(VerifyInputError):
        verify_store(tmp_path)
    with pytest.raises(VerifyInputError):
        verify_store(tmp_path / "missing")


def test_report_is_json_encodable(sealed_log: tuple[bytes, Path]) -> None:
    key, state = sealed_log
    report = verify_store(state, key=key)
    assert json.loads(msgspec.json.encode(report))["ok"] is True


# --- names and foreign text in the report ----------------------------------------
# verify prints ``where`` and the break's reason; a file name or a record's
# text must not draw a fake verdict line or reach the terminal raw.

FORGED = "evil\nOK: 5 records, head 4:abcd  (SEQ:HASH, for --expect-head)\x1b[31m"


def assert_safe_report(text: str) -> None:
    for line in text.split("\n"):
        assert line.isprintable() and not line.startswith("OK:"), repr(line)


def test_a_break_in_a_file_with_a_forged_name_names_it_escaped(
    sealed_log: tuple[bytes, Path], tmp_path: Path
) -> None:
    _, state = sealed_log
    first = segment_files(state / "segments")[0][1]
    forged = tmp_path / f"{FORGED}.ndjson"
    lines = first.read_bytes().splitlines(keepends=True)
    forged.write_bytes(b"".join([lines[0], b"garbage\n", *lines[1:]]))
    report = verify_store([forged])
    assert not report.ok and report.where == f"{forged.name!r} line 2"
    assert_safe_report(report.summary())


def test_an_unknown_key_in_a_record_is_quoted_escaped(
    sealed_log: tuple[bytes, Path], tmp_path: Path
) -> None:
    """msgspec's 'unknown field' error quotes the key; the reason escapes it."""
    _, state = sealed_log
    files = load(state)
    _, lines = files[-1]
    record = json.loads(lines[-1])
    record["x\nOK: forged\x1b[2J"] = 1
    lines.append(json.dumps(record).encode() + b"\n")
    save(files)
    report = verify_store(state)
    assert report.first_break is not None and report.first_break.kind == "malformed"
    assert report.first_break.reason.startswith("'not a chain record: ")
    assert report.first_break.reason.isprintable()
    assert_safe_report(report.summary())


def test_nothing_to_verify_in_a_forged_directory_is_escaped(tmp_path: Path) -> None:
    forged = tmp_path / FORGED
    forged.mkdir()
    with pytest.raises(VerifyInputError) as err:
        verify_store(forged)
    assert str(err.value) == f"{str(forged)!r}: no segment files (NNNNNNNNNNNNNNNN.ndjson)"
