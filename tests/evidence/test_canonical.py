"""Canonical JSON: hand-written cases, an rfc8785 corpus, and properties."""

from __future__ import annotations

import datetime
import enum
import json
import random
from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, CanonicalError, canonical

# --- hand-written cases ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"null"),
        (True, b"true"),
        (False, b"false"),
        (0, b"0"),
        (-0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ("", b'""'),
        ([], b"[]"),
        ({}, b"{}"),
        ((1, "a", None), b'[1,"a",null]'),
        ([True, [False, []], {}], b"[true,[false,[]],{}]"),
        ({"b": 1, "a": {"d": [], "c": None}}, b'{"a":{"c":null,"d":[]},"b":1}'),
    ],
)
def test_simple_values(value: object, expected: bytes) -> None:
    assert canonical(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x00", b'"\\u0000"'),
        ("\x01", b'"\\u0001"'),
        ("\x08", b'"\\b"'),
        ("\t", b'"\\t"'),
        ("\n", b'"\\n"'),
        ("\x0b", b'"\\u000b"'),
        ("\x0c", b'"\\f"'),
        ("\r", b'"\\r"'),
        ("\x1f", b'"\\u001f"'),
        ('"', b'"\\""'),
        ("\\", b'"\\\\"'),
        ("/", b'"/"'),
        (" ", b'" "'),
        ("\x7f", b'"\x7f"'),
        ("\u0080", '"\u0080"'.encode()),
        ("é", '"é"'.encode()),
        ("\u2028\u2029", '"\u2028\u2029"'.encode()),
        ("€", b'"\xe2\x82\xac"'),
        ("\U0001f600", b'"\xf0\x9f\x98\x80"'),
        ("\ufeff", '"\ufeff"'.encode()),
    ],
)
def test_string_escapes_match_json_stringify(text: str, expected: bytes) -> None:
    assert canonical(text) == expected


def test_every_control_character_is_escaped_with_lowercase_hex() -> None:
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    for code in range(0x20):
        want = short.get(code, f"\\u{code:04x}")
        assert canonical(chr(code)) == f'"{want}"'.encode()


def test_rfc8785_string_example() -> None:
    # RFC 8785 section 3.2.2.2, the string part of the sample.
    value = json.loads(r'"\u20ac$\u000F\u000aA\u0027\u0042\u0022\u005c\\\"\/"')
    assert canonical(value) == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()


def test_rfc8785_key_sorting_example() -> None:
    # RFC 8785 section 3.2.3: keys sort by UTF-16 code units.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected_order = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    out = canonical(value)
    assert list(json.loads(out)) == expected_order
    assert out == rfc8785.dumps(value)


def test_keys_sort_by_utf16_not_code_point() -> None:
    # U+1F600 > U+FB01 as code points, but its UTF-16 lead unit 0xD83D < 0xFB01.
    assert canonical({"\ufb01": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufb01":1}'.encode()


def test_tuples_and_int_subclasses() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    assert canonical({"t": (1, (2,))}) == b'{"t":[1,[2]]}'
    assert canonical(Level.HIGH) == b"3"


# --- refusals, with the path of the offending value ------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"data": {"x": 1.5}}, "$.data.x"),
        ({"data": {"x": 1.0}}, "$.data.x"),
        ([0, [1, float("nan")]], "$[1][1]"),
        ({"a b": [float("inf")]}, "$['a b'][0]"),
        (-0.0, "$"),
        ({"items": [0, 1, 2, {"n": 2.5}]}, "$.items[3].n"),
    ],
)
def test_floats_are_refused_with_their_path(value: object, path: str) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical(value)
    assert info.value.path == path
    assert "float" in info.value.problem
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("number", [2**53, -(2**53), 2**64, -(10**30)])
def test_integers_outside_the_safe_range_are_refused(number: int) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical({"data": {"n": number}})
    assert info.value.path == "$.data.n"
    assert "2**53" in info.value.problem


def test_a_huge_integer_is_refused_without_printing_it() -> None:
    with pytest.raises(CanonicalError, match="bits"):
        canonical(10**5000)


@pytest.mark.parametrize("key", [1, None, (1, 2), b"k", 1.5])
def test_non_string_keys_are_refused(key: object) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical({"data": {key: 1}})
    assert info.value.path == "$.data"
    assert "not str" in info.value.problem


def test_lone_surrogates_are_refused_in_values_and_keys() -> None:
    with pytest.raises(CanonicalError) as info:
        canonical({"s": ["ok", "a\ud800b"]})
    assert info.value.path == "$.s[1]"
    assert "U+D800" in info.value.problem
    with pytest.raises(CanonicalError) as info:
        canonical({"s": {"\udfff": 1}})
    assert info.value.path == "$.s"
    assert "surrogate" in info.value.problem
    # A surrogate pair written as two code points is still two lone surrogates.
    with pytest.raises(CanonicalError):
        canonical("\ud83d\ude00")


@pytest.mark.parametrize(
    "value",
    [b"bytes", bytearray(b"x"), {1, 2}, frozenset(), object(), datetime.date(2024, 1, 1), 1j],
)
def test_non_json_types_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical({"v": value})
    assert info.value.path == "$.v"
    assert type(value).__name__ in info.value.problem


def test_nesting_is_limited() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert canonical(deep) == b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with pytest.raises(CanonicalError, match="deeper"):
        canonical([deep])
    with pytest.raises(CanonicalError, match="deeper"):
        canonical({"k": deep})


