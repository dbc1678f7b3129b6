"""``tracehound config check FILE | show [--config FILE] | example``.

``check`` lists every mistake in the file at once (one line each, naming
the file, the key and what was expected; exit 2), not only the first one
the daemon would stop at. ``show`` starts with a comment saying which file
it read, or that no file was read and these are the built-in defaults:
the same TOML either way, so its output still reads back as a configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import DEFAULT_PATH, dump_config, example_config_text, load_config
from agent.config.check import file_mistakes
from agent.config.load import config_source
from agent.config.schema import default_evidence_dir
from agent.errors import shown


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="check or show the configuration")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="validate a configuration file: every mistake at once")
    check.add_argument("file")
    check.set_defaults(handler=check_main)
    show = verbs.add_parser("show", help="the effective configuration, as TOML")
    show.add_argument("--config", metavar="FILE",
                      help=f"the file to read (default {DEFAULT_PATH} if it exists)")  # fmt: skip
    show.set_defaults(handler=show_main)
    example = verbs.add_parser("example", help="a commented example configuration")
    example.set_defaults(handler=example_main)


def check_main(args: argparse.Namespace) -> int:
    default_evidence_dir()  # the environment's mistake, named alone (ConfigError)
    mistakes = file_mistakes(Path(args.file))
    for line in mistakes:
        print(f"tracehound: {line}", file=sys.stderr)
    if len(mistakes) > 1:  # one mistake stays one line, as every error is
        print(f"tracehound: {shown(args.file)}: {len(mistakes)} mistakes", file=sys.stderr)
    if mistakes:
        return 2
    print(f"{shown(args.file)}: ok")  # the name is the user's bytes: escaped
    return 0


def show_main(args: argparse.Namespace) -> int:
    path = config_source(Path(args.config) if args.config else None)
    config = load_config(path)
    source = f"read from {shown(path)}" if path is not None else (
        f"no file read ({DEFAULT_PATH} does not exist): the built-in defaults"
    )  # fmt: skip
    text = dump_config(config)
    head, _, rest = text.partition("\n")
    print(f"{head}\n# {source}\n{rest}", end="")
    return 0


def example_main(args: argparse.Namespace) -> int:
    print(example_config_text(), end="")
    return 0
