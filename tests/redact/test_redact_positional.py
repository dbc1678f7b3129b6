"""Positional rules: the Nth positional argv entry after a trigger, and all after it, go.

Configured rules here, so each counting case is checked on its own; the
built-in positional rules (htpasswd, rabbitmqctl, mc, vault) are in the corpus.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import MASK, RedactionConfigError, Redactor, Rule, parse_rules

# "acme adduser USER PW": the second positional entry after "adduser".
ADDUSER: dict[str, Any] = {
    "name": "acme-adduser",
    "privacy": "sensitive",
    "pattern": r"\Aadduser\Z",
    "positional": 2,
    "programs": ["acme"],
}


def redactor(**changes: Any) -> Redactor:
    return Redactor.from_config([{**ADDUSER, **changes}], builtin=False)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("acme", "adduser", "bob", "pw1"), ("acme", "adduser", "bob", MASK)),
        # options before the first positional entry are skipped
        (("acme", "adduser", "-q", "--force", "bob", "pw1"), ("acme", "adduser", "-q", "--force", "bob", MASK)),
        # from the first positional entry on, every entry counts: an option moves it earlier
        (("acme", "adduser", "bob", "-q", "pw1"), ("acme", "adduser", "bob", MASK, MASK)),
        # and every entry after the Nth goes too
        (("acme", "adduser", "bob", "pw1", "--role", "admin"), ("acme", "adduser", "bob", MASK, MASK, MASK)),
        # "--" ends the skipping: a secret after it that starts with "-" is counted
        (("acme", "adduser", "--", "-bob", "-pw1"), ("acme", "adduser", "--", "-bob", MASK)),
        # a lone "-" (stdin) is a positional entry, not an option
        (("acme", "adduser", "-", "pw1"), ("acme", "adduser", "-", MASK)),
        # no Nth positional entry: nothing goes
        (("acme", "adduser", "bob"), ("acme", "adduser", "bob")),
        (("acme", "adduser", "-q", "bob", "--"), ("acme", "adduser", "-q", "bob", MASK)),
        # the trigger must be after the program, and match a whole entry
        (("adduser", "bob", "pw1", "acme"), ("adduser", "bob", "pw1", "acme")),
        (("acme", "adduser2", "bob", "pw1"), ("acme", "adduser2", "bob", "pw1")),
        (("other", "adduser", "bob", "pw1"), ("other", "adduser", "bob", "pw1")),
        # a wrapper before the program changes nothing
        (("sudo", "-u", "x", "/opt/bin/acme", "adduser", "bob", "pw1"), ("sudo", "-u", "x", "/opt/bin/acme", "adduser", "bob", MASK)),
    ],
)  # fmt: skip
def test_counting(argv: tuple[str, ...], expected: tuple[str, ...]) -> None:
    redactor_ = redactor()
    result = redactor_.redact_argv(argv)
    assert result.argv == expected
    masked = sum(1 for a, b in zip(argv, expected, strict=True) if a != b)
    assert result.fired == (("acme-adduser",) if masked else ())
    assert redactor_.stats.fields_redacted == ({"acme-adduser": masked} if masked else {})


def test_only_the_first_trigger_counts() -> None:
    """A later trigger would start further from the secret: the first one's count goes on."""
    result = redactor().redact_argv(("acme", "adduser", "adduser", "bob", "adduser", "x"))
    # counted from the first: adduser(1) bob(2) and everything after
    assert result.argv == ("acme", "adduser", "adduser", MASK, MASK, MASK)


def test_a_masked_entry_is_not_a_trigger() -> None:
    """An entry masked as a value (here --password's) triggers nothing."""
    both = Redactor.from_config([ADDUSER])  # with the built-in rules: secret-flag's next_arg
    result = both.redact_argv(("acme", "--password", "adduser", "bob", "kept"))
    assert result.argv == ("acme", "--password", MASK, "bob", "kept")


def test_the_replacement_is_used() -> None:
    result = redactor(replacement="[pw]").redact_argv(("acme", "adduser", "bob", "pw1"))
    assert result.argv == ("acme", "adduser", "bob", "[pw]")
    result = redactor(replacement="").redact_argv(("acme", "adduser", "bob", "pw1"))
    assert result.argv == ("acme", "adduser", "bob", MASK)


def test_first_positional_and_a_flag_as_trigger() -> None:
    """positional = 1: the entry right after the trigger's options (vault login TOKEN)."""
    login = redactor(pattern=r"\A-[xv]*b", positional=1)
    assert login.redact_argv(("acme", "-vb", "-q", "tok", "more")).argv == (
        "acme",
        "-vb",
        "-q",
        MASK,
        MASK,
    )
    assert login.redact_argv(("acme", "-v", "tok")).argv == ("acme", "-v", "tok")


