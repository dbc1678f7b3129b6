"""Does a record match an :class:`~agent.query.filter.EventFilter`? THE predicate.

The log scan (:mod:`agent.query.scan`), the live tail and the report all ask
:func:`matches`, so "which records" means one thing everywhere. Pure.

Two filters need to know about processes, not just the record in hand:
``--pid N --tree`` (N and what it forked, transitively) and ``--exe``
(the process's executable, which a file or socket record does not carry).
A :class:`ProcessTracker` learns both from the records themselves, fed
every record in log order (:meth:`ProcessTracker.observe`) *before* the
record is matched:

- a ``process.fork`` record whose parent (``data.pid``) is in the tree puts
  its ``child_pid`` in it (one whose parent is not takes it out: the pid
  was reused; the root itself always stays); the child inherits the
  parent's executable;
- a successful ``process.exec`` (``ret`` 0) sets the process's executable
  to ``data.exe`` (else ``data.filename`` when the kernel resolved none);
  a ``process.seen`` record (found in /proc) sets it to its ``exe``.

So a tree or exe query answers what the log shows as it happened: a
process counts from its fork on; records before the first fork or exec the
log holds of a process (it started before the capture and was not seen)
have no executable and do not match ``--exe``. A scan therefore feeds the
tracker from the start of the log, whatever its cursor or time window; the
live tail feeds it from where it joins.

Record text that held bytes that are not UTF-8 is logged in escape form
and named in ``escaped`` (:mod:`agent.safetext`); it is unescaped before
it is compared, so a filter given those bytes (a CLI argument decodes with
surrogateescape) matches them, and a filter cannot match the escape text.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any, Final

from agent.evidence.record_types import TYPE_EXEC, TYPE_FORK, TYPE_SEEN
from agent.query.filter import EventFilter, RemoteFilter
from agent.query.parse import rfc3339_ns
from agent.safetext import escaped_names, unescape

__all__ = ["ProcessTracker", "event_time_ns", "field_text", "matches", "record_paths"]

#: How many processes a tracker remembers the executable of; past it the
#: oldest are forgotten (bounded memory on a host that forks forever).
MAX_TRACKED: Final = 1 << 20


def field_text(obj: Mapping[str, Any], name: str) -> str | None:
    """``obj[name]`` as the host's text (unescaped if named in ``escaped``);
    None if absent or not a string."""
    value = obj.get(name)
    if not isinstance(value, str):
        return None
    return unescape(value) if name in escaped_names(obj) else value


def int_field(obj: Mapping[str, Any], name: str) -> int | None:
    """``obj[name]`` if it is an integer (a bool is not), else None."""
    value = obj.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def path_text(data: Mapping[str, Any], absolute: str, given: str) -> str | None:
    """The absolute path's text when resolved, else the path as passed; None if neither."""
    return field_text(data, absolute) or field_text(data, given) or None


def endpoint_text(data: Mapping[str, Any]) -> str | None:
    """``data.endpoint`` as ``addr:port`` (``[addr]:port`` for IPv6), else
    ``family:address`` (a UNIX socket's path; ``?`` if it has none); None
    if the record has no endpoint. The host's text, unescaped: escape it
    before showing it."""
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, Mapping):
        return None
    family = endpoint.get("family")
    address = field_text(endpoint, "address") or ""
    port = int_field(endpoint, "port")
    if family == "ipv4":
        return f"{address}:{port}"
    if family == "ipv6":
        return f"[{address}]:{port}"
    return f"{family}:{address or '?'}"


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def event_time_ns(event: Mapping[str, Any]) -> int | None:
    """The record's CloudEvents ``time`` in ns since the epoch, or None."""
    when = event.get("time")
    return rfc3339_ns(when) if isinstance(when, str) else None


