"""``tracehound events`` and ``tracehound report``; the filter options they share with ``tail``.

Every filter option (``--since``, ``--until``, ``--type``, ``--pid``,
``--tree``, ``--comm``, ``--exe``, ``--path``, ``--container``,
``--remote``, ``--uid``) is taken as text and handed to
:func:`agent.query.parse.parse_filter`, the parser ``/v1/events`` uses
too, before anything else happens: a bad value is one line naming the
option and exit 2, with no daemon asked.

``events`` asks the running daemon's ``/v1/events`` (``--socket``/
``--config`` as ``snapshot``) and follows each page's ``next`` until the
answer is complete or ``--limit`` records were printed; with
``--state-dir DIR`` it searches that log directly instead (no daemon: a
copied log, or a stopped host). Durations are turned into absolute times
once, here, so every page asks about the same window.

``report`` reads the log directly (``--state-dir``, default the daemon's
state directory): it is an offline summary and should work on a copied
log without a daemon; it searches with the same filters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from agent.api.client import ApiError, fetch
from agent.commands.arguments import bounded_int
from agent.config.schema import DEFAULT_EVIDENCE_DIR, EVIDENCE_DIR_ENV, default_evidence_dir
from agent.errors import RunError, UsageError, shown
from agent.evidence.mapper import decode as decode_cloudevent
from agent.evidence.ocsf import OcsfError, to_ocsf
from agent.limits import MAX_SEQ
from agent.query.compact import compact_line
from agent.query.filter import EventFilter
from agent.query.parse import FILTER_NAMES, FilterError, parse_filter
from agent.query.report import ReportBuilder, render_json, render_text
from agent.query.scan import search
from agent.safetext import has_raw_bytes, terminal_safe_json

__all__ = [
    "add_filter_options",
    "add_parsers",
    "filter_from_args",
    "filter_query",
    "use_colour",
]

#: Records asked for per page.
PAGE = 1000
TIMEOUT_S = 30.0
Handler = Callable[[argparse.Namespace], int]


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """The filter options, as text: :func:`filter_from_args` parses them."""
    group = parser.add_argument_group("filters (all given must match)")
    add = group.add_argument
    add("--since", metavar="WHEN",
        help="records at or after WHEN: a duration back from now (30s, 5m, 2h, 1d) or an"
             " RFC 3339 time (2025-11-24T16:00:00Z)")  # fmt: skip
    add("--until", metavar="WHEN", help="records before WHEN (as --since)")
    add("--type", action="append", metavar="TYPE",
        help="only these record types: full, or short (process.exec, file, network.connect);"
             " repeat or comma-separate for several")  # fmt: skip
    add("--pid", metavar="PID", help="only records about this process (data.pid)")
    add("--tree", action="store_const", const="true",
        help="with --pid: that process and every process it forked, transitively")  # fmt: skip
    add("--comm", metavar="NAME", help="only records of processes with this command name")
    add("--exe", metavar="PATH", help="only records of processes running this executable")
    add("--path", metavar="GLOB",
        help="only records about a path matching GLOB (* matches across /)")  # fmt: skip
    add("--container", metavar="ID", help="only this container: its id or a 12+ hex-digit prefix")
    add("--remote", metavar="ADDR",
        help="only network records with this remote: an address, CIDR, port, ADDR:PORT or"
             " [V6]:PORT")  # fmt: skip
    add("--uid", metavar="UID", help="only records of processes with this uid")


def _values(args: argparse.Namespace) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name in FILTER_NAMES:
        given = getattr(args, name, None)
        if given is None:
            continue
        values[name] = list(given) if isinstance(given, list) else [str(given)]
    return values


def filter_from_args(args: argparse.Namespace, now_ns: int | None = None) -> EventFilter:
    """The filter the options ask for; UsageError (exit 2) naming a bad one."""
    try:
        return parse_filter(_values(args), now_ns=time.time_ns() if now_ns is None else now_ns)
    except FilterError as err:
        raise UsageError(f"--{err.name}: {err.detail}") from None


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def filter_query(args: argparse.Namespace, flt: EventFilter) -> dict[str, str | int]:
    """The ``/v1/events`` parameters for the options given, with durations
    turned into the absolute times ``flt`` holds (the same window on every
    page). UsageError for a value the URL cannot carry (bytes that are not
    UTF-8: search the log with --state-dir instead)."""
    query: dict[str, str | int] = {}
    for name, given in _values(args).items():
        text = ",".join(given)
        if has_raw_bytes(text):
            raise UsageError(
                f"--{name}: holds bytes that are not UTF-8, which the API cannot be asked"
                " about; search the log itself with --state-dir"
            )
        query[name] = text
    if flt.since_ns is not None:
        query["since"] = _rfc3339(flt.since_ns)
    if flt.until_ns is not None:
        query["until"] = _rfc3339(flt.until_ns)
    return query


def use_colour() -> bool:
    """Colour only on a terminal, and only if ``NO_COLOR`` is unset or empty."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _state_dir(args: argparse.Namespace, *, required: bool) -> Path | None:
    if args.state_dir is None:
        return Path(default_evidence_dir()) if required else None
    if not args.state_dir:
        raise UsageError("--state-dir: expected a directory path, got an empty value")
    return Path(args.state_dir)


