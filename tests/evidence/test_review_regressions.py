"""Regressions from the independent review of the evidence log."""

from __future__ import annotations

import time
from pathlib import Path

from agent.evidence.chain import ChainWriter
from agent.evidence.keys import create_key
from agent.evidence.last_run import previous_run
from agent.evidence.layout import key_path
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import verify_store, verify_stream


def test_an_unsealed_tail_is_called_out(tmp_path: Path) -> None:
    """Records appended after the last seal (here: with the key file gone)
    verify, but the report says how many are not sealed."""
    state = tmp_path / "log"
    key = decode_key(create_key(state))
    with EvidenceStore(state, checkpoint_every_records=5) as store:
        for i in range(12):
            store.append("dev.tracehound.test.v1", {"i": i})
    key_path(state).unlink()
    with EvidenceStore(state) as store:
        for i in range(7):
            store.append("dev.tracehound.test.v1", {"forged": i})
    report = verify_store(state, key=key)
    assert report.first_break is None
    summary = report.summary()
    assert "NOT sealed" in summary
    assert report.sealed_head is not None and report.head is not None
    unsealed = report.head[0] - report.sealed_head[0] - 1
    assert f"the {unsealed} records after it are NOT sealed" in summary and unsealed >= 7


def test_a_fully_sealed_log_has_no_warning(tmp_path: Path) -> None:
    state = tmp_path / "log"
    key = decode_key(create_key(state))
    with EvidenceStore(state) as store:
        store.append("dev.tracehound.test.v1", {"i": 1})
    assert "NOT sealed" not in verify_store(state, key=key).summary()


def test_a_forged_huge_epoch_fails_fast(tmp_path: Path) -> None:
    writer = ChainWriter()
    lines = [writer.append("dev.tracehound.test.v1", {"i": 0})[1]]
    head = writer.head
    assert head is not None
    forged = {
        "epoch": 2**52,
        "seq": head[0],
        "hash": head[1],
        "prev_seal": "0" * 64,
        "mac": "0" * 64,
    }
    lines.append(writer.append("checkpoint", forged)[1])
    key = decode_key(create_key(tmp_path / "k"))
    started = time.monotonic()
    report = verify_stream(lines, key=key)
    assert time.monotonic() - started < 5
    assert report.first_break is not None and "epoch" in report.first_break.reason


def line(seq: int, type_: str) -> bytes:
    return f'{{"seq":{seq},"type":"{type_}","body":{{}}}}\n'.encode()


def test_a_crash_is_seen_even_when_the_start_scrolled_away() -> None:
    tail = [
        line(5000, "segment.start"),
        line(5001, "dev.tracehound.file.open.v1"),
        line(5002, "checkpoint"),
    ]
    assert previous_run(tail) == {"previous_start_seq": None, "last_seq": 5002, "torn_tails": []}
    stopped = [line(1, "dev.tracehound.capture.start.v1"), line(2, "dev.tracehound.capture.stop.v1"),
               line(3, "checkpoint")]  # fmt: skip
    assert previous_run(stopped) is None


def test_dropped_readings_and_seed_records_become_losses() -> None:
    from agent.capture.ledger import Ledger
    from agent.evidence.loss_books import loss_counts, loss_delta

    sinks = {"evidence": {"syscall": (7, 3), "process": (0, 5)}}
    books = Ledger().account({"syscall": (10, 0)}, sinks)
    delta = loss_delta(loss_counts(books, sinks), {})
    assert delta["syscall"]["sink:evidence"] == 3
    assert delta["process"]["sink:evidence"] == 5


def test_how_the_last_run_ended_is_found_past_segments_of_store_records(tmp_path: Path) -> None:
    """A run whose last segments hold only the store's own records (headers,
    seals) still shows as unclean: the scan goes back to a capture record."""
    from agent.evidence.last_run import last_segments

    state = tmp_path / "log"
    with EvidenceStore(state, segment_max_bytes=600) as store:
        store.append("dev.tracehound.capture.start.v1", {"config": {}})
        for _ in range(4):  # rotations: segments of headers and nothing else
            store._rotate()
    found = previous_run(last_segments(state))
    assert found is not None and found["previous_start_seq"] is not None