class ProcessTracker:
    """What the log has said about processes so far: the tree under one
    pid (``root``; None: no tree asked for) and each process's executable."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root
        self.tree: set[int] = set() if root is None else {root}
        self.exe: dict[int, str] = {}

    @classmethod
    def for_filter(cls, flt: EventFilter) -> ProcessTracker | None:
        """A tracker if ``flt`` needs one (tree or exe), else None."""
        if flt.tree or flt.exe is not None:
            return cls(flt.pid if flt.tree else None)
        return None

    def observe(self, event: Mapping[str, Any]) -> None:
        """Learn from one record (call it for every record, in log order)."""
        kind = event.get("type")
        if kind not in (TYPE_FORK, TYPE_EXEC, TYPE_SEEN):
            return
        data = _data(event)
        pid = int_field(data, "pid")
        if pid is None:
            return
        if kind == TYPE_FORK:
            child = int_field(data, "child_pid")
            if child is None:
                return
            if pid in self.tree:
                self.tree.add(child)
            elif child != self.root:
                self.tree.discard(child)  # a reused pid is someone else now
            parent_exe = self.exe.get(pid)
            if parent_exe is not None:
                self._set_exe(child, parent_exe)
            else:
                self.exe.pop(child, None)
        elif kind == TYPE_EXEC:
            if int_field(data, "ret") == 0:
                exe = field_text(data, "exe") or field_text(data, "filename")
                if exe:
                    self._set_exe(pid, exe)
        else:
            exe = field_text(data, "exe")
            if exe:
                self._set_exe(pid, exe)

    def _set_exe(self, pid: int, exe: str) -> None:
        self.exe.pop(pid, None)
        self.exe[pid] = exe  # newest last: the oldest go first when full
        if len(self.exe) > MAX_TRACKED:
            del self.exe[next(iter(self.exe))]


def record_paths(data: Mapping[str, Any]) -> Iterator[str]:
    """The path(s) a record is about, for ``--path``: each name's absolute
    path when resolved, else the name as passed (a rename: both names; an
    exec: its executable, else its filename)."""
    for absolute, given in (("abs_path", "path"), ("abs_path2", "path2"), ("exe", "filename")):
        text = field_text(data, absolute) or field_text(data, given)
        if text:
            yield text


def _remote_matches(remote: RemoteFilter, data: Mapping[str, Any]) -> bool:
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, Mapping) or endpoint.get("family") not in ("ipv4", "ipv6"):
        return False
    if remote.port is not None and int_field(endpoint, "port") != remote.port:
        return False
    if remote.network is None:
        return True
    address = endpoint.get("address")
    try:
        return isinstance(address, str) and ipaddress.ip_address(address) in ipaddress.ip_network(
            remote.network
        )
    except ValueError:
        return False


def matches(flt: EventFilter, event: Mapping[str, Any], procs: ProcessTracker | None) -> bool:
    """Does the CloudEvent ``event`` (as logged, decoded) pass every filter set?

    ``procs`` is the tracker that observed the log up to and including this
    record; it is needed (and must not be None) when ``flt.tree`` or
    ``flt.exe`` is set: see :meth:`ProcessTracker.for_filter`.
    """
    if flt.types and event.get("type") not in flt.types:
        return False
    if flt.since_ns is not None or flt.until_ns is not None:
        when = event_time_ns(event)
        if when is None:
            return False
        if flt.since_ns is not None and when < flt.since_ns:
            return False
        if flt.until_ns is not None and when >= flt.until_ns:
            return False
    data = _data(event)
    pid = int_field(data, "pid")
    if flt.pid is not None:
        if flt.tree:
            assert procs is not None, "a tree filter needs a ProcessTracker"
            if pid not in procs.tree:
                return False
        elif pid != flt.pid:
            return False
    if flt.uid is not None and int_field(data, "uid") != flt.uid:
        return False
    if flt.comm is not None and field_text(data, "comm") != flt.comm:
        return False
    if flt.container is not None:
        container = data.get("container")
        cid = container.get("id") if isinstance(container, Mapping) else None
        if not isinstance(cid, str) or not cid.startswith(flt.container):
            return False
    if flt.exe is not None:
        assert procs is not None, "an exe filter needs a ProcessTracker"
        if pid is None or procs.exe.get(pid) != flt.exe:
            return False
    if flt.path is not None and not any(
        fnmatch.fnmatchcase(path, flt.path) for path in record_paths(data)
    ):
        return False
    return flt.remote is None or _remote_matches(flt.remote, data)
