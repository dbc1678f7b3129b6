"""How every ``evidence`` verb is told which log: one set of options, one rule.

Each verb takes the state directory the same three ways, so a habit formed
on one works on all:

- positionally: ``tracehound evidence verify /var/lib/tracehound/evidence``;
- ``--state-dir DIR``, the same thing spelled as an option (both at once
  must agree, else it is a usage error rather than a silent pick);
- ``--config FILE``: the log the daemon of that configuration writes
  (``evidence.state_dir``).

With none of them: the default configuration file's ``evidence.state_dir``
when that file exists, else the built-in default (moved by
``TRACEHOUND_EVIDENCE_DIR``). An explicit directory wins over ``--config``;
the file is only read when it decides, so a broken configuration never
stops ``verify DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from agent.config import DEFAULT_PATH, load_config
from agent.config.schema import DEFAULT_EVIDENCE_DIR, EVIDENCE_DIR_ENV
from agent.errors import UsageError, shown

__all__ = ["add_state_dir_arguments", "state_dir_value"]

#: The dest of the positional form; ``--state-dir`` is ``state_dir``.
POSITIONAL_DEST: Final = "state_dir_positional"


def add_state_dir_arguments(
    parser: argparse.ArgumentParser, *, metavar: str = "STATE_DIR", what: str = ""
) -> None:
    """Add ``[STATE_DIR]``, ``--state-dir DIR`` and ``--config FILE`` to ``parser``.

    ``what`` extends the positional's help (``verify`` also takes a segment
    file, a bundle or ``-``).
    """
    default = f"default: evidence.state_dir of --config, else {DEFAULT_EVIDENCE_DIR} or ${EVIDENCE_DIR_ENV}"
    parser.add_argument(POSITIONAL_DEST, nargs="?", metavar=metavar,
                        help=f"the evidence log's directory{what} ({default})")  # fmt: skip
    parser.add_argument("--state-dir", metavar="DIR",
                        help=f"the same as {metavar}, as an option")  # fmt: skip
    parser.add_argument("--config", metavar="FILE",
                        help=f"read evidence.state_dir from this file (default {DEFAULT_PATH}"
                             " if it exists)")  # fmt: skip


def state_dir_value(args: argparse.Namespace, command: str) -> str:
    """The log's location as the user gave it (or the configuration decided).

    Raises:
        UsageError: the positional and ``--state-dir`` disagree, or either
            is empty (``Path('')`` is the current directory, which nobody
            means); :class:`~agent.config.schema.ConfigError` (a UsageError)
            when ``--config`` (or the default file) is wrong.
    """
    positional: str | None = getattr(args, POSITIONAL_DEST)
    option: str | None = args.state_dir
    for label, value in (
        (f"{command}: --state-dir", option),
        (f"{command}: STATE_DIR", positional),
    ):
        if value is not None and not value:
            raise UsageError(f"{label}: expected a directory path, got an empty value")
    if positional is not None and option is not None and positional != option:
        raise UsageError(
            f"{command}: --state-dir {shown(option)} and {shown(positional)} disagree;"
            " give the directory once"
        )
    given = option if option is not None else positional
    if given is not None:
        return given
    config = load_config(Path(args.config) if args.config else None)
    return config.evidence.state_dir
