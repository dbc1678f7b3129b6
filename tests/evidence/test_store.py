"""The on-disk evidence store: segments, seals, rotation, retention, recovery, fsync."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import blake3
import msgspec
import pytest

from agent.evidence.keys import create_key
from agent.evidence.layout import KeyState, StoreCorruptError, key_path, segment_files
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore, StoreLockedError
from agent.evidence.verify import verify_store


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.ns = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 10**9)


def open_store(path: Path, clock: Clock | None = None, **overrides: Any) -> EvidenceStore:
    options: dict[str, Any] = {
        "segment_max_bytes": 10_000_000,
        "segment_max_age_s": 3600,
        "retain_max_bytes": 10**9,
        "checkpoint_every_records": 5,
        "seal_interval_s": 3600,
        "fsync": "batch",
        "clock": clock or Clock(),
    }
    options.update(overrides)
    return EvidenceStore(path, **options)


def records(state: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, path in segment_files(state / "segments"):
        out.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return out


def write_notes(store: EvidenceStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append("note", {"n": i, "msg": f"hello {i}"})
    store.commit()


@pytest.fixture
def key_and_state(tmp_path: Path) -> tuple[bytes, Path]:
    state = tmp_path / "state"
    return decode_key(create_key(state)), state


def test_sealed_store_chains_and_checkpoints(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    with open_store(state) as store:
        assert store.sealed
        write_notes(store, 12)
    recs = records(state)
    assert recs[0]["type"] == "segment.start" and recs[0]["body"]["previous"] is None
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    checkpoints = [r for r in recs if r["type"] == "checkpoint"]
    assert len(checkpoints) == 3  # after 5, after 10, and the final one on close
    for cp in checkpoints:
        before = recs[cp["seq"] - 1]
        assert (cp["body"]["seq"], cp["body"]["hash"]) == (before["seq"], before["hash"])
    assert [cp["body"]["epoch"] for cp in checkpoints] == [0, 1, 2]
    report = verify_store(state, key=key)
    assert report.ok and report.seals_checked and report.seals == 3
    assert report.head == (recs[-1]["seq"], recs[-1]["hash"])


def test_unsealed_store_chains_and_says_so(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert not store.sealed
        write_notes(store, 12)
    assert not [r for r in records(tmp_path) if r["type"] == "checkpoint"]
    report = verify_store(tmp_path, key=None)
    assert report.ok and not report.seals_checked and report.seals == 0
    assert "NOT checked" in report.summary()
    with_key = verify_store(tmp_path, key=bytes(32))
    assert not with_key.ok and with_key.first_break is not None
    assert "no seals" in with_key.first_break.reason


def test_reserved_types_are_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        for reserved in ("checkpoint", "segment.start", "segment.pruned", "recovered"):
            with pytest.raises(ValueError, match="reserved"):
                store.append(reserved, {})


def test_keygen_refuses_a_second_key_and_the_key_ratchets(
    key_and_state: tuple[bytes, Path],
) -> None:
    key, state = key_and_state
    path = key_path(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        create_key(state)
    with open_store(state) as store:
        write_notes(store, 5)
    on_disk = msgspec.json.decode(path.read_bytes(), type=KeyState)
    assert on_disk.epoch == 1
    assert on_disk.key != key.hex()  # epoch 0's key is gone from the host
    assert not list(path.parent.glob("*.new"))


def test_reopen_resumes_the_chain(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    with open_store(state) as store:
        write_notes(store, 7)
        head = store.head
    with open_store(state) as store:
        write_notes(store, 7, start=7)
        assert store.head is not None and head is not None and store.head[0] > head[0]
    report = verify_store(state, key=key)
    assert report.ok, report.summary()


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    with open_store(tmp_path), pytest.raises(StoreLockedError):
        open_store(tmp_path)


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_fsync_policies_are_accepted(key_and_state: tuple[bytes, Path], policy: str) -> None:
    key, state = key_and_state
    with open_store(state, fsync=policy) as store:
        store.append("note", {"n": 1})
        on_disk = segment_files(state / "segments")[0][1].read_bytes().count(b"\n")
        # "always" commits inside append; the others wait for commit().
        assert on_disk == (2 if policy == "always" else 1)
        store.commit()
    assert verify_store(state, key=key).ok


@pytest.mark.parametrize("policy", ["sometimes", "ALWAYS", ""])
def test_bad_fsync_policy_is_refused(tmp_path: Path, policy: str) -> None:
    with pytest.raises(ValueError, match="fsync"):
        open_store(tmp_path, fsync=policy)


def test_rotation_by_size_links_segments(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    with open_store(state, segment_max_bytes=1500) as store:
        write_notes(store, 40)
    files = segment_files(state / "segments")
    assert len(files) >= 3
    previous_last: dict[str, Any] | None = None
    for index, path in files:
        lines = [json.loads(line) for line in path.read_bytes().splitlines()]
        header = lines[0]
        assert header["type"] == "segment.start" and header["body"]["index"] == index
        if previous_last is None:
            assert header["body"]["previous"] is None
        else:
            assert header["body"]["previous"] == {
                "index": index - 1,
                "seq": previous_last["seq"],
                "hash": previous_last["hash"],
            }
            assert previous_last["type"] == "checkpoint"  # closed with a checkpoint first
        previous_last = lines[-1]
    assert verify_store(state, key=key).ok


def test_rotation_by_age(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    clock = Clock()
    with open_store(state, clock, segment_max_age_s=60) as store:
        write_notes(store, 2)
        clock.advance(30)
        store.tick()
        assert store.segment_index == 0
        clock.advance(31)
        store.tick()
        assert store.segment_index == 1
        write_notes(store, 2)
    assert len(segment_files(state / "segments")) == 2
    assert verify_store(state, key=key).ok


def test_checkpoint_by_time(key_and_state: tuple[bytes, Path]) -> None:
    _, state = key_and_state
    clock = Clock()
    with open_store(state, clock, seal_interval_s=10, checkpoint_every_records=1000) as store:
        write_notes(store, 2)
        clock.advance(11)
        store.tick()
        assert records(state)[-1]["type"] == "checkpoint"


def test_retention_prunes_and_records_it(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    with open_store(state, segment_max_bytes=1500, retain_max_bytes=4000) as store:
        write_notes(store, 80)
    files = segment_files(state / "segments")
    assert files[0][0] > 0  # the oldest are gone
    total = sum(p.stat().st_size for _, p in files)
    recs = records(state)
    pruned = [r for r in recs if r["type"] == "segment.pruned"]
    assert pruned
    named = {s["index"] for r in pruned for s in r["body"]["segments"]}
    assert files[0][0] - 1 in named
    report = verify_store(state, key=key)
    assert report.ok, report.summary()
    assert report.history_from == recs[0]["seq"] > 0
    assert report.pruned and report.pruned[-1].index == files[0][0] - 1
    assert "pruned" in report.summary()
    assert total < 4000 + 1500 + 1000


def test_unrecorded_removal_of_the_oldest_segment_is_a_gap(
    key_and_state: tuple[bytes, Path],
) -> None:
    key, state = key_and_state
    with open_store(state, segment_max_bytes=1500) as store:
        write_notes(store, 40)
    files = segment_files(state / "segments")
    files[0][1].unlink()
    report = verify_store(state, key=key)
    assert not report.ok and report.first_break is not None
    assert report.first_break.kind == "gap" and report.first_break.seq == 0


def _torn_store(state: Path) -> tuple[Path, int]:
    with open_store(state) as store:
        write_notes(store, 7)
    path = segment_files(state / "segments")[-1][1]
    return path, path.stat().st_size


@pytest.mark.parametrize(
    "tail",
    [b'{"body":{"n":7', b"garbage that is a full line\n", b"\x00\x00\x00\x00"],
    ids=["no-newline", "bad-line", "zeros"],
)
def test_crash_recovery_keeps_torn_bytes_and_records_it(
    key_and_state: tuple[bytes, Path], tail: bytes
) -> None:
    key, state = key_and_state
    path, good_size = _torn_store(state)
    with open(path, "ab") as handle:
        handle.write(tail)
    with open_store(state) as store:
        write_notes(store, 3, start=100)
    kept = state / "recovered" / f"{path.stem}-{good_size}.torn"
    assert kept.read_bytes() == tail
    recovered = [r for r in records(state) if r["type"] == "recovered"]
    assert len(recovered) == 1
    assert recovered[0]["body"] == {
        "segment": path.name,
        "offset": good_size,
        "length": len(tail),
        "blake3": blake3.blake3(tail).hexdigest(),
        "kept_as": f"recovered/{kept.name}",
        "seal": None,
    }
    report = verify_store(state, key=key)
    assert report.ok and report.recovered == 1, report.summary()


def test_torn_complete_looking_last_record_is_recovered(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    path, _ = _torn_store(state)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:-1])  # last line lost its newline
    with open_store(state) as store:
        write_notes(store, 1)
    recovered = [r for r in records(state) if r["type"] == "recovered"]
    assert recovered[0]["body"]["seal"]["epoch"] == 1  # the torn checkpoint's seal, kept
    report = verify_store(state, key=key)
    assert report.ok and report.seals == 3, report.summary()


def test_only_header_torn_is_rewritten(key_and_state: tuple[bytes, Path]) -> None:
    key, state = key_and_state
    with open_store(state, segment_max_bytes=1500) as store:
        write_notes(store, 20)
    path = segment_files(state / "segments")[-1][1]
    header = path.read_bytes().splitlines(keepends=True)[0]
    path.write_bytes(header[:20])
    with open_store(state, segment_max_bytes=1500) as store:
        write_notes(store, 2)
    report = verify_store(state, key=key)
    assert report.ok and report.recovered == 1, report.summary()


def _crashed_store(state: Path, notes: int) -> Path:
    """A store left as a crash leaves it: ``notes`` records committed, no
    final checkpoint (the last checkpoint after the 5th record)."""
    store = open_store(state)
    write_notes(store, notes)
    store.discard()  # unlock without the closing seal, as a crash would
    return segment_files(state / "segments")[-1][1]


def test_bad_line_after_the_last_checkpoint_is_not_recovered(
    key_and_state: tuple[bytes, Path],
) -> None:
    _, state = key_and_state
    path = _crashed_store(state, 8)  # header, 5 notes, checkpoint, 3 notes
    lines = path.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[6])["type"] == "checkpoint"
    lines[7] = lines[7].replace(b"hello", b"jello")  # after it, not the last line
    path.write_bytes(b"".join(lines))
    with pytest.raises(StoreCorruptError, match="not a crash"):
        open_store(state)


def test_bad_line_before_the_last_checkpoint_is_left_to_the_verifier(
    key_and_state: tuple[bytes, Path],
) -> None:
    """The open checks only from the last checkpoint on; sealed history
    before it is the background verify's (and ``evidence verify``'s)."""
    key, state = key_and_state
    path = _crashed_store(state, 8)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"hello", b"jello")
    path.write_bytes(b"".join(lines))
    with open_store(state) as store:
        write_notes(store, 2, start=100)
        assert store.head is not None and store.head[0] == len(lines) + 1
    report = verify_store(state, key=key)
    assert not report.ok and report.first_break is not None
    assert report.first_break.seq == 2 and report.first_break.kind == "hash"


def test_key_file_behind_the_log_is_ratcheted_on_open(key_and_state: tuple[bytes, Path]) -> None:
    """Crash after a checkpoint was written but before the key file was replaced."""
    key, state = key_and_state
    with open_store(state) as store:
        write_notes(store, 4)
        old_key_file = key_path(state).read_bytes()
        write_notes(store, 1)  # the 5th record: a checkpoint, and the key ratchets
    key_path(state).write_bytes(old_key_file)
    with open_store(state) as store:
        write_notes(store, 6)
    report = verify_store(state, key=key)
    assert report.ok and report.seals >= 3, report.summary()
