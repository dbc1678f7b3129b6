"""The prefilter changes nothing but speed: the same output and counters as
trying every rule on every field, and no rule ruled out of text it matches."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import BUILTIN_RULES, Redactor, Rule
from agent.redact.engine import _PlainRedactor
from agent.redact.literals import needs_of
from agent.redact.prefilter import check_for
from tests.redact.test_redact_corpus import CORPUS, CUT_CORPUS

# --- the pool text is built from ------------------------------------------------


def _corpus_strings() -> list[str]:
    out: list[str] = []
    for case in CORPUS:
        given_ = case.given
        out.extend(given_ if isinstance(given_, tuple) else (given_,))
        out.extend(case.secrets)
    out.extend(case.given for case in CUT_CORPUS)
    return out


def _rule_literals() -> list[str]:
    """Every literal the prefilter looks for, and every program a rule names."""
    out: set[str] = set()
    for rule in BUILTIN_RULES:
        out.update(rule.programs)
        needs = needs_of(re.compile(rule.pattern))
        assert needs is not None, rule.name
        for atoms in (needs.anchored, *needs.floating):
            out.update(atom.text for atom in atoms)
    return sorted(out)


CORPUS_STRINGS = _corpus_strings()
LITERALS = _rule_literals()
# Characters re folds onto ASCII letters ignoring case, and other non-ASCII.
FOLDS = ["\u017f", "\u212a", "\u0131", "\u0130", "\u00e9", "\udcff", "\udc80"]
SEPARATORS = [" ", "=", ":", "/", "-", "--", "'", '"', "@", "?", "&", "\n", ";", "{", ",", "_"]


@st.composite
def pieces(draw: st.DrawFn) -> str:
    """A piece of a field: a corpus string or a slice of one, a rule's literal
    (maybe in another case, maybe with a folding character in it), a
    separator, or random text."""
    kind = draw(st.sampled_from(["corpus", "slice", "literal", "fold", "sep", "text"]))
    if kind == "corpus":
        return draw(st.sampled_from(CORPUS_STRINGS))
    if kind == "slice":
        whole = draw(st.sampled_from(CORPUS_STRINGS))
        start = draw(st.integers(0, len(whole)))
        return whole[start : start + draw(st.integers(0, 24))]
    if kind == "literal":
        literal = draw(st.sampled_from(LITERALS))
        mode = draw(st.sampled_from(["keep", "upper", "lower", "swap"]))
        return {
            "keep": literal,
            "upper": literal.upper(),
            "lower": literal.lower(),
            "swap": literal.swapcase(),
        }[mode]
    if kind == "fold":
        literal = draw(st.sampled_from(LITERALS))
        at = draw(st.integers(0, len(literal)))
        return literal[:at] + draw(st.sampled_from(FOLDS)) + literal[at + 1 :]
    if kind == "sep":
        return draw(st.sampled_from(SEPARATORS))
    return draw(st.text(max_size=8))


NEAR = st.lists(pieces(), max_size=8).map("".join)
RANDOM = st.text(max_size=80)
UNDECODABLE = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape"))
FIELDS = st.one_of(NEAR, NEAR, RANDOM, UNDECODABLE)
ARGVS = st.lists(st.one_of(NEAR, st.sampled_from(LITERALS)), max_size=8).map(tuple)

# Two long-lived redactors fed the same calls: equal counters after every
# call means equal counters for every call.
FAST = Redactor.builtin()
PLAIN = _PlainRedactor.builtin()


def _same(field_output: object, plain_output: object) -> None:
    assert field_output == plain_output
    assert FAST.stats == PLAIN.stats


# --- the engine: prefiltered against plain ---------------------------------------


@settings(max_examples=1000, deadline=None)
@given(FIELDS, st.sampled_from(["path", "comm", "address"]), st.booleans())
def test_text_fields_agree(value: str, field: str, cut: bool) -> None:
    _same(
        FAST.redact_text_detail(value, field, cut=cut),
        PLAIN.redact_text_detail(value, field, cut=cut),
    )


@settings(max_examples=1000, deadline=None)
@given(ARGVS, st.sets(st.integers(0, 8), max_size=3))
def test_argv_agrees(argv: tuple[str, ...], cut: set[int]) -> None:
    _same(FAST.redact_argv(argv, cut=cut), PLAIN.redact_argv(argv, cut=cut))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(sorted({p for r in BUILTIN_RULES for p in r.programs}))),
    ARGVS,
    st.sets(st.integers(0, 12), max_size=4),
)
def test_argv_after_programs_agrees(
    programs: list[str], argv: tuple[str, ...], cut: set[int]
) -> None:
    """Program-scoped rules, positional and next_arg ones, getopt bundles, and
    cut entries (scanned by other gates than uncut ones)."""
    entries = (*programs, *argv)
    _same(FAST.redact_argv(entries, cut=cut), PLAIN.redact_argv(entries, cut=cut))


def test_every_corpus_case_agrees() -> None:
    for case in CORPUS:
        if isinstance(case.given, tuple):
            _same(FAST.redact_argv(case.given), PLAIN.redact_argv(case.given))
        else:
            for cut in (False, True):
                _same(
                    FAST.redact_text_detail(case.given, case.kind, cut=cut),
                    PLAIN.redact_text_detail(case.given, case.kind, cut=cut),
                )
    for cut_case in CUT_CORPUS:
        _same(
            FAST.redact_text_detail(cut_case.given, cut_case.kind, cut=True),
            PLAIN.redact_text_detail(cut_case.given, cut_case.kind, cut=True),
        )
        _same(
            FAST.redact_argv(("app", cut_case.given), cut={1}),
            PLAIN.redact_argv(("app", cut_case.given), cut={1}),
        )


def test_a_long_cut_field_agrees() -> None:
    """Longer than the cut window: the tail gets a scan of its own."""
    for case in CUT_CORPUS:
        value = "/x" * 700 + case.given
        _same(
            FAST.redact_text_detail(value, "path", cut=True),
            PLAIN.redact_text_detail(value, "path", cut=True),
        )


# --- each rule: never ruled out of text it matches ---------------------------------


COMPILED = [(rule, re.compile(rule.pattern)) for rule in BUILTIN_RULES]


@settings(max_examples=1000, deadline=None)
@given(FIELDS)
def test_no_rule_is_ruled_out_of_text_it_matches(text: str) -> None:
    """Stronger than the output: a forbidden rule's match hides every later
    rule's; here each rule is asked alone, of its check, of the gate and of
    the gate's candidates."""
    low = text.lower() if text.isascii() else None
    plan = FAST._base_plan
    assert len(plan.gates) == len(plan.cut_gates) == len(plan.both_gates) == 1
    gates = {"main": plan.gates[0], "cut": plan.cut_gates[0], "both": plan.both_gates[0]}
    for rule, pattern in COMPILED:
        if pattern.search(text) is None:
            continue
        check = check_for(pattern)
        assert check is not None
        assert check.could_match(text, low), (rule.name, text)
        if rule.programs:
            continue  # not in the base plan
        for name in ("cut", "both") if rule.only_when_cut else ("main", "both"):
            gate = gates[name]
            assert gate is not None
            assert gate.may_match(text) == (True, low), (rule.name, name, text)
            assert check in set(gate.candidates(text, low)), (rule.name, name, text)


