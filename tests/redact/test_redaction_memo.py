"""The redaction memo: the same results as its redactor, in bounded memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- counters: a hit moves them exactly as running the rules again ------------

# Calls that move every counter: redactions by several rules (positional,
# next_arg, forbidden, cut-only), failures (too long, not text, the entry after
# a failure), with and without cut, and plain ones. Each comes back often.
CALLS: tuple[tuple[str, object, object], ...] = (
    ("text", "/usr/lib/x86_64-linux-gnu/libc.so.6", False),
    ("text", f"/tmp/{GHP}", False),
    ("text", "sk_live_51QwErT", True),
    ("text", "sk_live_51QwErT", False),
    ("text", "x" * 300, False),  # too long for max_field_chars=200
    ("text", 17, False),  # not text
    ("argv", ("curl", "-u", "me:pw", "https://u:p@host/?token=t"), ()),
    ("argv", ("rabbitmqctl", "add_user", "bob", "pw1", "more"), ()),
    ("argv", ("app", "--password", "pw", f"--token={GHP}"), ()),
    ("argv", ("app", 17, "--password", "x" * 300, "next"), ()),
    ("argv", ("app", "AKIAIOSF"), (1,)),
    ("argv", ("ls", "-l"), ()),
)


def _call(target: Redactor | RedactionMemo, call: tuple[str, object, object]) -> object:
    kind, value, cut = call
    if kind == "text":
        return target.redact_text_detail(value, "path", cut=bool(cut))  # type: ignore[arg-type]
    return target.redact_argv(value, "argv", cut=cut)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(CALLS), max_size=40),
    st.integers(1, 6),
    st.sampled_from([2**20, 1200]),
)
def test_counters_are_replayed_exactly(
    calls: list[tuple[str, object, object]], capacity: int, max_bytes: int
) -> None:
    """Any sequence of calls, through a memo (small enough to evict), leaves
    the redactor's counters where calling it directly leaves another's."""
    direct = Redactor.builtin(max_field_chars=200)
    memo = RedactionMemo(Redactor.builtin(max_field_chars=200), capacity, max_bytes)
    for call in calls:
        assert _call(memo, call) == _call(direct, call)
    assert memo.redactor.stats == direct.stats
    assert memo.hits + memo.misses == len(calls)


def test_a_hit_counts_every_counter() -> None:
    memo = RedactionMemo(Redactor.builtin(max_field_chars=200))
    for _ in range(3):
        for call in CALLS:
            _call(memo, call)
    stats = memo.redactor.stats
    assert memo.hits == 2 * len(CALLS)
    assert stats.fields == 3 * (6 + 4 + 5 + 4 + 5 + 2 + 2)
    assert stats.fields_redacted["github-token"] == 3 * 2
    assert stats.fields_redacted["rabbitmqctl-password"] == 3 * 2
    assert stats.failures == {"too-long": 3 * 2, "not-text": 3 * 2, "after-failure": 3 * 2}
    assert stats.failures_by_field == {"path": 3 * 2, "argv": 3 * 4}


def test_a_value_that_cannot_be_a_key() -> None:
    """An unhashable entry is redacted (failing closed) without the memo."""
    direct = Redactor.builtin()
    memo = RedactionMemo(Redactor.builtin())
    odd = ("app", ["--password"], "pw")
    for _ in range(2):
        result = memo.redact_argv(odd)  # type: ignore[arg-type]
        assert result == direct.redact_argv(odd)  # type: ignore[arg-type]
        assert result.argv[1] == "[REDACTED:error]"
        assert memo.redact_text_detail(["x"], "path") == direct.redact_text_detail(  # type: ignore[arg-type]
            ["x"],
            "path",  # type: ignore[arg-type]
        )
    assert memo.hits == 0 and memo.misses == 4 and len(memo) == 0
    assert memo.redactor.stats == direct.stats
