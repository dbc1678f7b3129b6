"""Canonical JSON bytes: one byte string per value, so a hash of it is stable.

The form is RFC 8785 (JSON Canonicalization Scheme, JCS) for the subset of
JSON that evidence records use: objects with string keys, arrays, strings,
integers, booleans and null. Anyone holding a JCS implementation can recompute
a record's hash without this code; the tests check byte equality against an
independent one.

What JCS fixes, and this module does:

- no whitespace; object members sorted by their keys' UTF-16 code units
  (not by code point: U+1F600 sorts before U+FB01, because its first UTF-16
  unit is the surrogate 0xD83D);
- strings escaped as ECMAScript ``JSON.stringify`` does: only ``"``, ``\\``
  and the controls below U+0020, with ``\\b \\f \\n \\r \\t`` where they exist
  and ``\\u00xx`` (lowercase hex) otherwise; everything else, non-ASCII and
  U+2028/U+2029 included, is raw UTF-8;
- integers in decimal, no sign on zero, no exponent.

What is refused, with a :class:`CanonicalError` naming the JSONPath of the
offending value (``$.data.x``, ``$.items[3]``):

- floats, all of them (``1.0`` too): JCS would need the ECMAScript
  number-to-string algorithm, and a float that went through a parser twice may
  not come back the same. Send an integer (scaled) or a string instead;
- integers outside +-(2**53 - 1), the I-JSON range that every JSON parser
  reads exactly;
- object keys that are not ``str``;
- strings (values or keys) holding a lone surrogate: they have no UTF-8 form;
- anything else that is not JSON (bytes, sets, datetimes, objects), and
  nesting deeper than :data:`MAX_DEPTH` (which also stops a self-containing
  list from recursing forever).

msgspec Structs are accepted anywhere: they are turned into builtins with
``msgspec.to_builtins`` (field renames and ``omit_defaults`` apply; sets come
out sorted), and the result is held to the same rules, so a Struct with a
float or bytes field is refused like a dict holding one.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from typing import Final, TypeAlias

import msgspec

__all__ = [
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "CanonicalError",
    "JSONValue",
    "canonical",
    "check_plain",
]

JSONValue: TypeAlias = "bool | int | str | list[JSONValue] | dict[str, JSONValue] | None"
"""What :func:`canonical` accepts (plus tuples and msgspec Structs)."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer magnitude accepted (ECMAScript ``Number.MAX_SAFE_INTEGER``)."""

MAX_DEPTH: Final = 256
"""Most arrays and objects accepted one inside another (``[[]]`` is 2)."""

# Types that msgspec.to_builtins would otherwise turn into strings. Passing them
# through unchanged lets the walker refuse them like any other non-JSON value,
# rather than silently choosing an encoding (base64, ISO 8601) on the caller's
# behalf.
_PASS_THROUGH: Final = (
    bytes,
    bytearray,
    memoryview,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
)

_NEEDS_ESCAPE: Final = re.compile('[\x00-\x1f"\\\\]')
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_SHORT_ESCAPES: Final = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES: Final[dict[str, str]] = {
    **{chr(c): _SHORT_ESCAPES.get(chr(c), f"\\u{c:04x}") for c in range(0x20)},
    '"': '\\"',
    "\\": "\\\\",
}


class CanonicalError(ValueError):
    """A value has no canonical form here.

    ``path`` is a JSONPath to the offending value (``$`` for the root);
    ``problem`` says what is wrong with it. ``str(err)`` is both, on one line.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class _Refused(Exception):
    """Internal: carries the path outward, innermost segment first.

    Building a path string for every value would cost on every call; instead
    each level appends its segment only when a refusal passes through it.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.segments: list[str | int] = []


def canonical(value: object) -> bytes:
    """Return the canonical (JCS) UTF-8 bytes of ``value``.

    Raises :class:`CanonicalError` when ``value`` or anything inside it is
    outside the accepted subset (see the module docstring). Nothing is
    returned partially: the error is raised before any bytes are.
    """
    if _plain(value, 0):
        # msgspec with sorted keys writes exactly the JCS bytes for this
        # subset (tests compare the two paths), ~30x faster than the walk
        # below. A lone surrogate makes it raise: the walk then says where.
        try:
            return _FAST.encode(value)
        except (UnicodeEncodeError, msgspec.EncodeError):
            pass
    out: list[str] = []
    try:
        _encode(value, out, 0)
    except _Refused as refused:
        raise CanonicalError(_format_path(refused.segments), refused.problem) from None
    # Every string was checked for lone surrogates, so this cannot fail.
    return "".join(out).encode("utf-8")


