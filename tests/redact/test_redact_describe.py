"""describe(): every rule, in order, as a digest that never carries the pattern."""

from __future__ import annotations

import blake3
import msgspec

from agent.redact import BUILTIN_RULES, Redactor, Rule, RuleDigest

SECRET_IN_PATTERN = "corp_Hunter2Literal"


def test_builtin_rules_are_described_in_order() -> None:
    digests = Redactor.builtin().describe()
    assert [d.name for d in digests] == [r.name for r in BUILTIN_RULES]
    for digest, rule in zip(digests, BUILTIN_RULES, strict=True):
        assert digest.builtin
        assert digest.privacy == rule.privacy
        assert digest.pattern_blake3 == blake3.blake3(rule.pattern.encode()).hexdigest()
        assert (
            digest.group,
            digest.next_arg,
            digest.programs,
            digest.positional,
            digest.only_when_cut,
        ) == (rule.group, rule.next_arg, rule.programs, rule.positional, rule.only_when_cut)
    assert sum(d.only_when_cut for d in digests) == sum(r.only_when_cut for r in BUILTIN_RULES) > 0
    assert [d.positional for d in digests if d.positional] == [
        r.positional for r in BUILTIN_RULES if r.positional
    ]
    assert sum(d.positional > 0 for d in digests) >= 5


def test_a_configured_pattern_is_never_printed() -> None:
    pattern = rf"{SECRET_IN_PATTERN}|(?P<pin>pin:[0-9]{{4}})"
    redactor = Redactor.from_config(
        [
            {
                "name": "corp",
                "privacy": "sensitive",
                "pattern": pattern,
                "group": "pin",
                "programs": ["acme"],
            }
        ]
    )
    digests = redactor.describe()
    assert len(digests) == len(BUILTIN_RULES) + 1
    last = digests[-1]
    assert last == RuleDigest(
        name="corp",
        privacy="sensitive",
        builtin=False,
        pattern_blake3=blake3.blake3(pattern.encode()).hexdigest(),
        group="pin",
        programs=("acme",),
    )
    encoded = msgspec.json.encode(digests).decode()
    assert SECRET_IN_PATTERN not in encoded
    for rule in BUILTIN_RULES:
        assert msgspec.json.encode(rule.pattern).decode() not in encoded
    assert msgspec.json.decode(encoded, type=tuple[RuleDigest, ...]) == digests


def test_builtin_means_unchanged() -> None:
    """A configured rule that reuses a built-in's shape but not its pattern is not built-in."""
    changed = msgspec.structs.replace(BUILTIN_RULES[0], pattern="-----BEGIN PRIVATE")
    digests = Redactor([changed, BUILTIN_RULES[1]]).describe()
    assert [d.builtin for d in digests] == [False, True]
    assert digests[0].pattern_blake3 != blake3.blake3(BUILTIN_RULES[0].pattern.encode()).hexdigest()


def test_same_rules_same_description() -> None:
    assert Redactor.builtin().describe() == Redactor.from_config([]).describe()
    redactor = Redactor.builtin()
    assert redactor.describe() is redactor.describe()


def test_a_pattern_holding_a_lone_surrogate_is_described() -> None:
    """Config read from JSON can hold "\\udc80"; the digest must not raise on it."""
    rule = Rule(name="odd", privacy="forbidden", pattern="\udc80x")
    (digest,) = Redactor([rule]).describe()
    assert digest.pattern_blake3 == blake3.blake3(b"\xed\xb2\x80x").hexdigest()
