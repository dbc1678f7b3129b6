"""An :class:`~agent.query.filter.EventFilter` as SQL conditions on ``records``.

Pure: text and parameters in, no connection. The conditions narrow what
PostgreSQL sends; they are never the answer. Every row they let through is
decoded and checked by :func:`agent.query.match.matches`, the predicate of
every single-host query, so ``fleet events`` means what ``events`` means.
Each condition may therefore let through more than the filter takes, never
less (see :mod:`agent.fleet.columns` for the columns' form):

- ``types``: ``type = ANY(...)``, exact.
- ``since``/``until``: on ``time`` (microseconds in PostgreSQL), widened by
  a millisecond each way so no rounding of the collector's can lose a row;
  the time partitions are pruned on it.
- ``pid``, ``uid``: equality; ``comm``: equality with the log's form of the
  value; ``container``: ``LIKE 'prefix%'``.
- ``path``: the glob's literal start (up to its first ``*``, ``?`` or
  ``[``) at the start of one of ``path``'s lines; nothing when it starts with
  a wildcard, or holds a backslash or bytes that are not UTF-8 (the escape
  form would differ).
- ``remote``: ``remote IS NOT NULL`` (the matcher checks the address).
- ``tree`` and ``exe`` follow processes through the log and are not
  offered by ``fleet events``; :func:`conditions` refuses them.

Only tracehound events are answered (``type LIKE 'dev.tracehound.%'``), as
the single-host query answers no store record (``segment.start``, ...).
Values are always parameters; the SQL text is built from constants only.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from agent.evidence.types import TYPE_PREFIX
from agent.query.filter import EventFilter
from agent.safetext import escape_json, has_raw_bytes

__all__ = ["SLACK_NS", "Conditions", "conditions", "glob_prefix", "like_escape", "ns_to_datetime"]

SLACK_NS: Final = 1_000_000
"""How far a time bound is widened, each way (1 ms)."""

_WILDCARDS: Final = "*?["

Conditions = tuple[str, list[object]]
"""SQL (conditions ANDed, ``%s`` placeholders) and its parameters in order."""


def like_escape(text: str) -> str:
    """``text`` as a literal in a ``LIKE`` pattern (``\\`` is the escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_prefix(glob: str) -> str:
    """The literal start of an fnmatch glob: what every match begins with."""
    cut = min((i for i in (glob.find(w) for w in _WILDCARDS) if i >= 0), default=len(glob))
    return glob[:cut]


def ns_to_datetime(ns: int) -> dt.datetime:
    """ns since the epoch as an aware UTC datetime (microseconds, floored)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + dt.timedelta(microseconds=ns // 1000)


def conditions(flt: EventFilter, hosts: tuple[str, ...] = ()) -> Conditions:
    """The conditions on ``records`` for ``flt`` (and the hosts, if any).

    Raises:
        ValueError: ``flt`` asks for ``tree`` or ``exe``, which need the
            host's whole log in order (a programming error of the caller).
    """
    if flt.tree or flt.exe is not None:
        raise ValueError("tree and exe filters are not pushed down")
    where = ["type LIKE %s"]
    params: list[object] = [like_escape(TYPE_PREFIX) + "%"]
    if hosts:
        where.append("host = ANY(%s)")
        params.append(list(hosts))
    if flt.types:
        where.append("type = ANY(%s)")
        params.append(sorted(flt.types))
    if flt.since_ns is not None:
        where.append("time >= %s")
        params.append(ns_to_datetime(flt.since_ns - SLACK_NS))
    if flt.until_ns is not None:
        where.append("time <= %s")
        params.append(ns_to_datetime(flt.until_ns + SLACK_NS))
    if flt.pid is not None:
        where.append("pid = %s")
        params.append(flt.pid)
    if flt.uid is not None:
        where.append("uid = %s")
        params.append(flt.uid)
    if flt.comm is not None:
        where.append("comm = %s")
        params.append(escape_json(flt.comm)[0])
    if flt.container is not None:
        where.append("container LIKE %s")
        params.append(like_escape(flt.container) + "%")
    if flt.path is not None:
        start = glob_prefix(flt.path)
        if start and "\\" not in start and not has_raw_bytes(start) and "\x00" not in start:
            where.append("(path LIKE %s OR path LIKE %s)")
            pattern = like_escape(start) + "%"
            params += [pattern, "%\n" + pattern]
    if flt.remote is not None:
        where.append("remote IS NOT NULL")
    return " AND ".join(where), params
