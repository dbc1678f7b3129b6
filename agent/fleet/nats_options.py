"""nats-py's connect options from :class:`~agent.config.fleet.NatsSettings`.

Shared by the publisher and (if it wants) the collector: servers (a
comma-separated cluster), a ``.creds`` file (``user_credentials``), a token
read from ``token_file`` (a file, so the config can be world-readable), and
an :class:`ssl.SSLContext` from the ``tls_*`` files.

Files are read here, at start, so a missing or unreadable one is one line
naming the key (:class:`NatsSetupError`): configuration fails closed. The
servers themselves are not contacted here; one that is away is a delivery
problem, retried by the caller.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from agent.config.fleet import NatsSettings, nats_servers

__all__ = ["NatsSetupError", "connect_options"]

_TOKEN_MAX = 4096


class NatsSetupError(Exception):
    """A credentials, token or TLS file cannot be used (the message is one line)."""


def _token(section: str, path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_TOKEN_MAX + 1)
    except OSError as err:
        raise NatsSetupError(
            f"{section}.token_file: cannot read {path!r} ({err.strerror or err})"
        ) from None
    lines = data.decode("utf-8", "replace").strip().splitlines()
    if len(data) > _TOKEN_MAX or len(lines) != 1 or not lines[0].strip():
        raise NatsSetupError(
            f"{section}.token_file: expected one line holding the token in {path!r}"
        )
    return lines[0].strip()


def _tls(section: str, settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca_file or settings.tls_cert_file):
        return None
    key = f"{section}.tls_ca_file"
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            key = f"{section}.tls_cert_file"
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as err:
        raise NatsSetupError(f"{key}: cannot be used ({err})") from None
    return context


def connect_options(settings: NatsSettings, section: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` (servers, auth, TLS), without
    reconnect policy (the caller's). ``section`` names the keys in errors.

    Raises:
        NatsSetupError: a file the settings name cannot be read or used.
        ConfigError: ``nats_url`` is empty or not URLs.
    """
    options: dict[str, Any] = {"servers": nats_servers(settings.nats_url, f"{section}.nats_url")}
    if settings.credentials_file:
        if not os.access(settings.credentials_file, os.R_OK):
            raise NatsSetupError(
                f"{section}.credentials_file: cannot read {settings.credentials_file!r}"
            )
        options["user_credentials"] = settings.credentials_file
    if settings.token_file:
        options["token"] = _token(section, settings.token_file)
    tls = _tls(section, settings)
    if tls is not None:
        options["tls"] = tls
    return options
