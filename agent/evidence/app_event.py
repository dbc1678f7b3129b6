"""An application event: what a local producer asked to append, and who it is.

The daemon's API builds one from a ``POST /v1/events`` body
(:mod:`agent.api.produce`, already held to its limits there) and the
peer's identity (``SO_PEERCRED`` and :mod:`agent.api.peer_process`);
it travels to the evidence worker as it is
(:class:`~agent.evidence.worker_protocol.Append`), where the mapper
redacts its text and makes the ``app.event.v1`` record
(:meth:`~agent.evidence.mapper.Mapper.app_event`). Everything in it but
the ids and ``ts_ns`` is attacker-chosen text.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["AppEvent"]


class AppEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One producer's event. ``pid``/``uid``/``gid``: ``SO_PEERCRED``;
    ``exe``/``comm``/``cgroup_id``: read from /proc as it arrived, empty
    and 0 when ``peer_gone`` (the peer had exited); ``ts_ns``: when it
    arrived, kernel boot-time ns (the clock of every record's time).
    ``exe`` and ``comm`` are bytes, as the kernel has them: they need not
    be UTF-8, and msgpack carries no text that is not."""

    pid: int
    uid: int
    gid: int
    exe: bytes
    comm: bytes
    cgroup_id: int
    peer_gone: bool
    kind: str
    message: str
    data: dict[str, Any]
    ts_ns: int
