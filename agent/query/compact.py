"""``--format compact``: one line per record, for a person to scan.

Columns, separated by two spaces (``comm`` padded to 15)::

    TIME (UTC, ms)            CONTAINER     PID    COMM             WHAT HAPPENED              RESULT
    2026-12-01T19:47:14.123Z  -             4711   bash             exec /usr/bin/ls -la       ok
    2026-12-01T19:47:14.130Z  0123456789ab  4712   python3          open /etc/shadow r         EACCES
    2026-12-01T19:47:14.200Z  -             4713   mv               rename /tmp/a -> /tmp/b    ok
    2026-12-01T19:47:14.300Z  -             4714   curl             connect 10.0.0.1:443 tcp   ECONNREFUSED
    2026-12-01T19:47:15.000Z  -             4714   curl             exit signal SIGSEGV        -

Times are UTC (as the log and ``--since`` RFC 3339 times are): the same
line on every host and in every time zone. ``RESULT`` is ``ok`` for a
return of 0 or more, the errno's name for a failure, ``-`` for a record
with no result (fork, exit, capture records).

Everything the host chose (comm, paths, argv, socket paths, mount names)
is unescaped from the log's escape form and escaped for text
(:mod:`agent.safetext`: ``ls -b`` style, argv shell-quoted word by word),
so no byte of it can end the line, start a fake one, or reach the terminal
as an escape sequence; a field is never a raw space, so the columns cannot
be shifted either. Colour (``colour=True``) is ANSI SGR around our own
text only; the CLI asks for it only when stdout is a terminal and
``NO_COLOR`` is unset or empty.
"""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Mapping
from typing import Any, Final

from agent.capture.kinds import O_ACCMODE, O_APPEND, O_CREAT, O_EXCL, O_TRUNC
from agent.evidence.types import TYPE_PREFIX
from agent.query.match import endpoint_text, event_time_ns, field_text, int_field, path_text
from agent.safetext import escape_text, escaped_names, shell_join, unescape

__all__ = ["compact_line", "errno_name", "signal_name"]

_DIM: Final = "\x1b[2m"
_BOLD: Final = "\x1b[1m"
_RED: Final = "\x1b[31m"
_GREEN: Final = "\x1b[32m"
_RESET: Final = "\x1b[0m"
_ACCESS: Final = {0: "r", 1: "w", 2: "rw"}


def errno_name(ret: int) -> str:
    """``-2`` -> ``ENOENT``; an errno this platform does not name: ``E<n>``."""
    return errno.errorcode.get(-ret, f"E{-ret}")


