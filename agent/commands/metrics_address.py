"""``[metrics] listen``: an address already in use stops the start, or warns.

With ``required = true`` (the default) a listen address that cannot be
bound is a :class:`~agent.errors.RunError`: one line, exit 1, before the
BPF programs are compiled (checked first by binding it once, then again
for real when the server starts, since the port may be taken in between).
With ``required = false`` it is a warning and the daemon runs without
metrics (fail safe on delivery: the capture never depends on a scraper).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from agent.config.schema import MetricsConfig
from agent.errors import RunError

__all__ = ["check_metrics_address", "metrics_bind_problem", "raise_or_warn"]


def metrics_bind_problem(metrics: MetricsConfig, err: OSError) -> str:
    """The one line saying why ``metrics.listen`` cannot be listened on."""
    return f"metrics.listen {metrics.listen}: cannot listen there ({err.strerror or err})"


def raise_or_warn(problem: str, required: bool, say: Callable[[str], None] | None = None) -> None:
    """Stop the start (``required``) or say ``problem`` and go on without metrics.

    ``say`` prints a warning line (the daemon's ``tracehound: ...``); None
    prints none (the real bind will warn).
    """
    if required:
        raise RunError(
            f"{problem}; free the port, choose another, or set [metrics] required = false"
            " to run without metrics"
        )
    if say is not None:
        say(f"WARNING: {problem}; going on without metrics ([metrics] required = false)")


def check_metrics_address(metrics: MetricsConfig) -> None:
    """Bind ``metrics.listen`` once and let it go: in use or not bindable
    raises when required; else it is left for the real bind to warn about.

    The socket is made as trio's listeners make theirs (``SO_REUSEADDR``), so
    a port in TIME_WAIT passes here as it does there. A host name is
    resolved as there too; one that resolves to nothing is left to the real
    bind.
    """
    host, port = metrics.address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            with contextlib.suppress(OSError):
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                raise_or_warn(metrics_bind_problem(metrics, err), metrics.required)
                return
