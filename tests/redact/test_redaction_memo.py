"""The redaction memo: the same results as its redactor, in bounded memory."""

from __future__ import annotations

from agent.redact import Redactor
from agent.redact.events import RedactionMemo

GHP = "ghp_R4nd0mFakeT0kenForTests0123456789abcd"


def test_results_are_the_redactors() -> None:
    redactor = Redactor.builtin()
    memo = RedactionMemo(Redactor.builtin())
    for _ in range(2):
        for argv in (("curl", "-u", "me:pw", "x"), ("ls", "-l"), ("app", f"--token={GHP}")):
            assert memo.redact_argv(argv) == redactor.redact_argv(argv)
        for path in ("/etc/passwd", f"/tmp/{GHP}", "/tmp/x\udcff"):
            assert memo.redact_text_detail(path, "path") == redactor.redact_text_detail(
                path, "path"
            )
    assert memo.hits == 6 and memo.misses == 6


def test_bounded_by_bytes_as_well_as_entries() -> None:
    memo = RedactionMemo(Redactor([]), capacity=10_000, max_bytes=64 * 1024)
    big = "a" * 120
    for i in range(2000):  # ~2000 distinct argvs of 16 long entries: far over 64 KiB
        memo.redact_argv(tuple(f"{big}{i}-{j}" for j in range(16)))
    stats = memo.stats()
    assert stats.bytes <= stats.max_bytes
    assert stats.entries < 2000 and stats.evictions == 2000 - stats.entries
    # What is kept is still answered from the memo.
    last = tuple(f"{big}1999-{j}" for j in range(16))
    before = memo.hits
    assert memo.redact_argv(last).argv == last
    assert memo.hits == before + 1


def test_bounded_by_entries() -> None:
    memo = RedactionMemo(Redactor([]), capacity=100)
    for i in range(500):
        memo.redact_text_detail(f"/p/{i}", "path")
    assert len(memo) == 100 and memo.evictions == 400
