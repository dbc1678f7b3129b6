"""The shortcut for a text field no gate finds anything in is exactly the prefilter's verdict.

``Plan.clean`` lets ``Redactor.redact_text_detail`` return a field as it is
without setting up a redaction: it must say True only where ``Plan.live``
names no step to try (so the full path would have tried no rule), and never
for a field a rule changes. The engine-level agreement with the plain
redactor is ``test_redact_prefilter.py``'s; this holds the shortcut itself.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import BUILTIN_RULES, Redactor, Rule
from agent.redact.engine import _PlainRedactor
from tests.redact.test_redact_prefilter import FIELDS

FAST = Redactor.builtin()
PLAIN = _PlainRedactor.builtin()


@settings(max_examples=1000, deadline=None)
@given(FIELDS)
def test_clean_is_live_naming_nothing(value: str) -> None:
    plan = FAST._base_plan
    if plan.clean(value):
        assert plan.live(value, plan.gates) == ((), (), (), ())
        assert PLAIN.redact_text_detail(value, "path").fired == ()
        assert PLAIN.redact_text_detail(value, "path").text == value


def test_ordinary_paths_are_clean_and_secrets_are_not() -> None:
    plan = FAST._base_plan
    assert plan.all_checked
    assert plan.clean("/home/user/project/src/module_17/file_119.py")
    assert plan.clean("/usr/lib/x86_64-linux-gnu/libc.so.6")
    for value in ("--password=x", "ghp_" + "a" * 36, "https://u:p@h/x", "AKIAABCDEFGHIJKLMNOP"):
        assert not plan.clean(value), value


def test_a_rule_with_nothing_to_look_for_turns_the_shortcut_off() -> None:
    anything = Rule(name="anything", privacy="sensitive", pattern=r"(?P<x>.+)", group="x")
    redactor = Redactor((*BUILTIN_RULES, anything))
    assert not redactor._base_plan.all_checked
    assert not redactor._base_plan.clean("/etc/hostname")
    assert redactor.redact_text_detail("/etc/hostname", "path").fired == ("anything",)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_too_long_and_cut_fields_never_take_the_shortcut(value: str) -> None:
    short = Redactor.builtin(max_field_chars=4)
    plain = _PlainRedactor.builtin(max_field_chars=4)
    for cut in (False, True):
        assert short.redact_text_detail(value, "path", cut=cut) == plain.redact_text_detail(
            value, "path", cut=cut
        )
    assert short.stats == plain.stats