def test_positional_rules_never_touch_paths_or_addresses() -> None:
    unscoped = Redactor.from_config([{**ADDUSER, "programs": []}], builtin=False)
    assert unscoped.redact_text("adduser", "path") == "adduser"
    assert unscoped.redact_text("adduser bob pw1", "address") == "adduser bob pw1"
    # without programs, it applies from argv's first entry
    assert unscoped.redact_argv(("adduser", "bob", "pw1")).argv == ("adduser", "bob", MASK)
    assert unscoped.stats.fields_redacted == {"acme-adduser": 1}


def test_two_positional_rules_count_independently() -> None:
    second = {**ADDUSER, "name": "acme-passwd", "pattern": r"\Apasswd\Z", "positional": 1}
    both = Redactor.from_config([ADDUSER, second], builtin=False)
    result = both.redact_argv(("acme", "passwd", "adduser", "bob", "pw"))
    # passwd: adduser is its 1st positional entry, so it and all after go
    assert result.argv == ("acme", "passwd", MASK, MASK, MASK)
    assert result.fired == ("acme-passwd",)


def test_redacting_again_changes_nothing() -> None:
    redactor_ = redactor()
    once = redactor_.redact_argv(("acme", "adduser", "-q", "bob", "pw1", "x")).argv
    assert redactor_.redact_argv(once).argv == once


def test_an_option_turned_into_a_marker_counts() -> None:
    """-ghp_... looks like an option, but is shown as a marker: it counts, so the
    output, redacted again, is the same (counted as an option, pw1 would be kept
    the first time and masked the second)."""
    with_builtin = Redactor.from_config([ADDUSER])
    ghp = "-ghp_R4nd0mFakeT0kenForTests0123456789abcd"
    once = with_builtin.redact_argv(("acme", "adduser", ghp, "bob", "pw1"))
    assert once.argv == ("acme", "adduser", "[REDACTED:github-token]", MASK, MASK)
    assert with_builtin.redact_argv(once.argv).argv == once.argv
    # a masked option (--password's value) counts too
    once = with_builtin.redact_argv(("acme", "adduser", "--password", "-x", "bob"))
    assert once.argv == ("acme", "adduser", "--password", MASK, MASK)
    assert with_builtin.redact_argv(once.argv).argv == once.argv


def test_config_accepts_positional_and_the_digest_shows_it() -> None:
    (rule,) = parse_rules([ADDUSER])
    assert rule == Rule(
        name="acme-adduser",
        privacy="sensitive",
        pattern=r"\Aadduser\Z",
        positional=2,
        programs=("acme",),
    )
    digest = redactor().describe()[0]
    assert (digest.positional, digest.programs, digest.builtin) == (2, ("acme",), False)
    assert parse_rules([{k: v for k, v in ADDUSER.items() if k != "positional"}])[0].positional == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"positional": -1}, "positional must be 0 (off) or which positional entry is the secret"),
        ({"positional": "2"}, "field 'positional': Expected `int`, got `str`; expected a whole number"),
        ({"positional": True}, "field 'positional': Expected `int`, got `bool`"),
        ({"positional": 1.5}, "field 'positional': Expected `int`, got `float`"),
        ({"pattern": r"\Aadd(user)\Z", "group": 1}, "a positional rule keeps the entry it matches; leave group 0"),
        ({"pattern": r"\Aadd(user)?\Z", "group": 1, "next_arg": True}, "leave group 0"),
        ({"next_arg": True}, "next_arg and positional cannot be combined"),
        ({"privacy": "forbidden"}, "positional is for sensitive rules"),
    ],
)  # fmt: skip
def test_bad_positional_config_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RedactionConfigError) as caught:
        Redactor.from_config([{**ADDUSER, **changes}])
    text = str(caught.value)
    assert text.startswith("redaction rule $[0] ('acme-adduser'): ")
    assert message in text
    assert "\n" not in text


def test_direct_rules_are_checked_too() -> None:
    with pytest.raises(RedactionConfigError, match=re.escape("redaction rule #0 ('p')")):
        Redactor([Rule(name="p", privacy="sensitive", pattern="x", positional=-2)])


# Entries near the counting's edges: options, "--", "-", triggers, secrets and
# what other rules turn into markers or masks.
ENTRIES = st.sampled_from(
    [
        "-b", "-nb", "-n", "-C", "10", "--", "-", "add_user", "alias", "user", "login", "set",
        "f", "u", "pw", "--password", "-x", "-ghp_R4nd0mFakeT0kenForTests0123456789abcd",
        "--token=x", "***", "[REDACTED:error]", "htpasswd", "rabbitmqctl", "mc", "vault",
    ]
)  # fmt: skip
PROGRAMS = st.sampled_from(["htpasswd", "rabbitmqctl", "mc", "vault"])


@settings(max_examples=400)
@given(PROGRAMS, st.lists(ENTRIES, max_size=10))
def test_positional_output_is_a_fixed_point(program: str, rest: list[str]) -> None:
    builtin = Redactor.builtin()
    argv = (program, *rest)
    once = builtin.redact_argv(argv)
    assert len(once.argv) == len(argv)
    assert builtin.redact_argv(once.argv).argv == once.argv
    # masking only ever replaces whole entries after the program, never the program
    assert once.argv[0] == program
