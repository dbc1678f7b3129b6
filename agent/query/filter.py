"""The filter of a query over the evidence log: one definition for all of them.

``tracehound events``, ``/v1/events``, ``tracehound tail``, ``tracehound
report`` and the SQLite index all answer the same question, "which records
match", so they share this one Struct. Parsing (from CLI options or URL
query parameters) builds it and fails there, with one line naming the
option; everything after parsing can trust its values:

- every field is already validated and normalised (types expanded to full
  names, times to nanoseconds, the remote network to a canonical CIDR);
- an unset field (``None``, or an empty ``types``) does not filter;
- set fields are ANDed.

Records are answered in log order (ascending ``seq``). A page's cursor is
the opaque token :func:`cursor_after` gives for the last record of the
page; the next page holds the records after it.
"""

from __future__ import annotations

import msgspec

__all__ = ["EventFilter", "RemoteFilter", "cursor_after", "seq_of_cursor"]

#: Cursor tokens: this prefix and the decimal seq of the last record a page
#: held. Opaque to clients; a token that does not parse is a 400 / one line.
_CURSOR_PREFIX = "s"


class RemoteFilter(msgspec.Struct, frozen=True, kw_only=True):
    """``--remote``: an address, a CIDR network, or a port (or address and
    port). ``network`` is canonical CIDR text (``10.0.0.0/8``,
    ``::1/128``; a bare address is its /32 or /128); ``port`` is 0-65535.
    A record matches when its remote endpoint is inside ``network`` (when
    set) and has ``port`` (when set)."""

    network: str | None = None
    port: int | None = None


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a record must be to be answered.

    - ``since_ns`` / ``until_ns``: the record's CloudEvents ``time`` (wall
      clock, ns since the epoch) is ``>= since_ns`` and ``< until_ns``.
    - ``types``: full record types (``dev.tracehound.file.open.v1``); the
      record's type is one of them. Short forms (``file``, ``process.exec``)
      are expanded by the parser against the known types.
    - ``pid``: the record's ``data.pid``; with ``tree``, that process and
      every process it forked, transitively (per the log's fork records).
    - ``comm``: ``data.comm`` equals it.
    - ``exe``: the process's executable (``data.exe`` of its exec, or of its
      ``process.seen`` record) equals it.
    - ``path``: a glob (``fnmatch.fnmatchcase``: ``*`` matches across ``/``)
      matched against the record's absolute path(s), else the path(s) as
      passed when no absolute path was resolved; a rename matches on either.
    - ``container``: the record's container id, or a prefix of it of at
      least 12 hex digits.
    - ``remote``: see :class:`RemoteFilter`.
    - ``uid``: ``data.uid`` equals it.
    """

    since_ns: int | None = None
    until_ns: int | None = None
    types: frozenset[str] = frozenset()
    pid: int | None = None
    tree: bool = False
    comm: str | None = None
    exe: str | None = None
    path: str | None = None
    container: str | None = None
    remote: RemoteFilter | None = None
    uid: int | None = None


def cursor_after(seq: int) -> str:
    """The cursor that resumes after the record at ``seq``."""
    return f"{_CURSOR_PREFIX}{seq}"


def seq_of_cursor(token: str) -> int | None:
    """The seq a cursor resumes after, or None if ``token`` is not one."""
    digits = token[len(_CURSOR_PREFIX) :]
    if (
        not token.startswith(_CURSOR_PREFIX)
        or not (digits.isascii() and digits.isdigit())
        or len(digits) > 20
    ):
        return None
    return int(digits)
