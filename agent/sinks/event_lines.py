"""``run --events``: each native event as one NDJSON line, redacted and escaped.

Pure: :class:`EventLines` turns an event into its line; the run command's
writer task owns the file. Each line is the event's msgspec JSON (tagged by
``kind``) after :func:`agent.redact.events.redact_event` (the same fields
and rules as the evidence log), with host text that is not UTF-8 in the
escape form of :mod:`agent.safetext` (named in the object's ``escaped``).

A folded file or network event's line carries ``count`` (the kernel events
it stands for) and ``last_ts_ns``; an unfolded one's line leaves them out
(``count`` is then 1), so it is byte for byte what it was before folding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from agent.capture.events import Event
from agent.failpoints import Failpoints
from agent.redact import Redactor
from agent.redact.events import CurrentMemo, MemoStats, redact_event
from agent.safetext import json_bytes

__all__ = ["EventLines"]

_ENCODER: Final = msgspec.json.Encoder()
#: How an unfolded event's line ends: the two fields at their defaults, last
#: in the Struct (agent.capture.events), so nothing host-made can follow them.
_UNFOLDED_TAIL: Final = b',"count":1,"last_ts_ns":0}'


class EventLines:
    """Makes ``--events`` lines with the rules ``rules()`` returns now (a
    reload may change them), through a bounded memo of redaction results.

    What can go wrong: :meth:`line` raises only for a bug (an event type it
    does not know); the writer counts such an event as lost and goes on.
    """

    def __init__(self, rules: Callable[[], Redactor], faults: Failpoints | None = None) -> None:
        self._memo = CurrentMemo(rules)
        self._faults = faults or Failpoints()

    def memo_stats(self) -> MemoStats | None:
        """The redaction memo's size and counters (None before the first line)."""
        memo = self._memo.memo
        return None if memo is None else memo.stats()

    def line(self, event: Event) -> bytes:
        if self._faults:
            self._faults.check("events.encode", getattr(event, "comm", None))
        redacted, _ = redact_event(self._memo.get(), event)
        data = json_bytes(redacted, _ENCODER.encode, msgspec.to_builtins)
        if data.endswith(_UNFOLDED_TAIL):
            data = data[: -len(_UNFOLDED_TAIL)] + b"}"
        return data + b"\n"
