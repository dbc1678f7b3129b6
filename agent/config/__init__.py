"""The daemon's configuration: TOML in, typed and checked msgspec Structs out.

- ``schema``: :class:`Config` and its sections, each field with a default
  and its checks; :class:`ConfigError`.
- ``load``: :func:`load_config` (file or defaults), :func:`parse_config`,
  :func:`dump_config` (``tracehound config show``), :func:`cli_defaults`
  and :func:`apply_defaults` (the bridge to today's command-line options).
- ``example``: :func:`example_config_text`, a commented example.

Every mistake is refused at start-up with one line naming the file, the
dotted key and what was expected; nothing runs on a half-understood file.
"""

from __future__ import annotations

from agent.config.example import example_config_text
from agent.config.load import (
    apply_defaults,
    cli_defaults,
    dump_config,
    load_config,
    parse_config,
)
from agent.config.schema import (
    DEFAULT_PATH,
    ApiConfig,
    CaptureConfig,
    Config,
    ConfigError,
    EvidenceConfig,
    FsyncPolicy,
    MetricsConfig,
    StreamConfig,
    StreamPolicy,
    parse_listen,
    parse_mode,
)

__all__ = [
    "DEFAULT_PATH",
    "ApiConfig",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "EvidenceConfig",
    "FsyncPolicy",
    "MetricsConfig",
    "StreamConfig",
    "StreamPolicy",
    "apply_defaults",
    "cli_defaults",
    "dump_config",
    "example_config_text",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_mode",
]
