"""Reading the configuration file, and every error as one line a user can act on.

:func:`load_config` reads TOML, decodes it into :class:`~agent.config.schema.Config`
with msgspec (types checked, unknown keys refused) and lets the sections'
own checks run. Whatever is wrong comes out as a
:class:`~agent.config.schema.ConfigError` of one line:

- ``FILE: capture.ringbuf_pages: expected a power of two ..., got 1000``
- ``FILE: capture.ringbuf_page: unknown key; expected one of: argv_max, ...``
- ``FILE: line 3: not valid TOML: ...``

:func:`dump_config` writes the effective configuration back as TOML
(``tracehound config show``), and reading that text gives the same Config.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.config.schema import DEFAULT_PATH, Config, ConfigError, default_evidence_dir
from agent.errors import shown
from agent.input_file import InputFileError, read_input_file

__all__ = [
    "apply_defaults",
    "cli_defaults",
    "config_source",
    "dump_config",
    "load_config",
    "parse_config",
    "toml_value",
]

_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_VALIDATION: Final = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_TYPE_MISMATCH: Final = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_UNKNOWN_FIELD: Final = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING_FIELD: Final = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_INVALID_ENUM: Final = re.compile(r"Invalid enum value (?P<got>.+)")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")

# msgspec's type names, as TOML's author knows them.
_TYPE_WORDS: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
}


def config_source(path: Path | None = None, *, default: Path = Path(DEFAULT_PATH)) -> Path | None:
    """The file :func:`load_config` reads for ``path``: ``path`` itself, else
    ``default`` if it exists, else None (the built-in defaults)."""
    if path is not None:
        return path
    return default if default.exists() else None


def load_config(path: Path | None = None, *, default: Path = Path(DEFAULT_PATH)) -> Config:
    """The configuration from ``path``, or the built-in defaults.

    ``path=None`` means "the default location, if there is one": ``default``
    (``/etc/tracehound/tracehound.toml``) is read when it exists, and the
    built-in defaults are used when it does not, so the agent runs with no
    file at all. A ``path`` given explicitly must exist: a typo in
    ``--config`` must not silently mean "defaults".

    The file is read with :func:`~agent.input_file.read_input_file`: not a
    regular file (``/dev/zero``, a FIFO) or larger than 1 MiB is refused at
    once, never read or waited on.

    Raises:
        ConfigError: the file cannot be read, is not a regular file, is too
            large, is not TOML, or does not fit the schema; the message
            names the file, the key and what was expected; or
            ``TRACEHOUND_EVIDENCE_DIR`` is set but not an absolute path
            (named alone: it is not the file's fault).
    """
    default_evidence_dir()  # the environment's mistake, before any file is blamed
    path = config_source(path, default=default)
    if path is None:
        return Config()
    name = shown(path)  # an operator's path may hold anything: one line, escaped
    try:
        data = read_input_file(path)
    except InputFileError as err:
        raise ConfigError(f"{name}: {err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not valid TOML: not UTF-8 at byte {err.start}") from None
    return parse_config(text, name)


def parse_config(text: str, source: str) -> Config:
    """Decode TOML ``text`` into a Config; ``source`` names it in errors.

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(_toml_message(source, str(err))) from None
    try:
        return msgspec.convert(document, Config, strict=True)
    except ConfigError as err:  # a section's own checks: "key: problem"
        raise ConfigError(f"{source}: {err}") from None
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_validation_message(str(err))}") from None


def _toml_message(source: str, message: str) -> str:
    """``Invalid value (at line 3, column 9)`` to ``FILE: line 3: not valid TOML: ...``."""
    found = _TOML_POSITION.search(message)
    if found is None:
        return f"{source}: not valid TOML: {message}"
    problem = message[: found.start()] + message[found.end() :]
    return f"{source}: line {found[1]}: not valid TOML: {problem} (column {found[2]})"


