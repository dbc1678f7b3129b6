"""When the store seals: a second after the last seal while records come
(whatever the rate), at close, by count only if asked, and the pipeline's
first seal at once. A hand-moved clock makes the times exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from agent.capture.events import FileEvent
from agent.evidence.keys import create_key
from agent.evidence.mapper import Mapper
from agent.evidence.pipeline import EvidencePipeline
from agent.evidence.seal import decode_key
from agent.evidence.store import SEAL_INTERVAL_S, EvidenceStore
from agent.evidence.verify import verify_store
from agent.redact import Redactor
from tests.evidence.golden_events import ANCHOR
from tests.harness import records

MS = 1_000_000


class Clock:
    """Wall time in ns, moved by hand."""

    def __init__(self) -> None:
        self.ns = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[Path, bytes]:
    state = tmp_path / "state"
    return state, decode_key(create_key(state))


def checkpoints_after(state: Path) -> list[Any]:
    """For each checkpoint, the ``n`` of the note just before it (None: not a note)."""
    recs = list(records(state))
    return [
        recs[i - 1]["body"].get("n") if recs[i - 1]["type"] == "note" else None
        for i, r in enumerate(recs)
        if r["type"] == "checkpoint"
    ]


@pytest.mark.parametrize("rate", [1000, 10_000])
def test_high_rate_appends_give_one_seal_per_interval(
    sealed: tuple[Path, bytes], rate: int
) -> None:
    """2.5 s of records at 1,000/s or 10,000/s: the same three seals."""
    state, key = sealed
    clock = Clock()
    with EvidenceStore(state, clock=clock) as store:
        for n in range(1, rate * 5 // 2 + 1):
            clock.ns += 10**9 // rate
            store.append("note", {"n": n})
            if n % 100 == 0:
                store.commit()
    # A seal at the first record a second after the last seal, then the closing one.
    assert checkpoints_after(state) == [rate, 2 * rate, rate * 5 // 2]
    report = verify_store(state, key=key)
    assert report.ok and report.seals == 3


def test_close_seals_what_came_since_the_last_seal(sealed: tuple[Path, bytes]) -> None:
    state, key = sealed
    clock = Clock()
    with EvidenceStore(state, clock=clock) as store:
        for n in range(3):
            store.append("note", {"n": n})
        store.commit()
        assert checkpoints_after(state) == []  # the clock stood still
    assert checkpoints_after(state) == [2]
    assert verify_store(state, key=key).ok


def test_a_tick_seals_the_tail_of_a_burst_a_second_on(sealed: tuple[Path, bytes]) -> None:
    state, _ = sealed
    clock = Clock()
    with EvidenceStore(state, clock=clock) as store:
        for n in range(10):
            store.append("note", {"n": n})
        store.commit()
        clock.ns += int(SEAL_INTERVAL_S * 1e9) - 1
        store.tick()
        assert checkpoints_after(state) == []
        clock.ns += 1
        store.tick()
        assert checkpoints_after(state) == [9]
        clock.ns += 3600 * 10**9
        store.tick()  # nothing waits: no seal for nothing
        assert checkpoints_after(state) == [9]


def test_a_count_when_set_seals_without_the_clock(sealed: tuple[Path, bytes]) -> None:
    state, _ = sealed
    with EvidenceStore(state, clock=Clock(), checkpoint_every_records=4) as store:
        for n in range(1, 11):
            store.append("note", {"n": n})
        store.commit()
    assert checkpoints_after(state) == [4, 8, 10]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_count_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="checkpoint_every_records must be 0"):
        EvidenceStore(tmp_path, checkpoint_every_records=bad)


async def test_the_pipeline_seals_its_first_batch_at_once(sealed: tuple[Path, bytes]) -> None:
    """With the clock standing still and no count, the only seal before the
    close is the first one: the key on disk stops being epoch 0's at once."""
    state, key = sealed
    store = EvidenceStore(state, clock=Clock())
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor.builtin(), version="t")
    send, receive = trio.open_memory_channel[list[FileEvent]](10)
    pipeline = EvidencePipeline(receive, mapper, store, books=lambda: {}, probes=[], config={})
    event = FileEvent(
        pid=1, tid=1, ts_ns=1, uid=0, gid=0, cgroup_id=1, comm="x", op="open",
        syscall="openat", ret=3, dfd=-100, dfd2=0, path="/etc/hostname", path2="", flags=0,
        mode=0,
    )  # fmt: skip
    epoch_0 = (state / "keys" / "seal.key").read_bytes()
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        await send.send([event])
        with trio.fail_after(10):  # the seal record first, then the key ratchets
            while (state / "keys" / "seal.key").read_bytes() == epoch_0:
                await trio.sleep(0.01)
        assert [r["type"] for r in records(state)].count("checkpoint") == 1
        await send.aclose()
    report = verify_store(state, key=key)
    assert report.ok and report.seals == 2, report.summary()  # the first, and at stop
