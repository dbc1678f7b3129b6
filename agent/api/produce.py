"""What a local producer may send with ``POST /v1/events``, and how often. Sans-I/O.

A producer (a deploy script, ``tracehound mark``, any program of an
allowed uid or gid) appends an application event to the evidence log
beside the kernel's records. Everything it sends is attacker-chosen, so
it is held to a small, strict shape before anything else sees it:

- The body is one JSON object, at most :data:`MAX_BODY_BYTES` bytes (the
  HTTP parser refuses a larger one from its head, 413), with exactly the
  members of :class:`ProducedEvent` (an unknown one is refused: a typo
  like ``mesage`` would otherwise write an empty event):
  ``message`` (required, 1 to :data:`MAX_MESSAGE_CHARS` characters),
  ``kind`` (a name like ``deploy.start``, default ``mark``) and ``data``
  (an object, default empty).
- ``data`` is plain JSON the evidence log can hold canonically: keys of
  :data:`KEY_PATTERN`, strings of at most :data:`MAX_STRING_CHARS`,
  integers within +-(2**53 - 1), booleans, null, lists and objects at most
  :data:`MAX_DEPTH` deep and :data:`MAX_ITEMS` values in all. Floats are
  refused (canonical JSON has none: send a string or a scaled integer).
- No text may hold a lone surrogate (it has no UTF-8 form).

Each refusal is an :class:`~agent.api.http.HttpError` 400 with one line
saying which member and what was expected.

Rate: :class:`RateLimiter`, a token bucket per uid (not per pid: a loop
that forks would get a fresh bucket per child), in a table of at most
``capacity`` uids. A bucket that has refilled holds nothing worth keeping,
so a full table makes room by dropping one; when every bucket is in use a
new uid is refused (counted as ``table_full``), never an old one's state
forgotten. Time is passed in, so the limiter is deterministic under test.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec

from agent.api.http import HttpError
from agent.limits import MAX_EVENT_BODY_BYTES

__all__ = [
    "DEFAULT_KIND",
    "KEY_PATTERN",
    "KIND_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_MESSAGE_CHARS",
    "MAX_STRING_CHARS",
    "ProducedEvent",
    "RateLimiter",
    "parse_produced",
]

MAX_BODY_BYTES: Final = MAX_EVENT_BODY_BYTES
"""Largest ``POST /v1/events`` body (:data:`agent.limits.MAX_EVENT_BODY_BYTES`)."""
MAX_MESSAGE_CHARS: Final = 4096
MAX_KIND_CHARS: Final = 64
MAX_STRING_CHARS: Final = 4096
MAX_KEY_CHARS: Final = 64
MAX_DEPTH: Final = 4
"""Objects and lists one inside another in ``data`` (``data`` itself is 1)."""
MAX_ITEMS: Final = 256
"""Values in ``data`` in all, at every depth (object members and list items)."""
DEFAULT_KIND: Final = "mark"
KIND_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
KEY_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_SAFE_INT: Final = 2**53 - 1


class ProducedEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /v1/events``: what happened, in the producer's words."""

    message: str
    kind: str = DEFAULT_KIND
    data: dict[str, Any] = {}


_decoder: Final = msgspec.json.Decoder(ProducedEvent)


def _bad(what: str) -> HttpError:
    return HttpError(400, f"body: {what}")


def _text(value: str, where: str, limit: int) -> None:
    if len(value) > limit:
        raise _bad(f"{where}: expected at most {limit} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{where}: holds a lone surrogate (not Unicode text)") from None


def parse_produced(body: bytes) -> ProducedEvent:
    """The producer's event, checked; :class:`HttpError` 400 naming what is wrong.

    The message is one line whatever the body held: msgspec's own
    messages (``Object missing required field `message```) are kept, the
    JSONPath they name shown as it is.
    """
    if not body:
        raise _bad('expected a JSON object like {"message": "deploy v1.2 started"}, got nothing')
    try:
        event = _decoder.decode(body)
    except msgspec.ValidationError as err:
        raise _bad(str(err).replace("\n", " ")) from None
    except msgspec.DecodeError as err:
        raise _bad(f"not JSON ({str(err).replace(chr(10), ' ')})") from None
    if not event.message:
        raise _bad("$.message: expected 1 to 4096 characters, got an empty string")
    _text(event.message, "$.message", MAX_MESSAGE_CHARS)
    if KIND_PATTERN.fullmatch(event.kind) is None:
        shown = event.kind if len(event.kind) <= 40 else event.kind[:40] + "..."
        raise _bad(
            f"$.kind: expected a name like 'deploy.start' ([a-z0-9._-], 1 to {MAX_KIND_CHARS}"
            f" characters), got {shown!r}"
        )
    _check_value(event.data, "$.data", 1, [0])
    return event


def _check_value(value: object, where: str, depth: int, items: list[int]) -> None:
    """Hold one value of ``data`` to the shape in the module's note."""
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise _bad(f"{where}: nested deeper than {MAX_DEPTH} levels")
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            items[0] += 1
            if items[0] > MAX_ITEMS:
                raise _bad(f"$.data: more than {MAX_ITEMS} values in all")
            if isinstance(key, str):
                if KEY_PATTERN.fullmatch(key) is None:
                    shown = key if len(key) <= 40 else key[:40] + "..."
                    raise _bad(
                        f"{where}: key {shown!r} is not a name ([A-Za-z_][A-Za-z0-9_.-],"
                        f" at most {MAX_KEY_CHARS} characters)"
                    )
                _check_value(child, f"{where}.{key}", depth + 1, items)
            else:
                _check_value(child, f"{where}[{key}]", depth + 1, items)
    elif isinstance(value, str):
        _text(value, where, MAX_STRING_CHARS)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not -_SAFE_INT <= value <= _SAFE_INT:
            raise _bad(f"{where}: integers must be within +-(2**53 - 1); send a string")
    elif isinstance(value, float):
        raise _bad(f"{where}: numbers with a fraction or exponent are not accepted"
                   " (canonical JSON); send a string or an integer")  # fmt: skip
    else:  # pragma: no cover (JSON has no other kind of value)
        raise _bad(f"{where}: not a JSON value")


class RateLimiter:
    """A token bucket per key (a uid): ``burst`` events at once, then
    ``rate`` per second; at most ``capacity`` keys held (see the module's note).

    :meth:`take` is given the time (seconds, monotonic) and the settings
    in force, so a reload applies to the next event. Counters:
    ``limited`` (refused, the bucket empty) and ``table_full`` (refused,
    no room for a new key).
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        # key -> (tokens, when they were counted)
        self._buckets: dict[int, tuple[float, float]] = {}
        self.limited = 0
        self.table_full = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: int, now: float, *, rate: float, burst: int) -> float | None:
        """Take one token for ``key``: None if it may go on, else the seconds
        until it may try again (at least 1, what ``Retry-After`` says)."""
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= self.capacity and not self._make_room(now, rate, burst):
                self.table_full += 1
                return 1.0
            tokens = float(burst)
        else:
            tokens = min(float(burst), found[0] + (now - found[1]) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self.limited += 1
            return max(1.0, math.ceil((1.0 - tokens) / rate))
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _make_room(self, now: float, rate: float, burst: int) -> bool:
        """Drop every bucket that has refilled (they hold no state); False if none had."""
        full = [
            k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]
        return bool(full)
