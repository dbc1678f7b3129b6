"""sd_notify: tell systemd the service is ready, alive, stopping and what it does.

The protocol (sd_notify(3)) is one datagram of newline-separated
``KEY=VALUE`` lines sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET``;
a name starting with ``@`` is in the abstract namespace (the ``@`` stands for
a leading NUL byte). Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op returning False, so the daemon can call these unconditionally.

No external dependency and no state: each call opens, sends and closes its
own socket. A failed send is reported by the return value, never raised: a
service must not die because its supervisor went away.

With ``Type=notify`` the unit sends ``READY=1`` once the probes are attached,
``WATCHDOG=1`` every :func:`watchdog_interval` seconds, ``STATUS=`` lines
that ``systemctl status`` shows, and ``STOPPING=1`` when it starts draining.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]


def _address(path: str) -> str | bytes:
    """The sockaddr for a ``$NOTIFY_SOCKET`` value: ``@name`` is abstract."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def notify(message: str, *, socket_path: str | None = None) -> bool:
    """Send ``message`` to systemd's notification socket.

    ``socket_path`` defaults to ``$NOTIFY_SOCKET``. Returns True when the
    datagram was sent; False when there is no socket to send to (not run by
    systemd) or the send failed.
    """
    path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
    if not path or not message:
        return False
    if not path.startswith(("/", "@")):
        return False  # sd_notify(3) accepts only absolute paths and abstract names
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(path))
            sent = sock.send(message.encode())
    except OSError:
        return False
    return sent == len(message.encode())


def ready(*, socket_path: str | None = None) -> bool:
    """``READY=1``: start-up is complete (for tracehound: probes attached)."""
    return notify("READY=1", socket_path=socket_path)


def status(text: str, *, socket_path: str | None = None) -> bool:
    """``STATUS=text``: a one-line, human-readable state for ``systemctl status``.

    Newlines would start a new assignment, so they are replaced by spaces.
    """
    line = " ".join(text.splitlines())
    return notify(f"STATUS={line}", socket_path=socket_path)


def watchdog(*, socket_path: str | None = None) -> bool:
    """``WATCHDOG=1``: the service is alive (send every :func:`watchdog_interval`)."""
    return notify("WATCHDOG=1", socket_path=socket_path)


def reloading(*, socket_path: str | None = None) -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC``: a reload has begun; READY=1 ends it
    (sd_notify(3); systemd wants the timestamp to tell this reload from the last)."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={now}", socket_path=socket_path)


def stopping(*, socket_path: str | None = None) -> bool:
    """``STOPPING=1``: shutdown has begun (draining what is in flight)."""
    return notify("STOPPING=1", socket_path=socket_path)


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog is wanted.

    Read from ``$WATCHDOG_USEC`` (the unit's ``WatchdogSec=``); half of it, as
    sd_watchdog_enabled(3) recommends. When ``$WATCHDOG_PID`` is set and is
    not this process, the watchdog is meant for another process: None.
    Missing, malformed or non-positive values also give None.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return value / 2 / 1_000_000
