"""``tracehound mark MESSAGE``: append an application event to the running daemon's log.

It posts ``{"message", "kind", "data"}`` to ``POST /v1/events``
(:mod:`agent.api.produce` says what is accepted); the daemon attributes
the record to this process by its socket credentials, so nothing here
says who is asking. Prints the record's id (and type and time) as JSON,
so a script can keep it: ``tracehound events`` and ``tail`` show the
record beside the kernel's. Failures are one line: a ``--data`` that is
not a JSON object (2), or the daemon's refusal (``403``: not an
``api.producer_uids``/``producer_gids`` peer; ``429``: too many, try
again after the time it says; ``400``: what in the event is wrong) and
no daemon at all (1).
"""

from __future__ import annotations

import argparse
import sys

import msgspec

from agent.api.client import ApiError, post
from agent.api.produce import DEFAULT_KIND, MAX_MESSAGE_CHARS
from agent.commands.arguments import json_object
from agent.commands.client import TIMEOUT_S, _json, _one_line, _socket
from agent.errors import UsageError
from agent.safetext import terminal_safe_json

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mark = subparsers.add_parser(
        "mark", help="append an application event to the daemon's log (deploys, tests, changes)"
    )
    mark.add_argument("message", help=f"what happened, 1 to {MAX_MESSAGE_CHARS} characters")
    mark.add_argument("--kind", default=DEFAULT_KIND,
                      help=f"a name like deploy.start ([a-z0-9._-]; default {DEFAULT_KIND})")  # fmt: skip
    mark.add_argument("--data", type=json_object, metavar="JSON", default={},
                      help='details as a JSON object, e.g. \'{"version": "1.2"}\'')  # fmt: skip
    mark.add_argument("--socket", metavar="PATH", help="the API socket (default: api.socket)")
    mark.add_argument("--config", metavar="FILE", help="read api.socket from this file")
    mark.set_defaults(handler=_mark)


def _mark(args: argparse.Namespace) -> int:
    if not args.message:
        raise UsageError("mark: the message is empty; say what happened")
    body = msgspec.json.encode({"message": args.message, "kind": args.kind, "data": args.data})
    where = _socket(args)
    with _one_line("mark", where):
        response = post(where, "/v1/events", body, TIMEOUT_S)
        if response.status != 202:
            raise ApiError.from_response(response)
    answer = _json("mark", response.body)
    sys.stdout.buffer.write(terminal_safe_json(msgspec.json.encode(answer, order="sorted")) + b"\n")
    sys.stdout.flush()
    return 0
