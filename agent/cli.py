"""The ``tracehound`` command line.

Every failure a user can cause ends in one line on stderr naming what was
wrong and what to do, and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from agent import __version__
from agent.capture.loader import CaptureError
from agent.commands import (
    client,
    collect,
    completion,
    config,
    evidence,
    fleet,
    mark,
    profile,
    run,
)
from agent.errors import RunError, UsageError


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    """Make argparse's errors ours: one line, raised, not printed with usage."""

    # "run: argument --x: ...", printed after "tracehound: ": the program's
    # name once, then the subcommand's.
    where = parser.prog.removeprefix("tracehound").strip()
    prefix = f"{where}: " if where else ""

    def error(message: str) -> NoReturn:
        raise UsageError(f"{prefix}{message}")

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_error(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracehound",
        description="eBPF capture agent: what ran, what it touched, whom it talked to.",
    )
    parser.add_argument("--version", action="version", version=f"tracehound {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    run.add_parser(subparsers)
    profile.add_parser(subparsers)
    evidence.add_parser(subparsers)
    config.add_parser(subparsers)
    client.add_parsers(subparsers)
    completion.add_parser(subparsers, build_parser)
    mark.add_parser(subparsers)
    collect.add_parser(subparsers)
    fleet.add_parser(subparsers)
    _one_line_error(parser)
    return parser


_ONE_LINE = (UsageError, RunError, CaptureError)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BaseExceptionGroup as group:
        # trio's nurseries wrap what their tasks raise: unwrap our own.
        leaves = _leaves(group)
        if leaves and all(isinstance(e, (*_ONE_LINE, KeyboardInterrupt)) for e in leaves):
            first = next((e for e in leaves if isinstance(e, _ONE_LINE)), None)
            if first is None:
                print("tracehound: interrupted", file=sys.stderr)
                return 130
            print(f"tracehound: {first}", file=sys.stderr)
            return int(getattr(first, "exit_status", 1))
        raise


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            return 2
        status: int = args.handler(args)
        return status
    except UsageError as err:
        print(f"tracehound: {err}", file=sys.stderr)
        return err.exit_status
    except (CaptureError, RunError) as err:
        print(f"tracehound: {err}", file=sys.stderr)
        return getattr(err, "exit_status", 1)
    except KeyboardInterrupt:
        print("tracehound: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