def test_every_builtin_rule_is_prefiltered() -> None:
    """A Python whose ``re`` parse tree the walk no longer reads would make
    every rule run always: correct, but slow; this says so."""
    unchecked = [r.rule.name for r in Redactor.builtin().rules if check_for(r.matcher) is None]
    assert unchecked == []


def test_ordinary_fields_cost_one_scan() -> None:
    """Library paths and comm names: the gate rules every built-in rule out."""
    plan = FAST._base_plan
    (gate,), (both,) = plan.gates, plan.both_gates  # one scan, cut or not
    assert plan.unchecked == ((), (), (), ())
    for value in (
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
        "/etc/ld.so.cache",
        "/usr/share/locale/de/LC_MESSAGES/coreutils.mo",
        "/proc/self/status",
        "systemd-journal",
        "kworker/u4:2",
        "/home/user/src/project/build/CMakeFiles/target.dir/main.cpp.o",
    ):
        assert gate.may_match(value) == (False, None), value
        assert both.may_match(value) == (False, None), value
        assert plan.live(value, plan.both_gates) == ((), (), (), ()), value
    for value in ("--password=x", "ghp_x", "Authorization: x", "https://u:p@h"):
        assert gate.may_match(value)[0], value


# --- configured rules: folding, and rules with nothing to look for ----------------


