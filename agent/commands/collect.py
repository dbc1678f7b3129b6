"""``tracehound collect --config FILE``: the fleet collector (JetStream into PostgreSQL).

Reads ``[collect]`` (and ``[evidence] redact_rules`` for the redaction
pass) from FILE; everything else is :mod:`agent.fleet.collector`. A bad
file, DSN or NATS URL is one line and a non-zero exit; SIGTERM/SIGINT end
it with 0 after the batch being written is committed and acked.
"""

from __future__ import annotations

import argparse
import asyncio

from agent.config.load import load_config

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    collect = subparsers.add_parser(
        "collect", help="the fleet collector: evidence from NATS JetStream into PostgreSQL"
    )
    collect.add_argument("--config", metavar="FILE", required=True,
                         help="the configuration file ([collect] section)")  # fmt: skip
    collect.set_defaults(handler=_collect)


def _collect(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from agent.fleet.collector import run_collector  # nats and psycopg only for this verb

    return asyncio.run(run_collector(config))
