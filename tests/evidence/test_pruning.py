"""Retention and the seals: a legitimately pruned log verifies with the key,
a forged ``segment.pruned`` record (chained, but after the last seal) does
not, and a crash anywhere in pruning leaves a log that verifies once the
store has opened again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.evidence.chain import ChainRecord, ChainWriter, Head
from agent.evidence.keys import create_key
from agent.evidence.layout import StoreCorruptError, segment_files
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import verify_store
from tests.conftest import REPO, TRACEHOUND

NOW_NS = 1_700_000_000 * 10**9
PRUNING: dict[str, Any] = {
    "segment_max_bytes": 1500,
    "segment_max_age_s": 3600,
    "retain_max_bytes": 8000,
    "checkpoint_every_records": 5,
    "seal_interval_s": 3600,
}


def open_store(state: Path, **overrides: Any) -> EvidenceStore:
    return EvidenceStore(state, **{**PRUNING, **overrides}, clock=lambda: NOW_NS)


def write_notes(store: EvidenceStore, n: int) -> None:
    for i in range(n):
        store.append("note", {"n": i, "msg": f"hello {i}"})
    store.commit()


def lines_of(state: Path) -> list[tuple[Path, int, ChainRecord]]:
    """Every record with its file and 1-based line."""
    return [
        (path, number, msgspec.json.decode(line, type=ChainRecord))
        for _, path in segment_files(state / "segments")
        for number, line in enumerate(path.read_bytes().splitlines(), 1)
    ]


def verify_cli(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(state), *extra],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture
def pruned(tmp_path: Path) -> tuple[str, Path]:
    """A sealed log that retention has pruned several times."""
    state = tmp_path / "state"
    key = create_key(state)
    with open_store(state) as store:
        write_notes(store, 80)
    files = segment_files(state / "segments")
    assert files[0][0] > 1 and len(files) >= 4
    return key, state


def test_legitimate_pruning_verifies_with_the_key(pruned: tuple[str, Path]) -> None:
    key, state = pruned
    records = [r for _, _, r in lines_of(state)]
    prunings = [i for i, r in enumerate(records) if r.type == "segment.pruned"]
    assert prunings
    for i in prunings:  # each sealed by the very next record
        seal = records[i + 1]
        assert seal.type == "checkpoint", seal
        assert (seal.body["seq"], seal.body["hash"]) == (records[i].seq, records[i].hash)
    report = verify_store(state, key=decode_key(key))
    assert report.ok and report.seals_checked, report.summary()
    assert report.history_from == records[0].seq > 0 and report.pruned
    head = f"{records[-1].seq}:{records[-1].hash}"
    out = verify_cli(state, "--key", key, "--expect-head", head)
    assert out.returncode == 0 and out.stdout.startswith("OK:"), out.stdout + out.stderr


def test_forged_pruning_record_after_the_last_seal_is_a_break(pruned: tuple[str, Path]) -> None:
    key, state = pruned
    records = lines_of(state)
    last = records[-1][2]
    assert last.type == "checkpoint"  # closed cleanly: the head is sealed
    remembered: Head = (last.seq, last.hash)
    # The intruder deletes the two oldest segments and explains them away
    # with a chained but unsealed segment.pruned record at the end.
    files = segment_files(state / "segments")
    gone = []
    for index, path in files[:2]:
        mine = [r for p, _, r in records if p == path]
        gone.append({"index": index, "first_seq": mine[0].seq, "last_seq": mine[-1].seq,
                     "last_hash": mine[-1].hash, "bytes": path.stat().st_size})  # fmt: skip
        path.unlink()
    forged, line = ChainWriter(head=remembered).append("segment.pruned", {"segments": gone})
    tail = files[-1][1]
    with open(tail, "ab") as handle:
        handle.write(line)
    at_line = len(tail.read_bytes().splitlines())

    plain = verify_store(state)
    assert plain.ok and not plain.seals_checked  # the chain alone cannot tell
    for expect in (None, remembered):
        report = verify_store(state, key=decode_key(key), expect_head=expect)
        assert not report.ok and report.first_break is not None, report.summary()
        assert (report.first_break.seq, report.first_break.kind) == (forged.seq, "checkpoint")
        assert "segment.pruned record that no seal covers" in report.first_break.reason
        assert report.where == f"{tail.name} line {at_line}"
    out = verify_cli(state, "--key", key, "--expect-head", f"{last.seq}:{last.hash}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith(f"BROKEN at seq {forged.seq} ({tail.name} line {at_line})")
    # A restart must not seal the forgery: the store refuses to write on it.
    with pytest.raises(StoreCorruptError, match=f"seq {forged.seq} is not sealed"):
        open_store(state, retain_max_bytes=10**9)
    again = verify_store(state, key=decode_key(key), expect_head=remembered)
    assert not again.ok and again.first_break is not None
    assert again.first_break.seq == forged.seq


def test_forged_pruning_record_does_not_count_in_a_partial_stream(
    pruned: tuple[str, Path],
) -> None:
    """A stream that starts mid-way takes its start on trust: no pruning
    record is needed, so an unsealed one explains nothing and is no break."""
    key, state = pruned
    lines = [p.read_bytes() for _, p in segment_files(state / "segments")]
    records = lines_of(state)
    last = records[-1][2]
    _, line = ChainWriter(head=(last.seq, last.hash)).append("segment.pruned", {"segments": []})
    out = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", "-", "--key", key],
        input=b"".join(lines) + line, capture_output=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert b"NOT sealed" in out.stdout  # but said to be unsealed


CRASH_IN_PRUNING = """
import os, sys
from agent.evidence.store import EvidenceStore

