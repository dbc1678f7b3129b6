"""Properties over generated input: never raises, deterministic, stable, and fast enough."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import DEFAULT_MAX_FIELD_CHARS, ERROR_MARKER, Redactor

REDACTOR = Redactor.builtin()

# Pieces of secrets and of their surroundings, so generated fields come close
# to the rules' edges far more often than random text would.
PIECES = st.sampled_from(
    [
        "--password", "--token", "--no-auth", "-p", "-a", "-storepass", "=", " ", "'", '"',
        "://", "u:p@", "@", ":", "?token=", "&", ";", "|", "#", "/", "\n", "PASSWORD", "DB_",
        "KEY", "pwd", "password", '{"password":', "Authorization:", " Bearer ", "eyJabcdefghij",
        ".", "eyJxyz1234", "_", "ghp_", "0123456789abcdefghijKLMNOP", "AKIA", "IOSFODNN7EXAMPLE",
        "sk-", "hf_", "mysql", "sshpass", "curl", "-u", "bash", "-c", "https", "***", "x", "A",
        "-xw", "-su", "ldapsearch", "htpasswd", "-b", "add_user", "rabbitmqctl", "--", "{", ",",
        "ansible", "ansible_become_pass", ": ", "'password'", "\\",
    ]
)  # fmt: skip
FIELDS = st.one_of(st.lists(PIECES, max_size=10).map("".join), st.text(max_size=30))
ARGVS = st.lists(FIELDS, max_size=8).map(tuple)

SECRETS = st.sampled_from(
    [
        "ghp_R4nd0mFakeT0kenForTests0123456789abcd",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-1234567890123-FakeSlackTokenValue",
        "glpat-FakeToken1234567890ab",
        "npm_FakeNpmToken0123456789abcdefghijkl",
        "AIzaSyFAKE-fake_0123456789abcdefghijklm",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
        "-----BEGIN RSA PRIVATE KEY-----",
        "Authorization: Bearer abc.def",
    ]
)


@settings(max_examples=500)
@given(ARGVS)
def test_argv_never_raises_and_keeps_its_length(argv: tuple[str, ...]) -> None:
    result = REDACTOR.redact_argv(argv)
    assert len(result.argv) == len(argv)
    assert list(result.fired) == sorted(set(result.fired))
    assert "error" not in result.fired
    if not result.fired:
        assert result.argv == argv


@settings(max_examples=500)
@given(ARGVS)
def test_deterministic_and_stable(argv: tuple[str, ...]) -> None:
    """Same input, same output, from any redactor; redacting the output changes nothing."""
    once = REDACTOR.redact_argv(argv)
    assert Redactor.builtin().redact_argv(argv) == once
    assert REDACTOR.redact_argv(once.argv).argv == once.argv
    for field in argv:
        text = REDACTOR.redact_text(field, "path")
        assert REDACTOR.redact_text(text, "path") == text


@settings(max_examples=300)
@given(st.text(max_size=40), SECRETS, st.text(max_size=40))
def test_a_forbidden_token_between_spaces_never_survives(
    before: str, secret: str, after: str
) -> None:
    field = f"{before} {secret} {after}"
    assert secret not in REDACTOR.redact_text(field, "path")
    assert all(secret not in entry for entry in REDACTOR.redact_argv(("app", field)).argv)


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=30).filter(lambda s: not s.startswith(("-", "="))))
def test_flag_value_never_survives(value: str) -> None:
    argv = ("app", "--password", value, f"--api-key={value}")
    assert REDACTOR.redact_argv(argv).argv == ("app", "--password", "***", "--api-key=***")


# Inputs built to make backtracking regexes slow: long runs of what a rule
# wants, repeated starting points, a missing final character.
ADVERSARIAL = [
    "a", "A_", "-", " ", "mysql ", "mysql -u x ", "sshpass ", "curl ", "curl -H x ", "http://",
    "a://bbbbbbbbbb", "a://x:", "?", "eyJ", "eyJ_", ".", "password", "password =", '"', "'",
    "--a-", "-a", "PASSWORD", "x:", "@", "1", "\\", "--password=x ", "authorization",
    "hooks.slack.com/services/", "-----BEGIN ", "ghp_", "sk-", "SG.", "u:p@", "&token=",
    "aws_secret_access_key", '"password":', "\n", "12345678:AA", "AccountKey=", "xoxb-",
]  # fmt: skip


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_worst_case_input_is_bounded(unit: str) -> None:
    """A field of the maximum length takes well under a second, even inside sh -c."""
    value = (unit * (DEFAULT_MAX_FIELD_CHARS // len(unit) + 1))[:DEFAULT_MAX_FIELD_CHARS]
    started = time.perf_counter()
    result = REDACTOR.redact_argv(("bash", "-c", value))
    REDACTOR.redact_text(value, "path")
    elapsed = time.perf_counter() - started
    assert result.argv[2] != ERROR_MARKER
    assert elapsed < 2.0, f"{unit!r}: {elapsed:.2f}s"


# Not-UTF-8 bytes decoded with surrogateescape (U+DC80..U+DCFF) and control
# characters, mixed with the pieces above: what a hostile argv or path holds.
ODD_CHARS = st.one_of(
    st.integers(0xDC80, 0xDCFF).map(chr),
    st.integers(0, 0x1F).map(chr),
    st.just("\x7f"),
)
ODD_FIELDS = st.lists(st.one_of(PIECES, ODD_CHARS), max_size=12).map("".join)
ODD_ARGVS = st.lists(ODD_FIELDS, max_size=6).map(tuple)


@settings(max_examples=400)
@given(ODD_ARGVS, st.sets(st.integers(0, 5)))
def test_surrogates_and_control_characters_never_raise(
    argv: tuple[str, ...], cut: set[int]
) -> None:
    for was_cut in (set(), cut):
        result = REDACTOR.redact_argv(argv, cut=was_cut)
        assert len(result.argv) == len(argv)
        assert "error" not in result.fired
        assert REDACTOR.redact_argv(result.argv, cut=was_cut).argv == result.argv
    for field in argv:
        for was_cut in (False, True):
            detail = REDACTOR.redact_text_detail(field, "path", cut=was_cut)
            assert "error" not in detail.fired
            assert REDACTOR.redact_text(detail.text, "path", cut=was_cut) == detail.text


def test_secrets_next_to_surrogates_and_control_characters_are_redacted() -> None:
    redactor = Redactor.builtin()
    raw = b"--token=\xff\xfe\x00secret\x1b".decode("utf-8", "surrogateescape")
    ghp = "ghp_R4nd0mFakeT0kenForTests0123456789abcd"
    argv = ("app\udcff", raw, "--password", "\udc80pw\x07", f"\udce2{ghp}\n")
    result = redactor.redact_argv(argv)
    assert result.argv == (
        "app\udcff",
        "--token=***",
        "--password",
        "***",
        "[REDACTED:github-token]",
    )
    comm = b"sk_live_\xe2\x82".decode("utf-8", "surrogateescape")  # cut inside a character
    assert redactor.redact_text(comm, "comm", cut=True) == comm  # the token ended before it
    assert redactor.redact_text("\udcffsk_live_51Qw", "comm", cut=True) == (
        "[REDACTED:stripe-secret-key-cut]"
    )
    assert redactor.stats.failures == {}


# More starting points for the rules added with cut fields and new programs.
ADVERSARIAL_MORE = [
    "ldapsearch ", "smbclient -U", "lftp ", "net ", "openssl -k", "-eyJ", "-ghp_", "sk_live_",
    "-AKIA", "-hf_abcd", '"a_pass":', '"aB', "a/", "-S", "env -S ", "/p:", "sqlplus a/",
    "1234567890:AA", "-SG.abcdefgh", "AccountKey=", "x_token=", "a.b-",
    # bundles of short options, YAML and Python mappings
    " -x", "-xxxxxxxxxxxxxxxxxxxxxxxx", "ldapsearch -x", "curl -s", "sshpass -v", "smbclient -N",
    "lftp -d", "mysql -B", "ansible_", "ansible_a_pass", "{a_pass: ", ",a_pass:", "'a_pass': ",
    "a_pass: ", "\na_pass:", "{'", "a_pass", "\"\\", ": \"\\\"",
]  # fmt: skip


@pytest.mark.parametrize("unit", ADVERSARIAL + ADVERSARIAL_MORE)
def test_worst_case_cut_input_is_bounded(unit: str) -> None:
    """As above, with every field said to be cut, and after programs that scope rules."""
    value = (unit * (DEFAULT_MAX_FIELD_CHARS // len(unit) + 1))[:DEFAULT_MAX_FIELD_CHARS]
    started = time.perf_counter()
    result = REDACTOR.redact_argv(("env", "sqlplus", "-c", value), cut=(3,))
    scoped = REDACTOR.redact_argv(("ansible", "ldapsearch", "curl", "htpasswd", value, "mc", value))
    REDACTOR.redact_text(value, "path", cut=True)
    elapsed = time.perf_counter() - started
    assert result.argv[3] != ERROR_MARKER
    assert ERROR_MARKER not in scoped.argv
    assert elapsed < 2.0, f"{unit!r}: {elapsed:.2f}s"
