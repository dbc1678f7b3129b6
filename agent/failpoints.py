"""Failpoints: make one record fail at a named stage of a running daemon.

"No single record can end the pipeline" has to be shown on the real daemon,
with the real kernel, and no host input can make the mapper or the encoders
fail once they escape and redact everything. So, as etcd's gofail and
TiKV's fail-rs do, a few named points in the pipeline ask here whether to
fail, and fail only for events of a process whose ``comm`` is named in the
daemon's environment::

    TRACEHOUND_FAILPOINTS="evidence.map=th-poison,events.encode=th-poison"

Points: ``evidence.map`` (the mapper), ``evidence.store`` (appending one
record to the log), ``events.encode`` (a ``--events`` line). Off unless the
variable is set, which only whoever starts the daemon can do; an entry
that does not parse is refused at start (fail closed on configuration).
The cost when off is one dictionary lookup per record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from agent.errors import UsageError

__all__ = ["ENV", "POINTS", "Failpoints", "InjectedFault", "from_environment"]

ENV: Final = "TRACEHOUND_FAILPOINTS"
POINTS: Final = frozenset({"evidence.map", "evidence.store", "events.encode"})
_ENTRY: Final = re.compile(r"([a-z.]+)=([^,=]{1,15})")


class InjectedFault(RuntimeError):
    """Raised at a failpoint: stands for any bug a single record could hit."""


class Failpoints:
    """Which comm makes which point fail (empty: none)."""

    def __init__(self, points: Mapping[str, frozenset[str]] | None = None) -> None:
        self._points = dict(points or {})

    @classmethod
    def parse(cls, spec: str) -> Failpoints:
        """``point=comm[,point=comm...]``; raises UsageError naming the entry."""
        points: dict[str, set[str]] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            match = _ENTRY.fullmatch(entry)
            if match is None or match.group(1) not in POINTS:
                raise UsageError(
                    f"{ENV}: {entry!r}: expected POINT=COMM with POINT one of "
                    f"{', '.join(sorted(POINTS))} and COMM at most 15 characters"
                )
            points.setdefault(match.group(1), set()).add(match.group(2))
        return cls({point: frozenset(comms) for point, comms in points.items()})

    def __bool__(self) -> bool:
        return bool(self._points)

    def check(self, point: str, comm: str | None) -> None:
        """Raise :class:`InjectedFault` if ``point`` is armed for ``comm``."""
        comms = self._points.get(point)
        if comms is not None and comm in comms:
            raise InjectedFault(f"failpoint {point} for comm {comm!r}")


def from_environment(environ: Mapping[str, str] = os.environ) -> Failpoints:
    """The failpoints armed by :data:`ENV` (none when it is unset)."""
    return Failpoints.parse(environ.get(ENV, ""))
