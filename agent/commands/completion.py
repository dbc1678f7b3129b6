"""``tracehound completion bash|zsh``: the shell's completion script, printed.

Generated from the very parser the command line uses, by shtab (it walks
argparse's actions and writes a static script: nothing of tracehound runs
at completion time, so completing is instant and cannot fail on a host
where the agent cannot start). A new verb or option is in the next script
without anyone writing it down. Install::

    tracehound completion bash > /etc/bash_completion.d/tracehound
    tracehound completion zsh > "${fpath[1]}/_tracehound"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

import shtab

SHELLS: Final = ("bash", "zsh")

#: Options and positionals that name a file or directory, by dest: completed as such.
_FILES: Final = frozenset({
    "config", "output", "events", "stats_file", "profile_file", "ready_file", "redact_rules",
    "key", "file", "socket", "state_dir", "state_dir_positional", "evidence",
})  # fmt: skip


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    root: Callable[[], argparse.ArgumentParser],
) -> None:
    """The verb; ``root`` builds the whole parser (the script's source)."""
    completion = subparsers.add_parser("completion", help="print the bash or zsh completion script")
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    completion.set_defaults(handler=lambda args: main(args, root()))


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell``; paths complete as files."""
    _mark_files(parser)
    return str(shtab.complete(parser, shell=shell))


def _mark_files(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_files(sub)
        elif action.dest in _FILES:
            action.complete = shtab.FILE  # type: ignore[attr-defined]


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(script(parser, args.shell))
    sys.stdout.flush()
    return 0
