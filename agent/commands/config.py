"""``tracehound config check FILE | show [--config FILE] | example``."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.config import DEFAULT_PATH, dump_config, example_config_text, load_config
from agent.errors import shown


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="check or show the configuration")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(handler=check_main)
    show = verbs.add_parser("show", help="the effective configuration, as TOML")
    show.add_argument("--config", metavar="FILE",
                      help=f"the file to read (default {DEFAULT_PATH} if it exists)")  # fmt: skip
    show.set_defaults(handler=show_main)
    example = verbs.add_parser("example", help="a commented example configuration")
    example.set_defaults(handler=example_main)


def check_main(args: argparse.Namespace) -> int:
    load_config(Path(args.file))  # raises ConfigError: one line, exit 2
    print(f"{shown(args.file)}: ok")  # the name is the user's bytes: escaped
    return 0


def show_main(args: argparse.Namespace) -> int:
    print(dump_config(load_config(Path(args.config) if args.config else None)), end="")
    return 0


def example_main(args: argparse.Namespace) -> int:
    print(example_config_text(), end="")
    return 0