class Crashing(EvidenceStore):
    pruning = False
    def _append_record(self, type, body):
        self.pruning = self.pruning or type == "segment.pruned"
        return super()._append_record(type, body)
    def _persist_key(self):
        if self.pruning:  # the seal over the pruning record is durable, nothing deleted
            os._exit(3)
        super()._persist_key()

store = Crashing(sys.argv[1], **{options})
for i in range(200):
    store.append("note", {{"n": i, "msg": f"hello {{i}}"}})
    store.commit()
"""


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[bytes, Path]:
    """A store that died in pruning, after its seal, before any deletion
    (a real process exit, nothing cleaned up)."""
    state = tmp_path / "state"
    key = decode_key(create_key(state))
    code = CRASH_IN_PRUNING.format(options=json.dumps(PRUNING))
    child = subprocess.run([sys.executable, "-c", code, str(state)], cwd=REPO, timeout=60)
    assert child.returncode == 3
    assert segment_files(state / "segments")[0][0] == 0  # nothing deleted
    assert lines_of(state)[-2][2].type == "segment.pruned"
    return key, state


def test_crash_after_the_seal_before_deleting(crashed: tuple[bytes, Path]) -> None:
    key, state = crashed
    assert verify_store(state, key=key).ok  # recorded as pruned, still there
    with open_store(state) as store:  # the key file catches up; retention runs again
        assert segment_files(state / "segments")[0][0] > 0
        write_notes(store, 3)
    report = verify_store(state, key=key)
    assert report.ok and report.history_from, report.summary()


@pytest.mark.parametrize("cut", ["torn", "lost"])
def test_crash_before_the_seal_is_durable(crashed: tuple[bytes, Path], cut: str) -> None:
    """The checkpoint over the pruning record half-written, or not at all:
    the record is unsealed until the store opens again and seals it, even
    when retention has nothing to do then (a larger budget)."""
    key, state = crashed
    tail = segment_files(state / "segments")[-1][1]
    lines = tail.read_bytes().splitlines(keepends=True)
    pruning = msgspec.json.decode(lines[-2], type=ChainRecord)
    tail.write_bytes(b"".join(lines[:-1]) + (lines[-1][:40] if cut == "torn" else b""))

    report = verify_store(state, key=key)
    assert not report.ok and report.first_break is not None
    if cut == "lost":
        assert (report.first_break.seq, report.first_break.kind) == (pruning.seq, "checkpoint")
    with open_store(state, retain_max_bytes=10**9):
        pass  # opened and closed: nothing appended by a caller
    records = [r for _, _, r in lines_of(state)]
    assert records[-1].type == "checkpoint"
    assert (records[-1].body["seq"], records[-1].body["hash"]) == (
        records[-2].seq,
        records[-2].hash,
    )
    report = verify_store(state, key=key)
    assert report.ok and report.recovered == (cut == "torn"), report.summary()

    # Without the seal at open, the pruning record would stay unsealed: a break.
    lines = tail.read_bytes().splitlines(keepends=True)
    tail.write_bytes(b"".join(lines[:-1]))
    assert not verify_store(state, key=key).ok
