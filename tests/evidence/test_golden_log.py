"""Byte identity: the fixed capture of :mod:`golden_events` gives the same
log bytes, hashes and seals as the golden file checked in before evidence
went typed and encode-once. Any change to a record's bytes shows up here
first: a reader's stored hashes and ids must not move under it."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.evidence.canonical import canonical
from agent.evidence.layout import KeyState, key_path, segment_files
from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore
from agent.redact import Redactor
from tests.evidence.golden_events import (
    ANCHOR,
    CGROUPS,
    CHECKPOINT_EVERY,
    CLOCK_NS,
    COMMIT_EVERY,
    GOLDEN,
    HOST,
    LOSS,
    PROBES,
    RECOVERED,
    SEAL_KEY,
    START_CONFIG,
    VERSION,
    golden_events,
)


def write_log(state_dir: Path) -> bytes:
    """Map the golden capture into a sealed store as the pipeline does; the log's bytes."""
    keys = state_dir / "keys"
    keys.mkdir(parents=True, mode=0o700)
    state = KeyState(epoch=0, key=SEAL_KEY.hex(), prev_seal="0" * 64)
    key_path(state_dir).write_bytes(canonical(state) + b"\n")
    key_path(state_dir).chmod(0o600)
    mapper = Mapper(
        host=HOST,
        anchor=ANCHOR,
        redactor=Redactor.builtin(),
        version=VERSION,
        cgroups=CGROUPS.__getitem__,
    )
    store = EvidenceStore(
        state_dir, clock=lambda: CLOCK_NS, checkpoint_every_records=CHECKPOINT_EVERY
    )
    records = [
        mapper.anchor_record(),
        mapper.capture_recovered(RECOVERED),
        mapper.capture_start(START_CONFIG),
        mapper.capture_degraded(PROBES),
    ]
    records += [mapper.map(event) for event in golden_events()]
    last = ANCHOR.boottime_ns + 10**12
    records.append(mapper.capture_loss(LOSS, ANCHOR.boottime_ns, last))
    records.append(mapper.capture_config({"changed": ["redact"], "config": "x = 1\n"}))
    records.append(mapper.capture_stop({"mapped": len(records)}, ts_ns=last + 1))
    for n, record in enumerate(records, 1):
        store.append_body(record.type, record.body)
        if n % COMMIT_EVERY == 0:
            store.commit()
    store.close()
    return b"".join(path.read_bytes() for _, path in segment_files(state_dir / "segments"))


def test_the_golden_capture_gives_the_golden_log(tmp_path: Path) -> None:
    made = write_log(tmp_path / "log")
    golden = GOLDEN.read_bytes()
    assert made.count(b"\n") == golden.count(b"\n")
    for n, (ours, theirs) in enumerate(zip(made.splitlines(), golden.splitlines(), strict=True)):
        assert ours == theirs, f"line {n + 1} differs"


if __name__ == "__main__":  # regenerate the golden file, on purpose only
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_bytes(write_log(Path(tmp) / "log"))
    print(f"wrote {GOLDEN}", file=sys.stderr)