def _check_log(state: Path) -> None:
    if not (state / "segments").is_dir():
        raise UsageError(
            f"--state-dir {shown(state)}: no evidence log there (no segments/ directory)"
        )


def add_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    wrap: Callable[[Handler], Handler],
) -> None:
    """``events`` and ``report``; ``wrap`` makes a closed stdout quiet."""
    state_help = (
        f"the evidence log's directory (default {DEFAULT_EVIDENCE_DIR}, or ${EVIDENCE_DIR_ENV})"
    )
    events = subparsers.add_parser("events", help="the logged records that match the filters")
    add_filter_options(events)
    events.add_argument("--format", choices=("json", "compact", "ocsf"), default="json",
                        help="json: the CloudEvents as logged, one a line (default); compact:"
                             " one readable line each; ocsf: OCSF 1.3.0 events")  # fmt: skip
    events.add_argument("--limit", type=bounded_int(1, MAX_SEQ), metavar="N",
                        help=f"at most N records, 1 to {MAX_SEQ} (default: all that match)")  # fmt: skip
    events.add_argument("--state-dir", metavar="DIR",
                        help="search this log directly instead of asking the daemon")  # fmt: skip
    events.add_argument("--socket", metavar="PATH", help="the API socket (default: api.socket)")
    events.add_argument("--config", metavar="FILE", help="read api.socket from this file")
    events.set_defaults(handler=wrap(_events))
    report = subparsers.add_parser(
        "report", help="a summary of the log: programs, files written, peers, failures, losses"
    )
    add_filter_options(report)
    report.add_argument("--format", choices=("text", "json"), default="text",
                        help="text (default) or one JSON document")  # fmt: skip
    report.add_argument("--state-dir", metavar="DIR", help=state_help)
    report.set_defaults(handler=wrap(_report))


# --- events ------------------------------------------------------------------------


class _Page(msgspec.Struct):
    events: list[msgspec.Raw]
    next: str | None


def _local_pages(state: Path, flt: EventFilter, limit: int | None) -> Iterator[bytes]:
    _check_log(state)
    after, left = -1, limit
    while left is None or left > 0:
        page = search(state, flt, after_seq=after, limit=PAGE if left is None else min(PAGE, left))
        for logged in page.events:
            yield logged.raw
        if left is not None:
            left -= len(page.events)
        if page.next_cursor is None or not page.events:
            return
        after = page.events[-1].seq


def _api_pages(args: argparse.Namespace, flt: EventFilter, limit: int | None) -> Iterator[bytes]:
    from agent.commands.client import one_line, socket_path

    query = filter_query(args, flt)
    where = socket_path(args)
    left = limit
    while left is None or left > 0:
        asked = dict(query, limit=PAGE if left is None else min(PAGE, left))
        with one_line("events", where):
            response = fetch(where, "/v1/events", asked, TIMEOUT_S)
            if response.status != 200:
                raise ApiError.from_response(response)
        try:
            page = msgspec.json.decode(response.body, type=_Page)
        except msgspec.DecodeError as err:
            raise RunError(f"events: the daemon's answer is not a page of events: {err}") from None
        for raw in page.events:
            yield bytes(raw)
        if left is not None:
            left -= len(page.events)
        if page.next is None or not page.events:
            return
        query["cursor"] = page.next


def _ocsf(raw: bytes) -> bytes | None:
    try:
        projected = to_ocsf(decode_cloudevent(raw))
    except (OcsfError, ValueError, msgspec.ValidationError) as err:
        raise RunError(f"events: a record has no OCSF form: {shown(str(err))}") from None
    return None if projected is None else terminal_safe_json(msgspec.json.encode(projected))


def _events(args: argparse.Namespace) -> int:
    flt = filter_from_args(args)
    state = _state_dir(args, required=False)
    raws = _local_pages(state, flt, args.limit) if state else _api_pages(args, flt, args.limit)
    colour = use_colour()
    out = sys.stdout.buffer
    for raw in raws:
        if args.format == "json":
            out.write(terminal_safe_json(raw) + b"\n")
        elif args.format == "compact":
            event: Any = msgspec.json.decode(raw)
            out.write(compact_line(event, colour=colour).encode("utf-8", "surrogateescape") + b"\n")
        else:
            projected = _ocsf(raw)
            if projected is not None:
                out.write(projected + b"\n")
    out.flush()
    return 0


# --- report ------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    flt = filter_from_args(args)
    state = _state_dir(args, required=True)
    assert state is not None
    _check_log(state)
    builder = ReportBuilder()
    after = -1
    while True:
        page = search(state, flt, after_seq=after, limit=PAGE)
        for logged in page.events:
            builder.add(logged.event)
        if page.next_cursor is None or not page.events:
            break
        after = page.events[-1].seq
    report = builder.report()
    if args.format == "json":
        sys.stdout.buffer.write(render_json(report))
    else:
        sys.stdout.write(render_text(report))
    sys.stdout.flush()
    return 0