def _pair(*rules: Rule) -> tuple[Redactor, Redactor]:
    return Redactor(BUILTIN_RULES + rules), _PlainRedactor(BUILTIN_RULES + rules)


def test_case_folding_beyond_ascii_is_re_s() -> None:
    """``re`` matches U+017F (long s) for ``s`` and the Kelvin sign for ``k``
    ignoring case; so does the prefilter (text that is not ASCII goes
    through re's own ignore-case mode)."""
    rule = Rule(name="corp-token", privacy="sensitive", pattern=r"(?i)corp_token=(\S+)", group=1)
    fast, plain = _pair(rule)
    for value in ("corp_to\u212aen=abc", "CORP_TOKEN=abc", "corp_to\u212aen=abc \u017f"):
        result = fast.redact_text_detail(value, "path")
        assert result == plain.redact_text_detail(value, "path")
        assert result.text.endswith("=***") or "=*** " in result.text, value
    assert fast.stats == plain.stats


def test_a_non_ascii_literal_ignoring_case() -> None:
    """``(?i)\u017fecret`` matches ASCII ``secret``: no ASCII shortcut for it."""
    rule = Rule(name="long-s", privacy="forbidden", pattern="(?i)\u017fecret-value")
    fast, plain = _pair(rule)
    for value in ("/tmp/SECRET-VALUE", "/tmp/secret-value", "/tmp/\u017fecret-value", "/tmp/x"):
        assert fast.redact_text_detail(value, "path") == plain.redact_text_detail(value, "path")
    assert fast.stats.fields_redacted == {"long-s": 3}
    assert fast.stats == plain.stats


def test_a_rule_with_no_literal_always_runs() -> None:
    rule = Rule(name="long-hex", privacy="forbidden", pattern=r"[0-9a-f]{40}")
    assert check_for(re.compile(rule.pattern)) is None
    fast, plain = _pair(rule)
    value = "/srv/" + "ab12" * 10
    result = fast.redact_text_detail(value, "path")
    assert result.text == "[REDACTED:long-hex]"
    assert result == plain.redact_text_detail(value, "path")
    assert fast.stats == plain.stats
    assert fast._base_plan.unchecked.forbidden != ()


def test_back_references_and_conditions() -> None:
    """Patterns that could not be combined into one regex still prefilter
    soundly: a back-reference is "no knowledge", a condition is either branch."""
    rules = (
        Rule(name="doubled", privacy="forbidden", pattern=r"(?P<q>['\"])zz-(?P=q)\1"),
        Rule(
            name="cond",
            privacy="sensitive",
            pattern=r"(<)?key-(\w+)(?(1)>|;)",
            group=2,
        ),
    )
    fast, plain = _pair(*rules)
    for value in ("'zz-''", '"zz-""', "<key-abc>", "key-abc;", "key-abc>", "<key-abc;"):
        assert fast.redact_text_detail(value, "path") == plain.redact_text_detail(value, "path")
    assert fast.stats == plain.stats
    assert fast.stats.fields_redacted == {"doubled": 2, "cond": 3}


