"""argparse types for every numeric option: refused at parsing, in one line.

Each factory returns a ``type=`` callable (an instance of :class:`IntRange`,
:class:`FloatRange` or :class:`PowerOfTwo`, which keep their bounds for
``--help`` and tests) that turns the text into a value
or raises :class:`argparse.ArgumentTypeError`; argparse then names the
option, and :mod:`agent.cli` makes that one line and exit status 2, before
any file is read or any BPF program compiled. So no option can reach the
code that uses it as nan, infinity, a negative count or a 20-digit queue
size. The bounds come from :mod:`agent.limits`, which the configuration
schema checks against too.

Only plain ASCII decimal is accepted (``12``, ``-3``, ``0.5``, ``1e3``):
no ``nan``/``inf``, no ``1_000``, no other scripts' digits, and nothing
longer than :data:`_MAX_TEXT` characters (no value in range is that long).
The text is echoed in the error shortened and ``repr``-quoted, so an odd
argument cannot spill over more than one line.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Final

import msgspec

from agent.capture.container_id import CONTAINER_PREFIX, CONTAINER_PREFIX_EXPECTED
from agent.limits import MAX_EVENT_BODY_BYTES, MAX_SEQ

__all__ = [
    "PATTERN_TYPES",
    "FloatRange",
    "IntRange",
    "PowerOfTwo",
    "bounded_float",
    "bounded_int",
    "container_prefix",
    "expect_head",
    "json_object",
    "power_of_two",
    "shown",
]

_MAX_TEXT: Final = 40
_INT: Final = re.compile(r"[+-]?[0-9]{1,40}")
_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_HEAD: Final = re.compile(r"([0-9]{1,16}):([0-9a-fA-F]{64})")


def shown(text: str) -> str:
    """``text`` quoted for an error line: ``repr`` (no raw newlines), cut short."""
    if len(text) > _MAX_TEXT:
        return repr(text[:_MAX_TEXT]) + "..."
    return repr(text)


def _number(value: float) -> str:
    """A bound as a reader writes it: ``86400``, not ``86400.0``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _parse_int(text: str) -> int | None:
    stripped = text.strip()
    if len(stripped) > _MAX_TEXT or not _INT.fullmatch(stripped):
        return None
    return int(stripped)


class IntRange:
    """An argparse type: an integer from :attr:`low` to :attr:`high` inclusive.

    ``what`` names it in the error: ``expected a pid from 1 to 4194303,
    got '0'``. The same message for text that is no integer at all and for
    one out of range: either way the user learns what would do.
    """

    def __init__(self, low: int, high: int, *, what: str = "an integer") -> None:
        if low > high:
            raise ValueError(f"empty range {low}..{high}")
        self.low, self.high = low, high
        self.expected = f"expected {what} from {low} to {high}"

    def __call__(self, text: str) -> int:
        value = _parse_int(text)
        if value is None or not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{self.expected}, got {shown(text)}")
        return value

    def __repr__(self) -> str:  # argparse shows it in some messages
        return f"integer {self.low}..{self.high}"


class FloatRange:
    """An argparse type: a finite number from :attr:`low` (or, with
    ``above``, more than it) to :attr:`high`.

    nan and the infinities are refused whatever the bounds, as is anything
    that overflows to them (``1e999``): a nan compares false with every
    bound, so a check written as ``value < 0`` would let it through.
    ``unit`` follows the range in the error: ``expected 0 to 86400 seconds``.
    """

    def __init__(self, low: float, high: float, *, above: bool = False, unit: str = "") -> None:
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"bad range {low}..{high}")
        self.low, self.high, self.above = low, high, above
        suffix = f" {unit}" if unit else ""
        if above:
            self.expected = f"expected more than {_number(low)} and at most {_number(high)}{suffix}"
        else:
            self.expected = f"expected {_number(low)} to {_number(high)}{suffix}"

    def __call__(self, text: str) -> float:
        stripped = text.strip()
        value = math.nan
        if len(stripped) <= _MAX_TEXT and _FLOAT.fullmatch(stripped):
            value = float(stripped)
        low, high = self.low, self.high
        in_range = low < value <= high if self.above else low <= value <= high
        if not (math.isfinite(value) and in_range):
            raise argparse.ArgumentTypeError(f"{self.expected}, got {shown(text)}")
        return value

    def __repr__(self) -> str:
        return f"number {self.low}..{self.high}"


class PowerOfTwo:
    """An argparse type: a power of two from 1 to :attr:`high` (itself one)."""

    def __init__(self, high: int) -> None:
        if high < 1 or high & (high - 1):
            raise ValueError(f"{high} is not a power of two")
        self.low, self.high = 1, high
        self.expected = f"expected a power of two from 1 to {high}"

    def __call__(self, text: str) -> int:
        value = _parse_int(text)
        if value is None or not 1 <= value <= self.high or value & (value - 1):
            raise argparse.ArgumentTypeError(f"{self.expected}, got {shown(text)}")
        return value

    def __repr__(self) -> str:
        return f"power of two up to {self.high}"


def bounded_int(low: int, high: int, *, what: str = "an integer") -> IntRange:
    """``type=`` for an integer option from ``low`` to ``high``; see :class:`IntRange`."""
    return IntRange(low, high, what=what)


def bounded_float(low: float, high: float, *, above: bool = False, unit: str = "") -> FloatRange:
    """``type=`` for a number option; see :class:`FloatRange`."""
    return FloatRange(low, high, above=above, unit=unit)


def power_of_two(high: int) -> PowerOfTwo:
    """``type=`` for a power-of-two option up to ``high``; see :class:`PowerOfTwo`."""
    return PowerOfTwo(high)


def expect_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (a log head remembered earlier) as ``(seq, lower-case hex)``."""
    found = _HEAD.fullmatch(text.strip())
    if found is None or int(found[1]) > MAX_SEQ:
        raise argparse.ArgumentTypeError(
            f"expected SEQ:HASH, a sequence number from 0 to {MAX_SEQ} and 64 hex digits,"
            f" got {shown(text)}"
        )
    return int(found[1]), found[2].lower()


def container_prefix(text: str) -> str:
    """A container id or a prefix of it (``--container``): checked here, so a
    typo is one line before any request."""
    if CONTAINER_PREFIX.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"expected {CONTAINER_PREFIX_EXPECTED}, got {shown(text)}")
    return text


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``mark --data``), at most :data:`MAX_EVENT_BODY_BYTES` bytes
    of it; what the object may hold the daemon checks (agent.api.produce)."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_EVENT_BODY_BYTES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_EVENT_BODY_BYTES} bytes of JSON")
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as err:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object, got {shown(text)} ({err})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object, got a JSON {type(value).__name__}: {shown(text)}"
        )
    return value


#: The option types that parse a pattern rather than a number in a range.
PATTERN_TYPES: Final = (expect_head, container_prefix, json_object)
