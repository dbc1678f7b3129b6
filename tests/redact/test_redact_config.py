"""Configured rules: good ones work; a bad one is refused up front with a clear message."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from agent.errors import UsageError
from agent.redact import (
    BUILTIN_RULES,
    MASK,
    RedactionConfigError,
    Redactor,
    Rule,
    compile_rule,
    marker,
    parse_rules,
)

CORP_TOKEN = "corp_0123456789abcdef"


def test_configured_rules_run_after_the_builtin_ones() -> None:
    redactor = Redactor.from_config(
        [
            {"name": "corp-token", "privacy": "forbidden", "pattern": r"corp_[0-9a-f]{16}"},
            {
                "name": "ticket-pin",
                "privacy": "sensitive",
                "pattern": r"(?i)\bpin:(?P<pin>[0-9]{4,8})\b",
                "group": "pin",
            },
            {
                "name": "acme-key-flag",
                "privacy": "sensitive",
                "pattern": r"\A-K(.+)?\Z",
                "group": 1,
                "next_arg": True,
                "programs": ["acme"],
            },
            {
                "name": "session-id",
                "privacy": "sensitive",
                "pattern": r"sid-[0-9]+",
                "replacement": "[sid]",
            },
        ]
    )
    assert redactor.redact_text(f"/tmp/{CORP_TOKEN}.json", "path") == marker("corp-token")
    result = redactor.redact_argv(
        ("acme", "-K", "acmeSecret", "-Kglued", "note", "PIN:1234", "sid-42", "--token=x")
    )
    assert result.argv == ("acme", "-K", MASK, "-K***", "note", "PIN:***", "[sid]", "--token=***")
    assert result.fired == ("acme-key-flag", "secret-flag", "session-id", "ticket-pin")
    # program-scoped: -K is harmless to other programs, and in paths
    assert redactor.redact_argv(("other", "-K", "v")).argv == ("other", "-K", "v")
    assert redactor.redact_text("-Kvalue", "path") == "-Kvalue"


def test_builtin_can_be_left_out() -> None:
    redactor = Redactor.from_config(
        [{"name": "corp-token", "privacy": "forbidden", "pattern": "corp_"}], builtin=False
    )
    assert [r.rule.name for r in redactor.rules] == ["corp-token"]
    assert redactor.redact_argv(("app", "--password=x")).argv == ("app", "--password=x")


def test_an_empty_config_is_the_builtin_set() -> None:
    assert [r.rule for r in Redactor.from_config([]).rules] == list(BUILTIN_RULES)


def test_toml_and_json_shapes_are_accepted() -> None:
    """Lists come as lists from every parser; programs become a tuple."""
    (rule,) = parse_rules(
        [{"name": "a", "privacy": "sensitive", "pattern": "x", "programs": ["p"]}]
    )
    assert rule == Rule(name="a", privacy="sensitive", pattern="x", programs=("p",))


def good(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "my-rule", "privacy": "sensitive", "pattern": "(secret)"}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "x"}, "expected a list of rule objects, got dict"),
        ("rules", "expected a list of rule objects, got str"),
        (None, "expected a list of rule objects, got NoneType"),
        (
            [good(), "x"],
            "redaction rule $[1]: expected an object with name, privacy and pattern, got str",
        ),
        ([good(pattern=...)], "$[0] ('my-rule'): Object missing required field `pattern`"),
        ([good(name=...)], "$[0]: Object missing required field `name`"),
        ([good(gruop=1)], "$[0] ('my-rule'): Object contains unknown field `gruop`"),
        (
            [good(privacy="public")],
            "field 'privacy': Invalid enum value 'public'; expected 'sensitive' or 'forbidden'",
        ),
        ([good(privacy="secret")], "field 'privacy': Invalid enum value 'secret'"),
        ([good(pattern=5)], "field 'pattern': Expected `str`, got `int`"),
        ([good(name=5)], "$[0]: field 'name': Expected `str`, got `int`"),
        (
            [good(group=True)],
            "field 'group': Expected `int | str`, got `bool`; expected a capture group",
        ),
        ([good(group=1.0)], "field 'group': Expected `int | str`, got `float`"),
        ([good(next_arg="yes")], "field 'next_arg': Expected `bool`, got `str`"),
        (
            [good(programs="mysql")],
            "field 'programs': Expected `array`, got `str`; expected a list",
        ),
        (
            [good(pattern="(unclosed")],
            "$[0] ('my-rule'): pattern does not compile (missing ), unterminated subpattern",
        ),
        ([good(pattern="[a-")], "pattern does not compile"),
        ([good(pattern="x*")], "pattern matches the empty string"),
        ([good(pattern="(?i)|secret")], "pattern matches the empty string"),
        ([good(group=2)], "group 2 does not exist; the pattern has groups 0 to 1"),
        ([good(group=-1)], "group -1 does not exist"),
        ([good(group="value")], "group 'value' does not exist; the pattern's named groups: none"),
        ([good(privacy="forbidden", group=1)], "group is for sensitive rules"),
        ([good(privacy="forbidden", replacement="")], "replacement is for sensitive rules"),
        ([good(privacy="forbidden", next_arg=True)], "next_arg is for sensitive rules"),
        ([good(next_arg=True)], "next_arg needs an optional capture group"),
        ([good(name="My Rule")], "('My Rule'): name must match"),
        ([good(name="")], "name must match"),
        ([good(name="x" * 65)], "name must match"),
        ([good(name="error")], "the name 'error' is reserved"),
        ([good(name="jwt")], "$[0] ('jwt'): the name is already used by a built-in rule"),
        ([good(), good()], "$[1] ('my-rule'): the name is already used by rule $[0]"),
        (
            [good(programs=["/usr/bin/mysql"])],
            "programs must be basenames such as 'mysql', got '/usr/bin/mysql'",
        ),
        ([good(programs=[""])], "programs must be basenames"),
        ([good(only_when_cut=True)], "('my-rule'): only_when_cut is for forbidden rules"),
        (
            [good(privacy="forbidden", pattern="x", only_when_cut="yes")],
            "field 'only_when_cut': Expected `bool`, got `str`; expected true or false",
        ),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(config: object, message: str) -> None:
    with pytest.raises(RedactionConfigError) as caught:
        Redactor.from_config(config)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_error_is_a_usage_error() -> None:
    """The CLI prints UsageErrors as one line and exits 2: a bad rule stops start-up."""
    assert issubclass(RedactionConfigError, UsageError)
    assert RedactionConfigError.exit_status == 2


def test_the_second_bad_entry_is_the_one_named() -> None:
    config = [good(name="first"), good(name="second", pattern="(")]
    with pytest.raises(RedactionConfigError, match=re.escape("redaction rule $[1] ('second')")):
        Redactor.from_config(config)


def test_direct_rules_are_checked_too() -> None:
    with pytest.raises(RedactionConfigError, match=re.escape("redaction rule #1 ('b')")):
        Redactor(
            [
                Rule(name="a", privacy="forbidden", pattern="a"),
                Rule(name="b", privacy="sensitive", pattern="("),
            ]
        )
    with pytest.raises(RedactionConfigError, match="names must be unique"):
        Redactor([*BUILTIN_RULES, BUILTIN_RULES[0]])
    with pytest.raises(RedactionConfigError, match="privacy must be 'sensitive' or 'forbidden'"):
        Redactor([Rule(name="a", privacy=cast(Any, "public"), pattern="a")])
    with pytest.raises(RedactionConfigError, match="max_field_chars must be at least 1"):
        Redactor(BUILTIN_RULES, max_field_chars=0)


def test_builtin_rules_all_compile_with_unique_names() -> None:
    names = [rule.name for rule in BUILTIN_RULES]
    assert len(set(names)) == len(names)
    for rule in BUILTIN_RULES:
        compile_rule(rule)
    forbidden = [r.privacy == "forbidden" for r in BUILTIN_RULES]
    assert forbidden == sorted(forbidden, reverse=True), "forbidden rules come first"


def test_replacement_is_literal() -> None:
    """A replacement is text, never a template: it cannot copy the secret back in."""
    redactor = Redactor.from_config(
        [
            {
                "name": "x",
                "privacy": "sensitive",
                "pattern": r"key:(\w+)",
                "group": 1,
                "replacement": r"\1",
            }
        ],
        builtin=False,
    )
    assert redactor.redact_text("key:abc", "path") == r"key:\1"


def test_a_configured_cut_only_rule_applies_to_cut_fields_only() -> None:
    redactor = Redactor.from_config(
        [
            {
                "name": "corp-token-cut",
                "privacy": "forbidden",
                "pattern": r"(?<![a-z0-9])corp_[0-9a-f]*\Z",
                "only_when_cut": True,
            }
        ]
    )
    (rule,) = [r.rule for r in redactor.rules if r.rule.name == "corp-token-cut"]
    assert rule.only_when_cut
    assert redactor.redact_text("/tmp/corp_01ab", "path") == "/tmp/corp_01ab"
    assert redactor.redact_text("/tmp/corp_01ab", "path", cut=True) == marker("corp-token-cut")
    result = redactor.redact_argv(("app", "corp_01", "corp_02"), cut=(2,))
    assert result.argv == ("app", "corp_01", marker("corp-token-cut"))
    assert redactor.stats.fields_redacted == {"corp-token-cut": 2}


def test_only_when_cut_defaults_to_false() -> None:
    (rule,) = parse_rules([{"name": "a", "privacy": "forbidden", "pattern": "x"}])
    assert rule.only_when_cut is False
    (rule,) = parse_rules(
        [{"name": "a", "privacy": "forbidden", "pattern": "x", "only_when_cut": True}]
    )
    assert rule == Rule(name="a", privacy="forbidden", pattern="x", only_when_cut=True)
