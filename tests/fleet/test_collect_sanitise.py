"""The collector's sanitiser, alone (pure: no servers)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from agent.config.schema import Config
from agent.evidence.chain import ChainWriter
from agent.fleet.sanitise import DEAD_LETTER_BYTES, DeadLetter, Row, Sanitiser
from agent.fleet.wire import ChainHead, evidence_subject, heads_subject
from tests.fleet.publish_log import event, record_of, write_log


@pytest.fixture
def sanitiser() -> Sanitiser:
    return Sanitiser("th", redactor=Config().evidence.redactor(), never_store=("data.env",))


def line_of(host: str, n: int, **data: object) -> bytes:
    kind, body = event(host, n)
    body["data"] |= data  # type: ignore[operator]
    _, line = ChainWriter(start_seq=n).append(kind, body)
    return line.rstrip(b"\n")


def subject(host: str, line: bytes) -> str:
    return evidence_subject("th", host, record_of(line).type)


def test_a_clean_record_is_stored_as_received(sanitiser: Sanitiser, tmp_path: Path) -> None:
    lines = write_log(tmp_path, "web 1", 3)
    for line in lines:
        row = sanitiser.record(subject("web 1", line), line)
        assert isinstance(row, Row)
        assert row.line == line and row.altered == "" and row.host == "web 1"
        assert row.hash == record_of(line).hash
    exec_row = sanitiser.record(subject("web 1", lines[1]), lines[1])
    assert isinstance(exec_row, Row)
    cols = exec_row.columns
    assert cols is not None
    assert (cols.pid, cols.comm, cols.uid, cols.exe, cols.path) == (
        1000, "proc0", 0, "/usr/bin/true", "/usr/bin/true",
    )  # fmt: skip
    assert exec_row.time_ns == 1_796_119_200_000_000_123


@pytest.mark.parametrize(
    ("subject_text", "reason"),
    [
        ("th.evidence", "subject"),
        ("other.evidence.h.process.exec.v1", "subject"),
        ("th.evidence.h.file.open.v1", "subject"),  # not the record's type
        ("th.evidence.h_41.process.exec.v1", "subject"),  # "hA" spelled another way
        ("th.evidence.h_00.process.exec.v1", "subject"),  # NUL in the host name
    ],
)
def test_subjects_that_are_not_ours_are_dead_letters(
    sanitiser: Sanitiser, subject_text: str, reason: str
) -> None:
    line = line_of("h", 0)
    letter = sanitiser.record(subject_text, line)
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith(reason)
    assert sanitiser.stats.dead_letters == {reason: 1}


def test_garbage_oversize_and_bad_hash(sanitiser: Sanitiser) -> None:
    line = line_of("h", 5)
    subj = subject("h", line)
    garbage = sanitiser.record(subj, b"\xff" * (2 * DEAD_LETTER_BYTES))
    assert isinstance(garbage, DeadLetter) and garbage.reason.startswith("malformed")
    assert len(garbage.data) == DEAD_LETTER_BYTES
    small = Sanitiser("th", redactor=Config().evidence.redactor(), max_bytes=100)
    assert small.record(subj, line).reason.startswith("oversized")  # type: ignore[union-attr]
    altered = line.replace(b'"proc', b'"prod', 1)
    bad = sanitiser.record(subj, altered)
    assert isinstance(bad, DeadLetter)
    assert bad.bad_hash and bad.seq == 5 and bad.host == "h" and bad.reason.startswith("hash")
    missing = sanitiser.record(subj, b'{"seq":1}')
    assert isinstance(missing, DeadLetter) and "not a chain record" in missing.reason


def test_unknown_fields_never_store_and_secrets(sanitiser: Sanitiser) -> None:
    line = line_of("h", 2, env={"AWS": "x"}, argv=["curl", "-u", "bob:pa55", "--password=hunter2"])
    subj = subject("h", line)
    extra = line[:-1] + b',"zz":1,"aa":[1]}'
    row = sanitiser.record(subj, extra)
    assert isinstance(row, Row)
    assert sanitiser.stats.unknown_fields == 2 and sanitiser.stats.never_store == 1
    stored = msgspec.json.decode(row.line)
    assert set(stored) == {"seq", "prev", "hash", "type", "body"}
    assert "env" not in stored["body"]["data"]
    assert "hunter2" not in row.line.decode() and "--password=***" in row.line.decode()
    assert row.altered.startswith("unknown-fields:2,never-store:1,redacted:")
    assert row.hash == record_of(line).hash  # the hash as received, checked before the changes
    assert sanitiser.stats.redacted == 1


def test_reformatted_line_is_stored_canonical(sanitiser: Sanitiser) -> None:
    line = line_of("h", 3)
    spaced = line.replace(b'","', b'", "')
    row = sanitiser.record(subject("h", line), spaced)
    assert isinstance(row, Row)
    assert row.line == line and row.altered == "canonical"


def test_heads(sanitiser: Sanitiser) -> None:
    head = ChainHead(host="h.1", seq=9, hash="a" * 64, seal=None, time_ns=1)
    assert sanitiser.head(heads_subject("th", "h.1"), head.encode()) == head
    other = sanitiser.head(heads_subject("th", "h2"), head.encode())
    assert isinstance(other, DeadLetter) and "host" in other.reason
    assert isinstance(sanitiser.head(heads_subject("th", "h.1"), b"{}"), DeadLetter)


@pytest.mark.parametrize(
    "body",
    [
        b'{"n":1.5}',  # a float
        b'{"n":9007199254740993}',  # past the safe range
        b'{"\\u00e9":1,"e":2}',  # an escaped key: not the canonical bytes
        b'{"s":"\\ud800"}',  # a lone surrogate
    ],
)
def test_what_canonical_refuses_is_not_stored(sanitiser: Sanitiser, body: bytes) -> None:
    """The fast path (the bytes are msgspec's sorted form) never accepts what
    the canonical encoder refuses; the hash is right, so only that can refuse it."""
    import blake3

    prev = "0" * 64
    unhashed = b'{"body":%s,"prev":"%s","seq":0,"type":"t"}' % (body, prev.encode())
    digest = blake3.blake3(unhashed).hexdigest()
    line = b'{"body":%s,"hash":"%s","prev":"%s","seq":0,"type":"t"}' % (
        body, digest.encode(), prev.encode(),
    )  # fmt: skip
    got = sanitiser.record("th.evidence.h.t", line)
    if isinstance(got, Row):  # stored only as its canonical form, noted
        assert got.line != line and got.altered == "canonical"
    else:
        assert got.reason.startswith(("noncanonical", "malformed", "hash")), got.reason