def signal_name(number: int) -> str:
    """``11`` -> ``SIGSEGV``; an unnamed number: ``SIG<n>``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _text(obj: Mapping[str, Any], name: str) -> str:
    value = field_text(obj, name)
    return escape_text(value) if value else "-"


def _path(data: Mapping[str, Any], absolute: str, given: str) -> str:
    value = path_text(data, absolute, given)
    return escape_text(value) if value else "?"


def _endpoint(data: Mapping[str, Any]) -> str:
    value = endpoint_text(data)
    return escape_text(value) if value is not None else "?"


def _open_mode(flags: int) -> str:
    words = [_ACCESS.get(flags & O_ACCMODE, "?")]
    for bit, name in (
        (O_CREAT, "creat"),
        (O_TRUNC, "trunc"),
        (O_APPEND, "append"),
        (O_EXCL, "excl"),
    ):
        if flags & bit:
            words.append(name)
    return ",".join(words)


def _argv(data: Mapping[str, Any]) -> str:
    argv = data.get("argv")
    if not isinstance(argv, list):
        return _path(data, "exe", "filename")
    words = [str(word) for word in argv]
    if "argv" in escaped_names(data):
        words = [unescape(word) for word in words]
    cut = [i for i in data.get("args_cut") or [] if isinstance(i, int)]
    line = shell_join(words, cut=cut, more=bool(data.get("argv_more")))
    return line or _path(data, "exe", "filename")


def _file(op: str, data: Mapping[str, Any]) -> str:
    path = _path(data, "abs_path", "path")
    if data.get("path2") is not None or data.get("abs_path2") is not None:
        return f"{op} {path} -> {_path(data, 'abs_path2', 'path2')}"
    if op == "open":
        return f"open {path} {_open_mode(int_field(data, 'flags') or 0)}"
    if op in ("chmod", "mkdir"):
        return f"{op} {path} {(int_field(data, 'mode') or 0):04o}"
    if op == "chown":
        owner, group = int_field(data, "owner"), int_field(data, "group")
        return f"chown {path} {'-' if owner is None else owner}:{'-' if group is None else group}"
    return f"{op} {path}"


def _net(op: str, data: Mapping[str, Any]) -> str:
    what = f"{op} {_endpoint(data)}" if data.get("endpoint") is not None else op
    proto = data.get("proto")
    if isinstance(proto, str):
        what += f" {escape_text(proto)}"
    outcome = data.get("outcome")
    if isinstance(outcome, str):
        what += f" {escape_text(outcome)}"
    return what


def _call(op: str, data: Mapping[str, Any]) -> str:
    words = [escape_text(op)]
    args = data.get("args")
    if isinstance(args, Mapping):
        words += [f"{escape_text(str(k))}={escape_text(str(v))}" for k, v in sorted(args.items())]
    for name in ("source", "target", "fstype", "name"):
        if data.get(name) is not None:
            words.append(f"{name}={_text(data, name)}")
    return " ".join(words)


def _what(kind: str, data: Mapping[str, Any]) -> tuple[str, int | None]:
    """What happened, and the call's return (None: no result)."""
    short = kind[len(TYPE_PREFIX) :].rsplit(".v", 1)[0] if kind.startswith(TYPE_PREFIX) else kind
    family, _, op = short.partition(".")
    ret = int_field(data, "ret")
    if short == "process.exec":
        return f"exec {_argv(data)}", ret
    if short == "process.fork":
        return f"fork child {int_field(data, 'child_pid')}", None
    if short == "process.exit":
        sig, code = int_field(data, "signal"), int_field(data, "exit_code")
        if sig:
            return f"exit signal {signal_name(sig)}", None
        return f"exit code {'?' if code is None else code}", None
    if short == "process.seen":
        return f"seen {_text(data, 'exe')}", None
    if family == "file":
        return _file(str(data.get("op") or op), data), ret
    if family == "network":
        return _net(op, data), ret
    if family == "uring":
        uop = str(data.get("op") or "?")
        target = (
            _endpoint(data) if data.get("endpoint") is not None else _path(data, "abs_path", "path")
        )
        return f"uring {escape_text(uop)} {target}", int_field(data, "res")
    if "syscall" in data and "args" in data:
        return _call(str(data.get("syscall") or op), data), ret
    if short == "capture.loss":
        return f"capture.loss total={int_field(data, 'total')}", None
    return escape_text(short), None


def _stamp(ns: int | None) -> str:
    if ns is None:
        return "-"
    seconds, rest = divmod(ns, 10**9)
    day = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{day}.{rest // 10**6:03d}Z"


def _pad(text: str, width: int) -> str:
    return text.ljust(width)


def compact_line(event: Mapping[str, Any], *, colour: bool = False) -> str:
    """One record (a CloudEvent as logged, decoded) as one line, no newline."""
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    stamp = _stamp(event_time_ns(event))
    container = data.get("container")
    cid = container.get("id") if isinstance(container, Mapping) else None
    short_cid = escape_text(cid[:12]) if isinstance(cid, str) and cid else "-"
    pid = int_field(data, "pid")
    comm = _text(data, "comm")
    what, ret = _what(str(event.get("type") or "?"), data)
    result = "-" if ret is None else ("ok" if ret >= 0 else errno_name(ret))
    if colour:
        stamp = f"{_DIM}{stamp}{_RESET}"
        verb, _, rest = what.partition(" ")
        what = f"{_BOLD}{verb}{_RESET}" + (f" {rest}" if rest else "")
        if ret is not None:
            result = f"{_GREEN if ret >= 0 else _RED}{result}{_RESET}"
    pid_text = "-" if pid is None else str(pid)
    return (
        f"{stamp}  {_pad(short_cid, 12)}  {_pad(pid_text, 7)}  {_pad(comm, 15)}  {what}  {result}"
    )
