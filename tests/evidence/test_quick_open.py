"""Opening a store with a 64 MiB last segment: checked from its last checkpoint on.

What an open still catches after the last checkpoint (a torn tail moved
aside, a bad line before the last refused), and what it leaves to the
verifier before it (a damaged sealed record: the store opens, and
``verify_store`` reports the break).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import blake3
import pytest

from agent.evidence.keys import create_key
from agent.evidence.layout import StoreCorruptError, segment_files
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import verify_store

SEGMENT = 64 * 2**20
OPTIONS = {"segment_max_bytes": 2 * SEGMENT, "checkpoint_every_records": 1000}
AFTER = 7  # records committed after the last checkpoint, before the "crash"


def _notes(store: EvidenceStore, rng: random.Random, until_bytes: int, path: Path) -> int:
    n = 0
    while n % 500 or path.stat().st_size < until_bytes:
        # Lines from 60 bytes to 32 KiB: some span the 64 KiB blocks read backwards.
        store.append("note", {"n": n, "pad": "x" * rng.choice((10, 200, 4000, 32000))})
        n += 1
        if n % 100 == 0:
            store.commit()
    store.commit()
    return n


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A sealed log whose one segment is 64 MiB, left as a crash leaves it:
    its last checkpoint, then AFTER committed records and no closing seal."""
    state = tmp_path_factory.mktemp("quick") / "state"
    key = decode_key(create_key(state))
    rng = random.Random(9)
    store = EvidenceStore(state, **OPTIONS)
    path = segment_files(state / "segments")[0][1]
    _notes(store, rng, SEGMENT - 2**20, path)
    store.checkpoint()
    for i in range(AFTER):
        store.append("note", {"n": -i, "pad": "y" * 100})
    store.commit()
    store.discard()
    assert path.stat().st_size >= SEGMENT - 2**20
    return state, key


@pytest.fixture
def log(template: tuple[Path, bytes], tmp_path: Path) -> tuple[Path, bytes, Path, list[bytes]]:
    state = tmp_path / "state"
    shutil.copytree(template[0], state)
    path = segment_files(state / "segments")[0][1]
    return state, template[1], path, path.read_bytes().splitlines(keepends=True)


def _types(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["type"] for line in lines]


def test_a_torn_tail_after_the_last_checkpoint_is_moved_aside(
    log: tuple[Path, bytes, Path, list[bytes]],
) -> None:
    state, key, path, lines = log
    assert _types(lines[-AFTER - 1 :]) == ["checkpoint"] + ["note"] * AFTER
    good = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b'{"body":{"n":99,"pad":"' + b"z" * 70000)  # torn, longer than a block
    with EvidenceStore(state, **OPTIONS) as store:
        head = store.head
        assert head is not None and head[0] == json.loads(lines[-1])["seq"] + 1  # the recovered
        store.append("note", {"n": 1000})
    kept = state / "recovered" / f"{path.stem}-{good}.torn"
    assert kept.read_bytes().startswith(b'{"body":{"n":99') and len(kept.read_bytes()) == 70023
    after = path.read_bytes().splitlines(keepends=True)
    assert after[: len(lines)] == lines
    recovered = json.loads(after[len(lines)])
    assert recovered["type"] == "recovered" and recovered["body"]["offset"] == good
    assert recovered["body"]["blake3"] == blake3.blake3(kept.read_bytes()).hexdigest()
    report = verify_store(state, key=key)
    assert report.ok and report.recovered == 1, report.summary()


def test_a_bad_line_after_the_last_checkpoint_is_refused(
    log: tuple[Path, bytes, Path, list[bytes]],
) -> None:
    state, _, path, lines = log
    lines[-3] = lines[-3].replace(b"yyy", b"yyz", 1)  # after the checkpoint, not the last
    path.write_bytes(b"".join(lines))
    with pytest.raises(StoreCorruptError, match="not a crash"):
        EvidenceStore(state, **OPTIONS)


def test_a_bad_line_before_the_last_checkpoint_is_the_verifiers(
    log: tuple[Path, bytes, Path, list[bytes]],
) -> None:
    state, key, path, lines = log
    victim = len(lines) // 2
    assert _types([lines[victim]]) == ["note"]
    seq = json.loads(lines[victim])["seq"]
    lines[victim] = lines[victim].replace(b'"pad":"x', b'"pad":"X', 1)  # still JSON, new hash
    path.write_bytes(b"".join(lines))
    with EvidenceStore(state, **OPTIONS) as store:  # opens: sealed history is not re-read
        store.append("note", {"n": 1000})
    report = verify_store(state, key=key)
    assert not report.ok and report.first_break is not None
    assert report.first_break.seq == seq, report.summary()


def test_a_damaged_header_is_refused(log: tuple[Path, bytes, Path, list[bytes]]) -> None:
    state, _, path, lines = log
    lines[0] = lines[0].replace(b'"index":0', b'"index":1')
    path.write_bytes(b"".join(lines))
    with pytest.raises(StoreCorruptError, match=r"segment\.start record is damaged"):
        EvidenceStore(state, **OPTIONS)