def test_a_replacement_that_makes_a_later_rule_match() -> None:
    """After a rule changes the text, later rules are checked against the new
    text, not ruled out by the old one."""
    first = Rule(
        name="aaa-first", privacy="sensitive", pattern=r"tok(en)", group=1, replacement="ken qq-xy"
    )
    second = Rule(name="aaa-second", privacy="sensitive", pattern=r"qq-(xy)", group=1)
    fast, plain = _pair(first, second)
    result = fast.redact_text_detail("token", "path")
    assert result == plain.redact_text_detail("token", "path")
    assert result.text == "tokken qq-***"
    assert result.fired == ("aaa-first", "aaa-second")
    assert fast.stats == plain.stats


def test_re_folds_no_character_onto_ascii_punctuation_or_digits() -> None:
    """Why an ASCII character that is not a letter is taken as case-sensitive
    even in an ignore-case pattern (one ``startswith`` instead of a
    ``lower()``): no character matches one ignoring case but not with case."""
    ascii_other = "".join(chr(c) for c in range(128) if not chr(c).isalpha())
    cased = re.compile(f"[{re.escape(ascii_other)}]")
    folded = re.compile(f"(?i:[{re.escape(ascii_other)}])")
    extra = [
        hex(c)
        for c in range(0x110000)
        if folded.fullmatch(chr(c)) is not None and cased.fullmatch(chr(c)) is None
    ]
    assert extra == []


def test_a_pattern_shared_by_two_program_lists_runs_once() -> None:
    """``\\A-p(.+)?\\Z`` is mongo's, login's, smbtar's and ncftp's: one check
    in several gates; the rule still runs once, counted once."""
    for argv in (("mongo", "login", "-pSecret"), ("ncftp", "smbtar", "login", "-p", "pw")):
        _same(FAST.redact_argv(argv), PLAIN.redact_argv(argv))


def test_new_sets_of_programs_compile_no_gate() -> None:
    """A plan per set of programs an argv names, but gates per programs list:
    an attacker naming new combinations costs no regex compilation."""
    from agent.redact.prefilter import gate_for

    redactor = Redactor.builtin()
    programs = sorted({p for r in BUILTIN_RULES for p in r.programs})
    redactor.redact_argv(tuple(programs))  # every group's gate, once
    before = gate_for.cache_info()
    for first, second in zip(programs, reversed(programs), strict=True):
        redactor.redact_argv((first, second, "-x", "--password=pw"))
    after = gate_for.cache_info()
    assert after.misses == before.misses
    assert after.hits > before.hits


def test_two_rules_with_one_pattern_each_run_once() -> None:
    """Two rules with the same pattern share a check, in two gates; each rule
    still runs once (a replacement that matches again would show a second run)."""
    rules = tuple(
        Rule(
            name=f"grow-{n}",
            privacy="sensitive",
            pattern="a(b)",
            group=1,
            replacement="ab",
            programs=(f"prog{n}",),
        )
        for n in (1, 2)
    )
    fast, plain = _pair(*rules)
    argv = ("prog1", "prog2", "ab")
    result = fast.redact_argv(argv)
    assert result == plain.redact_argv(argv)
    assert result.argv[2] == "aaab"
    assert fast.stats == plain.stats


def test_a_cut_entry_changed_by_a_rule_before_its_gates_ever_scanned() -> None:
    """A cut entry is scanned by the gates that include the cut-only rules;
    once a rule changes it, the later rules' candidates come from the other
    gates, which may not have scanned any field yet (they compile lazily)."""
    from agent.redact.prefilter import gate_for

    gate_for.cache_clear()
    fast, plain = Redactor.builtin(), _PlainRedactor.builtin()
    argv = ("sh", "-c", "cd /; PGPASSWORD=pw1 psql; mysql -pS3cret; wget https://u:pw2@h/?token=t")
    result = fast.redact_argv(argv, cut={0, 1, 2})  # every entry: no uncut scan
    assert result == plain.redact_argv(argv, cut={0, 1, 2})
    fired = {"env-secret-inline", "url-userinfo", "query-secret", "shell-mysql-password"}
    assert fired <= set(result.fired)
    assert fast.stats == plain.stats
