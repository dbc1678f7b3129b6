"""The ``tracehound`` command line.

Every failure a user can cause ends in one line on stderr naming what was
wrong and what to do, and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__
from agent.capture.loader import CaptureError
from agent.commands import profile, run
from agent.errors import RunError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line like ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tracehound", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"tracehound {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    run.add_parser(subparsers)
    profile.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
