"""The query columns of a ``records`` row: what ``fleet events`` pushes down to SQL.

One definition for the writer (the collector fills ``records``' pid, comm,
exe, path, uid, container and remote columns with :func:`columns_of`) and
the reader (:mod:`agent.fleet.pushdown` turns a filter into conditions on
them). The pushed-down conditions only narrow the rows read: every row that
passes them is checked again, exactly, by :func:`agent.query.match.matches`
on the decoded line. So a column must never *exclude* a record the matcher
would take; it may let through more. That is what fixes their form:

- Text is in the log's form (:mod:`agent.safetext`: escape form when the
  host's bytes were not UTF-8), never unescaped: PostgreSQL ``text`` has no
  lone surrogates. A plain filter value compares equal to it; a value with
  raw bytes is escaped first (:func:`agent.safetext.escape_json`).
- A text holding NUL (which ``text`` cannot hold, and no kernel string
  does) is left out (NULL).
- ``path``: every path :func:`agent.query.match.record_paths` would try (the
  path, a rename's new name, an exec's executable), in that order, joined
  by ``"\\n"``: ``--path`` tests each line's start, so a rename is found by
  either name. A path that itself holds a newline only makes more rows pass,
  which the matcher then rejects.
- ``remote``: :func:`agent.query.match.endpoint_text` (``addr:port``,
  ``[v6]:port``, ``unix:/path``); pushed down only as "has one".
- ``time_ns``: the CloudEvents ``time``; a record without one has None (the
  collector stores the time it received it; ``fleet events`` then never
  answers it for a time window, as the matcher would not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from agent.query.index_rows import parse_time_ns
from agent.query.match import endpoint_text, event_time_ns, int_field
from agent.safetext import escape_json

__all__ = ["RecordColumns", "columns_of"]


class RecordColumns(msgspec.Struct, frozen=True, kw_only=True):
    """The filterable scalars of one CloudEvent (see the module docstring)."""

    time_ns: int | None
    pid: int | None
    comm: str | None
    exe: str | None
    path: str | None
    uid: int | None
    container: str | None
    remote: str | None


def _logged(value: object) -> str | None:
    """A logged text as a column holds it: as is, None if absent or with NUL."""
    if not isinstance(value, str) or "\x00" in value:
        return None
    return value


def _slot(data: Mapping[str, Any], resolved: str, given: str) -> str | None:
    for name in (resolved, given):
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def columns_of(event: Mapping[str, Any]) -> RecordColumns:
    """The columns of the CloudEvent ``event`` (a record's decoded body)."""
    data = event.get("data")
    if not isinstance(data, Mapping):
        data = {}
    paths = [
        slot
        for resolved, given in (("abs_path", "path"), ("abs_path2", "path2"), ("exe", "filename"))
        if (slot := _slot(data, resolved, given)) is not None and "\x00" not in slot
    ]
    container = data.get("container")
    endpoint = endpoint_text(data)
    return RecordColumns(
        # The mapper's own form first (cached per hour), any RFC 3339 else.
        time_ns=parse_time_ns(event.get("time")) or event_time_ns(event),
        pid=int_field(data, "pid"),
        comm=_logged(data.get("comm")),
        exe=_logged(data.get("exe")),
        path="\n".join(paths) if paths else None,
        uid=int_field(data, "uid"),
        container=_logged(container.get("id")) if isinstance(container, Mapping) else None,
        remote=None if endpoint is None else _logged(escape_json(endpoint)[0]),
    )