def test_a_self_containing_value_is_refused_not_a_recursion_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(CanonicalError, match="contains itself"):
        canonical(loop)
    cycle: dict[str, object] = {}
    cycle["me"] = cycle
    with pytest.raises(CanonicalError, match="contains itself"):
        canonical(cycle)


def test_a_refusal_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        canonical(1.5)


# --- msgspec Structs ---------------------------------------------------------


class Point(msgspec.Struct):
    y: int
    x: int


class Renamed(msgspec.Struct, rename="camel", omit_defaults=True):
    file_name: str
    extra_flag: bool = False


class Holder(msgspec.Struct):
    point: Point
    tags: frozenset[str]
    items: list[Point]


class WithFloat(msgspec.Struct):
    x: float


class WithBytes(msgspec.Struct):
    raw: bytes


class WithTime(msgspec.Struct):
    when: datetime.datetime


def test_structs_are_converted_to_builtins() -> None:
    assert canonical(Point(y=2, x=1)) == b'{"x":1,"y":2}'
    assert canonical(Renamed("a")) == b'{"fileName":"a"}'
    holder = Holder(Point(1, 2), frozenset({"b", "a", "c"}), [Point(3, 4)])
    assert (
        canonical({"h": holder})
        == b'{"h":{"items":[{"x":4,"y":3}],"point":{"x":2,"y":1},"tags":["a","b","c"]}}'
    )


def test_struct_fields_are_held_to_the_same_rules() -> None:
    with pytest.raises(CanonicalError) as info:
        canonical({"data": WithFloat(1.0)})
    assert info.value.path == "$.data.x"
    with pytest.raises(CanonicalError) as info:
        canonical([WithBytes(b"\x00")])
    assert info.value.path == "$[0].raw"
    assert "bytes" in info.value.problem
    with pytest.raises(CanonicalError) as info:
        canonical(WithTime(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)))
    assert info.value.path == "$.when"


# --- corpus against an independent implementation --------------------------

CORPUS: list[object] = [
    None,
    True,
    0,
    -MAX_SAFE_INTEGER,
    "",
    "plain ascii",
    "".join(chr(c) for c in range(0x80)),
    "".join(chr(c) for c in range(0x80, 0x800, 7)),
    "\u2028\u2029\ufeff\ufffd\U0010ffff",
    "quotes \" and \\ and / and '",
    [],
    {},
    [[[[]]]],
    {"": "", " ": " ", "\x00": "\x00"},
    {"z": 1, "a": 2, "A": 3, "_": 4, "0": 5, "aa": 6, "a\x00": 7},
    {"é": 1, "e": 2, "\u00e9\u0301": 3, "\U0001d11e": 4, "\uffff": 5, "\ue000": 6},
    {"type": "exec", "pid": 4242, "argv": ["/bin/sh", "-c", "echo hi\n"], "env": None},
    {"nested": {"b": [1, {"y": True, "x": False}], "a": {"\t": "\r\n"}}},
    [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 1, -1, 10**15],
    {"emoji": "\U0001f600\U0001f4a9", "cjk": "中文", "rtl": "\u05d0\u05d1", "zwj": "a\u200db"},
]


@pytest.mark.parametrize("value", CORPUS, ids=range(len(CORPUS)))
def test_corpus_matches_rfc8785(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------

safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
texts = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "\x00", "\u2028", "\ud7ff", "\ue000", "\U0001f600", '"\\/', "\x1f\x7f"]
)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | texts,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=40,
)


@given(json_values)
def test_round_trips_through_json_loads(value: object) -> None:
    assert json.loads(canonical(value)) == value


@given(json_values)
def test_is_idempotent_over_parse_and_reencode(value: object) -> None:
    once = canonical(value)
    assert canonical(json.loads(once)) == once
    assert canonical(msgspec.json.decode(once)) == once


@given(json_values)
def test_matches_rfc8785(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


def _reorder(value: object, rng: random.Random) -> object:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _reorder(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_reorder(item, rng) for item in value]
    return value


@given(json_values, st.randoms(use_true_random=False))
def test_key_order_does_not_matter(value: object, rng: random.Random) -> None:
    assert canonical(_reorder(value, rng)) == canonical(value)


@given(json_values)
def test_output_is_compact_utf8_without_raw_controls(value: object) -> None:
    out = canonical(value)
    out.decode("utf-8")  # valid UTF-8
    assert not any(byte < 0x20 for byte in out)


# --- the fast path must be byte-identical to the checked walk ---------------


def _walk(value: object) -> bytes:
    """The checked encoder alone, bypassing the fast path."""
    from agent.evidence import canonical as module

    out: list[str] = []
    module._encode(value, out, 0)
    return "".join(out).encode("utf-8")


_plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_plain_values)
def test_fast_path_is_the_checked_walk(value: object) -> None:
    from agent.evidence.canonical import _plain

    assert _plain(value, 0)
    assert canonical(value) == _walk(value)


def test_wide_keys_and_floats_take_the_checked_walk() -> None:
    from agent.evidence.canonical import _plain

    assert not _plain({"\U0001f600": 1}, 0)
    assert not _plain({"a": 1.0}, 0)
    assert canonical({"\U0001f600": 1, "\ufb01": 2}) == _walk({"\U0001f600": 1, "\ufb01": 2})
    with pytest.raises(CanonicalError):
        canonical({"a": "\ud800"})  # the fast encoder raises; the walk names it
