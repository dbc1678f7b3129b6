"""Fail closed at run time: a field whose redaction fails becomes a marker, never raw.

Failures are planted with :class:`CompiledRule`, which takes any matcher
unchecked: one that raises on a trigger word stands for a rule that breaks on
some input (a bug, a RecursionError, a MemoryError).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import cast

import pytest

from agent.redact import (
    BUILTIN_RULES,
    ERROR_MARKER,
    MASK,
    CompiledRule,
    PrivacyClass,
    Redactor,
    Rule,
    marker,
)

SECRET = "TRIGGER-s3cret-value"


class RaisingMatcher:
    """Behaves like ``re.compile(pattern)`` except on text holding ``trigger``."""

    def __init__(self, pattern: str, trigger: str, exc: Exception) -> None:
        self._pattern = re.compile(pattern)
        self._trigger = trigger
        self._exc = exc

    def search(self, string: str, /) -> re.Match[str] | None:
        if self._trigger in string:
            raise self._exc
        return self._pattern.search(string)

    def finditer(self, string: str, /) -> Iterator[re.Match[str]]:
        if self._trigger in string:
            raise self._exc
        return self._pattern.finditer(string)


def planted(privacy: PrivacyClass = "sensitive", exc: Exception | None = None) -> CompiledRule:
    """A rule named ``planted`` whose matcher raises on any text holding TRIGGER."""
    rule = Rule(name="planted", privacy=privacy, pattern="zzz")
    return CompiledRule(rule, RaisingMatcher("zzz", "TRIGGER", exc or RuntimeError("boom")))


def test_rule_that_raises_gives_the_error_marker_and_counts() -> None:
    redactor = Redactor([planted()])
    result = redactor.redact_argv(("app", SECRET, "other"))
    assert result.argv == ("app", ERROR_MARKER, "other")
    assert result.fired == ("error",)
    stats = redactor.stats
    assert stats.failures == {"rule:planted": 1}
    assert stats.failures_by_field == {"argv": 1}
    assert stats.fields == 3


@pytest.mark.parametrize("privacy", ["sensitive", "forbidden"])
@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), ValueError(SECRET), RecursionError(), MemoryError(), re.error("bad")],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_fails_closed(privacy: PrivacyClass, exc: Exception) -> None:
    redactor = Redactor([*BUILTIN_RULES, planted(privacy, exc)])
    text = redactor.redact_text(f"/tmp/{SECRET}", "path")
    assert text == ERROR_MARKER
    assert redactor.stats.failures == {"rule:planted": 1}
    assert redactor.stats.failures_by_field == {"path": 1}
    assert SECRET not in repr(redactor.stats)


def test_failure_masks_the_next_entry_when_rules_use_next_arg() -> None:
    """The failed entry may have been --password: its successor is then the value."""
    redactor = Redactor([*BUILTIN_RULES, planted()])
    result = redactor.redact_argv(("app", "--TRIGGER", "hunter2", "--verbose", "--token=abc"))
    assert result.argv == ("app", ERROR_MARKER, ERROR_MARKER, "--verbose", "--token=***")
    assert "hunter2" not in result.argv
    assert result.fired == ("error", "secret-flag")
    assert redactor.stats.failures == {"rule:planted": 1, "after-failure": 1}
    assert redactor.stats.failures_by_field == {"argv": 2}


def test_failure_does_not_mask_the_next_entry_without_next_arg_rules() -> None:
    redactor = Redactor([planted()])
    assert redactor.redact_argv(("TRIGGER", "kept")).argv == (ERROR_MARKER, "kept")


def test_later_entries_are_still_redacted_after_a_failure() -> None:
    redactor = Redactor([*BUILTIN_RULES, planted()])
    result = redactor.redact_argv(("TRIGGER", "x", "--password", "pw", "AKIAIOSFODNN7EXAMPLE"))
    assert result.argv == (
        ERROR_MARKER,
        ERROR_MARKER,
        "--password",
        MASK,
        marker("aws-access-key-id"),
    )


def test_non_text_entry_fails_closed() -> None:
    """A bytes value (a decoding slip upstream) is never passed on as it is."""
    redactor = Redactor.builtin()
    argv = cast(tuple[str, ...], ("app", b"--password=hunter2", 7, None))
    result = redactor.redact_argv(argv)
    assert result.argv == ("app", ERROR_MARKER, ERROR_MARKER, ERROR_MARKER)
    # entries 1 and 3 are not text; entry 2 is masked because it follows a failure
    assert redactor.stats.failures == {"not-text": 2, "after-failure": 1}
    assert redactor.redact_text(cast(str, b"/tmp/x"), "path") == ERROR_MARKER


def test_too_long_field_fails_closed() -> None:
    redactor = Redactor.builtin(max_field_chars=64)
    long_value = "a" * 60 + "--password=hunter2"
    assert redactor.redact_text(long_value, "path") == ERROR_MARKER
    assert redactor.redact_text("a" * 64, "path") == "a" * 64
    result = redactor.redact_argv(("app", long_value, "next"))
    assert result.argv == ("app", ERROR_MARKER, ERROR_MARKER)
    assert redactor.stats.failures == {"too-long": 2, "after-failure": 1}
    assert redactor.stats.failures_by_field == {"path": 1, "argv": 2}


def test_default_limit_allows_the_longest_captured_field() -> None:
    """The BPF side cuts argv entries and paths at 4096 bytes; those must redact normally."""
    redactor = Redactor.builtin()
    value = "/" + "d/" * 2040 + "--password=hunter2"
    assert len(value) > 4096
    assert redactor.redact_text(value, "path").endswith("--password=***")


def test_stats_are_a_snapshot() -> None:
    redactor = Redactor.builtin()
    redactor.redact_argv(("app", "--token=abc"))
    snapshot = redactor.stats
    snapshot.fields_redacted["secret-flag"] = 99
    snapshot.failures["x"] = 1
    assert redactor.stats.fields_redacted == {"secret-flag": 1}
    assert redactor.stats.failures == {}


def test_counters_accumulate_per_rule() -> None:
    redactor = Redactor.builtin()
    redactor.redact_argv(("app", "--token=abc", "--password", "pw"))
    redactor.redact_text("https://u:p@example.com/?token=t", "address")
    stats = redactor.stats
    assert stats.fields == 5
    assert stats.fields_redacted == {"secret-flag": 2, "url-userinfo": 1, "query-secret": 1}


def test_keyboard_interrupt_is_not_swallowed() -> None:
    """Only Exceptions become markers; an interrupt ends the call with nothing returned."""

    class Interrupting(RaisingMatcher):
        def search(self, string: str, /) -> re.Match[str] | None:
            raise KeyboardInterrupt

        def finditer(self, string: str, /) -> Iterator[re.Match[str]]:
            raise KeyboardInterrupt

    rule = Rule(name="planted", privacy="sensitive", pattern="zzz")
    redactor = Redactor([CompiledRule(rule, Interrupting("zzz", "x", RuntimeError()))])
    with pytest.raises(KeyboardInterrupt):
        redactor.redact_text(SECRET, "path")


def test_a_cut_only_rule_that_raises_fails_only_cut_fields() -> None:
    """Uncut fields never consult a cut-only rule; a cut one fails closed on it."""
    rule = Rule(name="planted", privacy="forbidden", pattern="zzz", only_when_cut=True)
    redactor = Redactor(
        [*BUILTIN_RULES, CompiledRule(rule, RaisingMatcher("zzz", "TRIGGER", RuntimeError()))]
    )
    assert redactor.redact_text(SECRET, "comm") == SECRET
    assert redactor.redact_text(SECRET, "comm", cut=True) == ERROR_MARKER
    result = redactor.redact_argv(("app", "--password", SECRET, SECRET, "x"), cut=(2, 3))
    # entry 2 is --password's value (masked before any rule runs); entry 3 fails,
    # and the entry after it is masked too
    assert result.argv == ("app", "--password", MASK, ERROR_MARKER, ERROR_MARKER)
    assert redactor.stats.failures == {"rule:planted": 2, "after-failure": 1}
    assert redactor.stats.failures_by_field == {"comm": 1, "argv": 2}


def test_a_failed_entry_counts_as_a_positional_trigger() -> None:
    """The failed entry may have been add_user: its secret, by position, goes too."""
    adduser = Rule(
        name="adduser", privacy="sensitive", pattern=r"\Aadd_user\Z", positional=2, programs=("mq",)
    )
    redactor = Redactor([planted(), adduser])
    result = redactor.redact_argv(("mq", "TRIGGER", "alice", "mqPW1"))
    assert result.argv == ("mq", ERROR_MARKER, "alice", MASK)
    assert result.fired == ("adduser", "error")
    # before the program the positional rule does not apply: nothing more goes
    assert redactor.redact_argv(("TRIGGER", "alice", "pw", "mq")).argv == (
        ERROR_MARKER,
        "alice",
        "pw",
        "mq",
    )


def test_a_positional_matcher_that_raises_fails_closed() -> None:
    rule = Rule(name="adduser", privacy="sensitive", pattern=r"\Aadd_user\Z", positional=1)
    raising = CompiledRule(rule, RaisingMatcher(r"\Aadd_user\Z", "TRIGGER", RuntimeError(SECRET)))
    redactor = Redactor([raising])
    result = redactor.redact_argv(("mq", "TRIGGER", "pw", "more"))
    assert result.argv == ("mq", ERROR_MARKER, MASK, MASK)
    assert redactor.stats.failures == {"rule:adduser": 1}
    assert redactor.redact_argv(("mq", "add_user", "pw")).argv == ("mq", "add_user", MASK)
    assert redactor.redact_text("TRIGGER", "path") == "TRIGGER"  # argv only: never searched
