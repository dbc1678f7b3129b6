"""``tracehound config check``: every mistake in a file at once.

msgspec stops at the first error, and so does :func:`~agent.config.load.parse_config`
(the daemon needs one reason to refuse, not a list). An operator fixing a
file wants them all in one go, so this checks piece by piece: every table
on its own, then every key of a table on its own (the key's value with the
table's other keys at their defaults, so the key's type and its own range
checks run alone; a key that fails is checked again beside the table's
keys that passed, so a check across keys quotes the file's values), then
each whole table (checks across keys, such as
``retain_mb`` at least ``segment_mb``), each result in the same one-line
form as :func:`parse_config` (``FILE: key: what was expected``).

The verdict matches ``parse_config``: no mistakes here exactly when
parsing the whole file succeeds (the whole document is parsed last, and
its error is added if the pieces missed it).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from agent.config.load import _toml_message, _validation_message, parse_config
from agent.config.schema import Config, ConfigError
from agent.errors import shown
from agent.input_file import InputFileError, read_input_file

__all__ = ["config_mistakes", "file_mistakes"]


def _one(document: dict[str, Any]) -> str | None:
    """The first mistake of ``document`` decoded as a Config, without the source."""
    try:
        msgspec.convert(document, Config, strict=True)
    except ConfigError as err:
        return str(err)
    except msgspec.ValidationError as err:
        return _validation_message(str(err))
    return None


def config_mistakes(text: str, source: str) -> list[str]:
    """Every mistake in TOML ``text``, each ``SOURCE: key: problem``, in file order."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [_toml_message(source, str(err))]  # no table can be read past it
    found: list[str] = []

    def add(problem: str | None) -> None:
        line = None if problem is None else f"{source}: {problem}"
        if line is not None and line not in found:
            found.append(line)

    for section, table in document.items():
        problem = _one({section: table})
        if problem is None or not isinstance(table, dict):
            add(problem)  # unknown table, or not a table: one mistake for it all
            continue
        alone = {key: _one({section: {key: value}}) for key, value in table.items()}
        good = {key: table[key] for key, item in alone.items() if item is None}
        for key, item in alone.items():
            if item is not None:
                # Again beside the keys that are fine, so a check across keys
                # quotes the file's values (retain_mb against *its* segment_mb).
                beside = _one({section: {**good, key: table[key]}})
                same_key = beside is not None and beside.startswith(f"{section}.{key}")
                add(beside if same_key else item)
        if not any(alone.values()):
            add(problem)  # each key fits alone; together they do not
    if not found:
        try:
            parse_config(text, source)
        except ConfigError as err:
            found.append(str(err))
    return found


def file_mistakes(path: Path) -> list[str]:
    """:func:`config_mistakes` of the file at ``path``; the file unreadable,
    not a regular file, too large or not UTF-8 is one mistake."""
    name = shown(path)
    try:
        data = read_input_file(path)
    except InputFileError as err:
        return [f"{name}: {err}"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return [f"{name}: not valid TOML: not UTF-8 at byte {err.start}"]
    return config_mistakes(text, name)
