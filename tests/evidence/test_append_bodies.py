"""A batch appended at once is the same log as its records appended one by one.

``EvidenceStore.append_bodies`` is what the pipeline's publisher calls for a
whole batch; ``append_body`` is the one-record form. Same bytes, same seals
(by count, mid-batch), same seqs; a record the store refuses is named (-1)
and the rest of the batch goes on; the pipeline counts what was written,
refused and lost from those seqs.
"""

from __future__ import annotations

from pathlib import Path

import trio

from agent.capture.events import FileEvent
from agent.evidence.keys import create_key
from agent.evidence.layout import CHECKPOINT, segment_files
from agent.evidence.mapper import Mapper
from agent.evidence.pipeline import EvidencePipeline
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.types import Anchor, EvidenceRecord
from agent.evidence.verify import verify_store

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        self.ns += 1000  # every reading a microsecond later: both stores read it alike
        return self.ns


def mapped(n: int) -> list[EvidenceRecord]:
    mapper = Mapper(host="h", anchor=ANCHOR)
    out = [mapper.anchor_record()]
    for i in range(n):
        event = FileEvent(
            pid=100 + i, tid=100 + i, ts_ns=ANCHOR.boottime_ns + i, uid=0, gid=0, cgroup_id=1,
            comm="cat", op="open", syscall="openat", ret=3, dfd=-100, path=f"/tmp/f{i}",
            dfd2=0, path2="", flags=0, mode=0,
        )  # fmt: skip
        out.append(mapper.map(event))
    return out


def store_at(state: Path) -> tuple[EvidenceStore, bytes]:
    key = decode_key(create_key(state))
    store = EvidenceStore(state, checkpoint_every_records=7, seal_interval_s=3600, clock=Clock())
    return store, key


def log_bytes(state: Path) -> bytes:
    return b"".join(path.read_bytes() for _, path in segment_files(state / "segments"))


def test_a_batch_is_the_log_of_its_records_one_by_one(tmp_path: Path) -> None:
    records = mapped(40)
    one, key = store_at(tmp_path / "one")
    single = [one.append_body(r.type, r.body) for r in records]
    one.commit()
    one.close()
    batch, key_b = store_at(tmp_path / "batch")
    seqs: list[int] = []
    batch.append_bodies(records[:25], seqs)
    batch.commit()
    batch.append_bodies(records[25:], seqs)
    batch.commit()
    batch.close()
    assert seqs == single
    # The key files differ (each store made its own), so compare the chains
    # record by record up to the seal bodies: same types, same bodies.
    a, b = log_bytes(tmp_path / "one").splitlines(), log_bytes(tmp_path / "batch").splitlines()
    assert len(a) == len(b)
    assert sum(CHECKPOINT.encode() in line for line in b) >= 40 // 7  # seals by count, mid-batch
    for left, right in zip(a, b, strict=True):
        if b'"type":"checkpoint"' not in left:
            assert left.split(b',"hash":')[0] == right.split(b',"hash":')[0]
    for state, verification in ((tmp_path / "one", key), (tmp_path / "batch", key_b)):
        report = verify_store(state, key=verification)
        assert report.ok and report.seals_checked, report.summary()


def test_a_refused_record_is_named_and_the_batch_goes_on(tmp_path: Path) -> None:
    records = mapped(5)
    bad = [records[0], records[1]._replace(type="checkpoint"), records[2], records[3]]
    bad.append(records[4]._replace(type=""))
    store, _ = store_at(tmp_path / "s")
    seqs: list[int] = []
    store.append_bodies(bad, seqs)
    store.commit()
    first = seqs[0]
    assert seqs == [first, -1, first + 1, first + 2, -1]
    store.close()
    assert verify_store(tmp_path / "s").ok


def test_the_pipeline_counts_written_refused_and_lost_from_the_seqs(tmp_path: Path) -> None:
    records = mapped(4)
    store, _ = store_at(tmp_path / "p")

    send, receive = trio.open_memory_channel[list[FileEvent]](1)
    pipeline = EvidencePipeline(
        receive, Mapper(host="h", anchor=ANCHOR), store, books=dict, probes=[], config={}
    )
    batch = [records[0], records[1]._replace(type="recovered"), records[2], records[3]]
    written = pipeline._write(batch)  # the publisher's worker-thread call, directly
    assert written.error is None
    assert written.records == [records[0], records[2], records[3]]
    assert written.refused == [batch[1]]
    assert written.lost == []
    assert written.seqs == [written.seqs[0], written.seqs[0] + 1, written.seqs[0] + 2]
    clean = pipeline._write(records[:2])
    assert clean.records == records[:2] and clean.refused == [] and clean.lost == []
    assert clean.seqs == [written.seqs[-1] + 1, written.seqs[-1] + 2]
    store.close()
    send.close()
