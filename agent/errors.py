"""Errors that end a command with one clear line and a non-zero exit.

The CLI catches these (and CaptureError) and prints ``tracehound: <msg>``:
no traceback. Each message names the argument, file or field at fault and
what was expected, or what to do.
"""

from __future__ import annotations

import os


class UsageError(Exception):
    """Bad arguments or input: exit status 2."""

    exit_status = 2


class RunError(Exception):
    """The command could not do its work: exit status 1 unless given."""

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def shown(path: str | os.PathLike[str]) -> str:
    """A path (or any attacker-chosen text) as an error line shows it: as is
    when printable, else quoted with escapes, so a name holding a newline or
    undecodable bytes cannot break the line or the terminal."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)
