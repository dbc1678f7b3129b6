"""The configuration's one error type (its own module: every section raises it)."""

from __future__ import annotations

from agent.errors import UsageError

__all__ = ["ConfigError"]


class ConfigError(UsageError):
    """The configuration is wrong: one line naming the file, the key and what was expected.

    A :class:`~agent.errors.UsageError`, so the CLI prints it as
    ``tracehound: <message>`` and exits 2 without starting anything: a
    daemon must not run with a configuration its operator did not mean.
    Raised by a section's checks as ``key: problem``; the loader re-raises it
    as ``FILE: key: problem``.
    """
