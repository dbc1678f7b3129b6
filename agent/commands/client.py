"""``tracehound snapshot``, ``stats`` and ``tail``: ask the running daemon.

Each talks to the local API (:mod:`agent.api.client`) on the socket named by
``--socket``, else by the configuration's ``api.socket``. Errors are one
line: the socket missing (is the daemon running?), no permission (the api
group), the daemon's own refusal (403 and its reason), a garbled answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.api.client import ApiResponseError, Response, SseMessage, fetch, stream
from agent.config import load_config
from agent.errors import RunError, UsageError
from agent.evidence.log_reader import event_pid, type_matches
from agent.sinks.profile import decode_profile, render_text


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snapshot = subparsers.add_parser(
        "snapshot", help="the running daemon's profile (what ran, touched, talked to)"
    )
    snapshot.add_argument("--pid", type=int, help="only this process")
    snapshot.add_argument("--comm", help="only processes with this command name")
    snapshot.add_argument("--cgroup", type=int, help="only processes in this cgroup id")
    snapshot.add_argument("--text", action="store_true", help="a readable tree instead of JSON")
    snapshot.set_defaults(handler=_snapshot)
    stats = subparsers.add_parser("stats", help="the daemon's books, queues and API counters")
    stats.set_defaults(handler=_stats)
    tail = subparsers.add_parser(
        "tail", help="evidence records as they are written (NDJSON, one per line)"
    )
    tail.add_argument("--type", help="only this type: full, or short like process.exec or file")
    tail.add_argument("--pid", type=int, help="only records about this pid")
    tail.add_argument("--last-event-id", metavar="ID",
                      help="first every record after ID, from the log (resume)")  # fmt: skip
    tail.add_argument("--count", type=int, metavar="N", help="stop after N records")
    tail.set_defaults(handler=_tail)
    for parser in (snapshot, stats, tail):
        parser.add_argument("--socket", metavar="PATH", help="the API socket (default: api.socket)")
        parser.add_argument("--config", metavar="FILE", help="read api.socket from this file")


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    return load_config(Path(args.config) if args.config else None).api.socket


def _connect_error(path: str, err: OSError) -> RunError:
    if isinstance(err, FileNotFoundError | ConnectionRefusedError):
        return RunError(f"cannot connect to {path}: {err.strerror} (is tracehound run running?)")
    if isinstance(err, PermissionError):
        return RunError(
            f"cannot connect to {path}: {err.strerror} (ask to join the socket's group, api.group)"
        )
    return RunError(f"cannot talk to {path}: {err.strerror or err}")


def _get(args: argparse.Namespace, path: str, query: dict[str, str | int]) -> Response:
    where = _socket(args)
    try:
        response = fetch(where, path, query)
    except OSError as err:
        raise _connect_error(where, err) from None
    except ApiResponseError as err:
        raise RunError(f"{args.subcommand}: {where}: {err}") from None
    _check(args.subcommand, response)
    return response


def _check(command: str, response: Response) -> None:
    if response.status == 200:
        return
    try:
        detail = str(json.loads(response.body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = response.body.decode("utf-8", "replace").strip()[:200]
    raise RunError(f"{command}: {response.status}: {detail}")


def _snapshot(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("pid", args.pid), ("comm", args.comm), ("cgroup", args.cgroup))
             if v is not None}  # fmt: skip
    body = _get(args, "/v1/snapshot", query).body
    if args.text:
        try:
            sys.stdout.write(render_text(decode_profile(body)))
        except ValueError as err:
            raise RunError(f"snapshot: the daemon's profile does not decode: {err}") from None
    else:
        sys.stdout.buffer.write(body)
    return 0


def _stats(args: argparse.Namespace) -> int:
    body = _get(args, "/v1/stats", {}).body
    print(json.dumps(json.loads(body), indent=2, sort_keys=True))
    return 0


def _tail(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count: expected at least 1, got {args.count}")
    where = _socket(args)
    headers = {"Last-Event-ID": args.last_event_id} if args.last_event_id else {}
    printed = 0
    last_id = args.last_event_id
    try:
        for item in stream(where, "/v1/stream", headers):
            if isinstance(item, Response):
                _check("tail", item)
                continue
            printed += _show(item, args)
            last_id = item.id or last_id
            if args.count is not None and printed >= args.count:
                return 0
    except OSError as err:
        raise _connect_error(where, err) from None
    except ApiResponseError as err:
        raise RunError(f"tail: {where}: {err}") from None
    except KeyboardInterrupt:
        return 130
    print(f"tracehound: tail: the daemon closed the stream; resume with --last-event-id {last_id}",
          file=sys.stderr)  # fmt: skip
    return 0


def _show(message: SseMessage, args: argparse.Namespace) -> int:
    """Print one record if it passes the filters; 1 if printed."""
    if message.event == "overflow":
        dropped = json.loads(message.data).get("dropped")
        print(f"tracehound: tail: {dropped} records dropped by the daemon for this slow client;"
              " reconnect with --last-event-id to fetch them", file=sys.stderr)  # fmt: skip
        return 0
    if message.event == "gap":
        print(f"tracehound: tail: {json.loads(message.data).get('detail')}", file=sys.stderr)
        return 0
    try:
        record = json.loads(message.data)
    except ValueError:
        return 0
    if args.type and not type_matches(args.type, str(record.get("type"))):
        return 0
    if args.pid is not None and event_pid(record) != args.pid:
        return 0
    sys.stdout.write(message.data + "\n")
    sys.stdout.flush()
    return 1
