"""``tracehound snapshot``, ``stats`` and ``tail``: ask the running daemon.

Each talks to the local API (:mod:`agent.api.client`) on ``--socket``, else
the configuration's ``api.socket`` (``--config FILE``, or the default file
if there is one, or the built-in default). Every failure is one line and a
non-zero exit: no daemon (the socket is missing or nobody listens), no
permission (the socket's group), the daemon's refusal (``403: <reason>``),
a garbled answer (not HTTP, not JSON, not a profile). A closed stdout
(``tail | head``) ends quietly, and so does Ctrl-C during ``tail`` (130).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from agent.api.client import (
    ApiError,
    ConnectError,
    ResponseError,
    SseMessage,
    fetch,
    stream,
)
from agent.commands import query
from agent.commands.arguments import bounded_int, container_prefix, shown
from agent.commands.query import add_filter_options, filter_from_args, use_colour
from agent.commands.stats_text import render_stats_text
from agent.config import load_config
from agent.errors import RunError, UsageError
from agent.evidence.types import TYPE_PREFIX
from agent.limits import MAX_CGROUP_ID, MAX_PID, MAX_SEQ
from agent.query.compact import compact_line
from agent.query.filter import EventFilter
from agent.query.match import ProcessTracker, matches
from agent.safetext import terminal_safe_json
from agent.sinks.profile import decode_profile, render_text

TIMEOUT_S = 30.0
_EVENT_ID = re.compile(r"[0-9a-f]{32}")
Handler = Callable[[argparse.Namespace], int]
_pid = bounded_int(1, MAX_PID, what="a pid")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snapshot = subparsers.add_parser(
        "snapshot", help="the running daemon's profile (what ran, touched, talked to)"
    )
    snapshot.add_argument("--pid", type=_pid, help=f"only this process (1 to {MAX_PID})")
    snapshot.add_argument("--tree", type=_pid, metavar="PID",
                          help=f"only this process (1 to {MAX_PID}) and all its descendants, by"
                               " the profile's parent links; with other filters, those of them"
                               " that match")  # fmt: skip
    snapshot.add_argument("--comm", help="only processes with this command name")
    snapshot.add_argument("--cgroup", type=bounded_int(1, MAX_CGROUP_ID, what="a cgroup id"),
                          metavar="ID",
                          help=f"only processes in this cgroup id, 1 to {MAX_CGROUP_ID} (a u64)")  # fmt: skip
    snapshot.add_argument("--container", type=container_prefix, metavar="ID",
                          help="only processes in this container: its id or a prefix of"
                               " at least 12 hex digits")  # fmt: skip
    snapshot.add_argument("--text", action="store_true", help="a readable tree instead of JSON")
    snapshot.set_defaults(handler=_quiet_pipe(_snapshot))
    stats = subparsers.add_parser("stats", help="the daemon's books, queues and API counters")
    stats.add_argument("--format", choices=("json", "text"), default="json",
                       help="json: everything the daemon counts (default); text: the books per"
                            " kind, with what is in flight")  # fmt: skip
    stats.set_defaults(handler=_quiet_pipe(_stats))
    tail = subparsers.add_parser("tail", help="evidence records as they come (NDJSON)")
    add_filter_options(tail)
    tail.add_argument("--format", choices=("json", "compact"), default="json",
                      help="json: the CloudEvents as logged, one a line (default);"
                           " compact: one readable line each")  # fmt: skip
    tail.add_argument("--last-event-id", metavar="ID",
                      help="first every logged record after ID (resume)")  # fmt: skip
    tail.add_argument("--count", type=bounded_int(1, MAX_SEQ), metavar="N",
                      help=f"exit 0 after N records, 1 to {MAX_SEQ}")  # fmt: skip
    tail.set_defaults(handler=_quiet_pipe(_tail))
    for parser in (snapshot, stats, tail):
        parser.add_argument("--socket", metavar="PATH", help="the API socket (default: api.socket)")
        parser.add_argument("--config", metavar="FILE", help="read api.socket from this file")
    query.add_parsers(subparsers, _quiet_pipe)


def _quiet_pipe(handler: Handler) -> Handler:
    """A reader that went away (``| head``) is no error worth a traceback.

    Exit 1, as the CLI does for a broken pipe, but with stdout pointed at
    /dev/null first (the recipe in Python's signal docs): should anything be
    left in stdout's buffer, the interpreter's final flush would fail too
    and print "Exception ignored" on its way out.
    """

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 1

    return run


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    return load_config(Path(args.config) if args.config else None).api.socket  # ConfigError: 2


def socket_path(args: argparse.Namespace) -> str:
    """``--socket``, else ``api.socket`` of ``--config`` (or the default file)."""
    return _socket(args)


@contextlib.contextmanager
def _one_line(command: str, where: str) -> Iterator[None]:
    """Turn whatever talking to ``where`` can raise into one RunError line."""
    try:
        yield
    except ConnectError as err:
        cause = err.cause
        if isinstance(cause, PermissionError):
            hint = "the API is for root and the socket's group (api.group): join it, or use sudo"
        elif isinstance(cause, FileNotFoundError | ConnectionRefusedError):
            hint = "is tracehound run running?"
        else:
            hint = "is --socket tracehound's API socket?"
        raise RunError(f"{err} ({hint})") from None
    except BrokenPipeError:
        raise  # stdout's reader went away: see _quiet_pipe
    except ApiError as err:
        raise RunError(f"{command}: {err}") from None
    except ResponseError as err:
        raise RunError(f"{command}: garbled answer from {where}: {err}") from None
    except TimeoutError:
        raise RunError(f"{command}: no complete answer from {where} in {TIMEOUT_S:g} s") from None
    except OSError as err:
        raise RunError(f"{command}: connection to {where} failed: {err.strerror or err}") from None


one_line = _one_line


def _json(command: str, body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as err:
        raise RunError(f"{command}: the daemon's answer is not JSON: {err}") from None


def _get(command: str, args: argparse.Namespace, path: str, query: dict[str, str | int]) -> bytes:
    where = _socket(args)
    with _one_line(command, where):
        response = fetch(where, path, query, TIMEOUT_S)
        if response.status != 200:
            raise ApiError.from_response(response)
    return response.body


def _snapshot(args: argparse.Namespace) -> int:
    given = (
        ("pid", args.pid),
        ("comm", args.comm),
        ("cgroup", args.cgroup),
        ("container", args.container),
        ("tree", args.tree),
    )
    body = _get("snapshot", args, "/v1/snapshot", {k: v for k, v in given if v is not None})
    if args.text:
        try:
            sys.stdout.write(render_text(decode_profile(body)))
        except msgspec.DecodeError as err:  # ValidationError included
            raise RunError(f"snapshot: the daemon's answer is not a profile: {err}") from None
    else:
        _json("snapshot", body)  # refuse garbage rather than pass it on
        body = terminal_safe_json(body)
        sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
    sys.stdout.flush()
    return 0


def _stats(args: argparse.Namespace) -> int:
    stats = _json("stats", _get("stats", args, "/v1/stats", {}))
    if not isinstance(stats, dict):
        raise RunError(f"stats: the daemon's answer is not a JSON object: {type(stats).__name__}")
    if args.format == "text":
        sys.stdout.write(render_stats_text(stats))
        sys.stdout.flush()
        return 0
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(stats, order="sorted")) + b"\n")
    sys.stdout.flush()
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Live records that pass the filters (parsed first: a bad one is one
    line at once, not a silent wait); matched by the predicate the log
    scan uses, with a process tracker fed every record for --tree/--exe."""
    flt = filter_from_args(args)
    procs = ProcessTracker.for_filter(flt)
    colour = use_colour()
    last_id: str | None = args.last_event_id
    if last_id is not None and _EVENT_ID.fullmatch(last_id) is None:
        raise UsageError(
            f"--last-event-id: expected 32 lower-case hex digits, got {shown(last_id)}"
        )
    where = _socket(args)
    printed = 0
    messages = stream(where, "/v1/stream", [("Last-Event-ID", last_id)] if last_id else [])
    try:
        with _one_line("tail", where), contextlib.closing(messages):
            for message in messages:
                last_id = message.id or last_id
                if _show(message, args, last_id, flt, procs, colour):
                    printed += 1
                    if printed == args.count:
                        return 0
    except KeyboardInterrupt:
        return 130  # how a tail is meant to end: quietly
    resume = f"; resume with --last-event-id {last_id}" if last_id else ""
    raise RunError(f"tail: the daemon closed the stream{resume}")


def _show(
    message: SseMessage,
    args: argparse.Namespace,
    last_id: str | None,
    flt: EventFilter,
    procs: ProcessTracker | None,
    colour: bool,
) -> bool:
    """Print one record if it passes the filters (True), or a notice to stderr."""
    if message.event in ("overflow", "gap"):
        _notice(message, last_id)
        return False
    if message.event != "message" and not message.event.startswith(TYPE_PREFIX):
        return False  # a notice this version does not know: not a record
    record = _loads(message.data)
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        _garbled(f"an event that is not a CloudEvent: {message.data[:80]!r}")
    if procs is not None:
        procs.observe(record)
    if not matches(flt, record, procs):
        return False
    if args.format == "compact":
        sys.stdout.write(compact_line(record, colour=colour) + "\n")
        sys.stdout.flush()
        return True
    line = message.data if "\n" not in message.data else msgspec.json.encode(record).decode()
    # The same JSON value, with nothing in it a terminal would act on.
    sys.stdout.buffer.write(terminal_safe_json(line.encode()) + b"\n")
    sys.stdout.flush()
    return True


def _notice(message: SseMessage, last_id: str | None) -> None:
    data = _loads(message.data)
    if not isinstance(data, dict):
        _garbled(f"a malformed {message.event} notice: {message.data[:80]!r}")
    if message.event == "gap":
        text = f"{data.get('last_event_id')}: {data.get('detail')}"
    else:
        dropped = data.get("dropped")
        resume = last_id or "<the last id printed>"
        text = (
            f"{dropped} events dropped by the daemon for this slow client;"
            f" reconnect with --last-event-id {resume} to fetch them"
        )
    print(f"tracehound: tail: {text}", file=sys.stderr, flush=True)


def _loads(text: str) -> Any:
    """The JSON value of ``text``, or None if it is not JSON."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None


def _garbled(what: str) -> NoReturn:
    raise ResponseError(f"the daemon sent {what}")