def _validation_message(message: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.capture.argv_max```, as
    ``capture.argv_max: expected an integer, got a string``."""
    found = _VALIDATION.fullmatch(message)
    what, path = (found["what"], found["path"] or "") if found else (message, "")
    key = path.removeprefix(".").replace("[...]", "")
    if unknown := _UNKNOWN_FIELD.fullmatch(what):
        name = unknown["name"]
        fields = _fields_at(key)
        full = f"{key}.{name}" if key else name
        if fields is None:
            return f"{full}: unknown key"
        return f"{full}: unknown key; expected one of: {', '.join(sorted(fields))}"
    if missing := _MISSING_FIELD.fullmatch(what):
        return f"{key or '(top)'}: missing required key {missing['name']!r}"
    if mismatch := _TYPE_MISMATCH.fullmatch(what):
        return f"{key or '(top)'}: expected {_words(mismatch['want'])}, got {_words(mismatch['got'], got=True)}"
    if enum := _INVALID_ENUM.fullmatch(what):
        choices = _choices_at(key)
        if choices:
            return f"{key}: expected one of {', '.join(map(repr, choices))}, got {enum['got']}"
    return f"{key or '(top)'}: {what}"


def _words(types: str, *, got: bool = False) -> str:
    words = {**_TYPE_WORDS, "float": "a decimal number"} if got else _TYPE_WORDS
    return " or ".join(words.get(t, t) for t in types.split(" | "))


def _type_at(key: str) -> msgspec.inspect.Type | None:
    """The schema's type at a dotted key such as ``evidence.redact_rules[0].privacy``."""
    current: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for part in filter(None, re.split(r"\.|(\[\d+\])", key)):
        if part.startswith("["):
            if not isinstance(current, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
                return None
            current = current.item_type
            continue
        if not isinstance(current, msgspec.inspect.StructType):
            return None
        fields = {f.name: f.type for f in current.fields}
        if part not in fields:
            return None
        current = fields[part]
    return current


def _fields_at(key: str) -> list[str] | None:
    found = _type_at(key)
    if isinstance(found, msgspec.inspect.StructType):
        return [f.name for f in found.fields]
    return None


def _choices_at(key: str) -> tuple[Any, ...]:
    found = _type_at(key)
    if isinstance(found, msgspec.inspect.LiteralType):
        return tuple(found.values)
    return ()


def dump_config(config: Config) -> str:
    """The configuration as TOML text: every key, defaults included.

    Deterministic (schema order, sorted table keys) so two dumps can be
    diffed. Redaction rules are inline tables, one a line. Round trip:
    ``parse_config(dump_config(c), ...) == c``.

    Raises:
        TypeError: a value of a type this schema does not use (a bug).
    """
    lines = ["# tracehound: the effective configuration"]
    for section in config.__struct_fields__:
        table = getattr(config, section)
        lines += ["", f"[{_key(section)}]"]
        for name in table.__struct_fields__:
            value = getattr(table, name)
            if isinstance(value, tuple) and value and isinstance(value[0], msgspec.Struct):
                lines.append(f"{_key(name)} = [")
                lines += [f"  {toml_value(item)}," for item in value]
                lines.append("]")
            else:
                lines.append(f"{_key(name)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_value(value: object) -> str:
    """``value`` as a TOML value (the types the schema uses)."""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite: the schema refuses inf and nan
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in items) + "}"
    if isinstance(value, msgspec.Struct):
        fields = value.__struct_fields__
        return "{" + ", ".join(f"{_key(f)} = {toml_value(getattr(value, f))}" for f in fields) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def cli_defaults(config: Config) -> dict[str, object]:
    """The configuration as values for the ``run``/``profile`` options.

    Keyed by argparse ``dest``. Every such option's parser default is
    ``None`` (not given), and :func:`apply_defaults` fills those from here:
    the schema is the only place a default is written. ``evidence`` is the
    directory when the log is on, ``None`` when it is off. Redaction rules
    are not here: use ``config.evidence.redactor()``.
    """
    capture, stream, evidence = config.capture, config.stream, config.evidence
    return {
        "ringbuf_pages": capture.ringbuf_pages,
        "argv_max": capture.argv_max,
        "disable_probe": list(capture.disable_probes),
        "probe_tracepoint": [f"{k}={v}" for k, v in sorted(capture.probe_tracepoints.items())],
        "stats_interval": capture.stats_interval,
        "fold_window_ms": capture.fold_window_ms,
        "fold_capacity": capture.fold_capacity,
        "resolve_paths": capture.resolve_paths,
        "stream_capacity": stream.capacity,
        "stream_policy": stream.policy,
        "evidence": evidence.state_dir if evidence.enabled else None,
        "evidence_fsync": evidence.fsync,
        "evidence_segment_mb": evidence.segment_mb,
        "evidence_segment_hours": evidence.segment_hours,
        "evidence_retain_mb": evidence.retain_mb,
        "evidence_checkpoint_every": evidence.checkpoint_every,
    }


def apply_defaults(args: argparse.Namespace, config: Config) -> frozenset[str]:
    """Fill every option of ``args`` that was not given (``None``) from ``config``.

    So an option given on the command line always wins over the file, even
    when it equals the built-in default, and a value in the file wins over
    the schema's default (``config`` holds both). ``--no-evidence``
    (``args.no_evidence``) keeps ``evidence`` off whatever the file says.
    Options ``args`` does not have are skipped, so ``profile`` and ``run``
    share this.

    Returns the dests ``config`` decided, so an error about a value can name
    where it came from (``evidence.state_dir in FILE``, not ``--evidence``).
    """
    decided: set[str] = set()
    for dest, value in cli_defaults(config).items():
        if dest == "evidence" and getattr(args, "no_evidence", False):
            continue
        if hasattr(args, dest) and getattr(args, dest) is None:
            setattr(args, dest, value)
            decided.add(dest)
    return frozenset(decided)