_FAST: Final = msgspec.json.Encoder(order="sorted")


def check_plain(value: object, path: str = "$") -> None:
    """Refuse ``value`` unless msgspec's sorted encoding of it is its JCS form.

    The evidence payloads' free-form parts (configuration, summaries) are
    encoded by msgspec directly; this is the check that keeps them inside
    the domain where that is exact: builtins only, ASCII keys, integers in
    the safe range, no floats, no lone surrogates. Raises
    :class:`CanonicalError` naming the offending value, ``path`` first
    (``$.config.x``).
    """
    if _plain(value, 0):
        try:
            _FAST.encode(value)
            return
        except (UnicodeEncodeError, msgspec.EncodeError):
            pass
    try:
        _encode(value, [], 0)
    except _Refused as refused:
        where = _format_path(refused.segments)
        raise CanonicalError(path + where[1:], refused.problem) from None
    raise CanonicalError(path, "outside the evidence encoder's domain (a non-ASCII key?)")


def _plain(value: object, depth: int) -> bool:
    """Is ``value`` in the subset where msgspec's sorted output is JCS?

    Only dicts with ASCII keys (code-point order is then UTF-16 order),
    lists, tuples, str, bool, None and ints in the safe range; anything else
    (floats, Structs, wide keys, deep nesting) takes the checked walk.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _plain(item, depth + 1)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def _encode(value: object, out: list[str], depth: int) -> None:
    # bool before int: True is an int to isinstance.
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _Refused(
                f"integer {_short_int(value)} is outside +-(2**53 - 1), the range "
                "every JSON parser reads exactly; send it as a string"
            )
        # int() first: an IntEnum's str() is its name, not its number.
        out.append(str(int(value)))
    elif isinstance(value, dict):
        _encode_object(value, out, depth)
    elif isinstance(value, list | tuple):
        _encode_array(value, out, depth)
    elif isinstance(value, msgspec.Struct):
        _encode(_struct_to_builtins(value), out, depth)
    elif isinstance(value, float):
        raise _Refused(
            f"float {value!r} is not allowed: floats have no stable canonical form "
            "here; send an integer (scaled) or a string"
        )
    else:
        raise _Refused(f"{type(value).__name__} is not a JSON value")


def _encode_object(obj: dict[object, object], out: list[str], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels (or contains itself)")
    for key in obj:
        if not isinstance(key, str):
            raise _Refused(f"key {_short_repr(key)} is {type(key).__name__}, not str")
        if _SURROGATE.search(key):
            raise _Refused(f"key {_short_repr(key)} contains a lone surrogate")
    # RFC 8785 3.2.3: sort by UTF-16 code units. Big-endian UTF-16 bytes
    # compare in exactly that order.
    members = sorted(obj.items(), key=lambda item: str(item[0]).encode("utf-16-be"))
    out.append("{")
    for index, (key, item) in enumerate(members):
        if index:
            out.append(",")
        out.append(_quote(str(key)))
        out.append(":")
        try:
            _encode(item, out, depth + 1)
        except _Refused as refused:
            refused.segments.append(str(key))
            raise
    out.append("}")


def _encode_array(items: list[object] | tuple[object, ...], out: list[str], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels (or contains itself)")
    out.append("[")
    for index, item in enumerate(items):
        if index:
            out.append(",")
        try:
            _encode(item, out, depth + 1)
        except _Refused as refused:
            refused.segments.append(index)
            raise
    out.append("]")


def _quote(text: str) -> str:
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        raise _Refused(
            f"string has a lone surrogate U+{ord(surrogate.group()):04X} at index "
            f"{surrogate.start()}: it has no UTF-8 form"
        )
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], text) + '"'


def _struct_to_builtins(struct: msgspec.Struct) -> object:
    try:
        return msgspec.to_builtins(struct, builtin_types=_PASS_THROUGH, order="deterministic")
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Refused(f"{type(struct).__name__} cannot be converted: {exc}") from None


def _format_path(segments: list[str | int]) -> str:
    parts = ["$"]
    for segment in reversed(segments):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _IDENTIFIER.match(segment):
            parts.append(f".{segment}")
        else:
            parts.append(f"[{_short_repr(segment)}]")
    return "".join(parts)


def _short_repr(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _short_int(value: int) -> str:
    # str() of a huge int is slow and, past 4300 digits, refused by Python.
    return str(value) if value.bit_length() <= 128 else f"of {value.bit_length()} bits"
