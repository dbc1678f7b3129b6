"""What a SIGHUP reload may change, decided without touching the daemon. Pure.

Reloadable: the redaction rules, how the evidence log is written (fsync,
rotation, retention, checkpoints) and the API's authorisation and limits.
Everything else (probes, ring buffer, queue sizes, the socket, the metrics
address, where the log lives) is fixed once capture runs: changing it
safely means a restart. A reload that changes any of those is refused as a
whole, naming the keys, and the running configuration stays: applying half
of what an operator wrote would leave them guessing what runs.
"""

from __future__ import annotations

from typing import Final

import msgspec

from agent.config.schema import Config

__all__ = ["RELOADABLE", "ReloadPlan", "changed_keys", "plan_reload"]

RELOADABLE: Final = frozenset(
    {
        "evidence.redact_rules",
        "evidence.fsync",
        "evidence.segment_mb",
        "evidence.segment_hours",
        "evidence.retain_mb",
        "evidence.checkpoint_every",
        "api.allow_uids",
        "api.allow_gids",
        "api.max_request_bytes",
        "api.max_headers",
        "api.max_clients",
        "api.idle_timeout_s",
        "api.sse_buffer",
        "api.producer_uids",
        "api.producer_gids",
        "api.producer_rate",
        "api.producer_burst",
    }
)


class ReloadPlan(msgspec.Struct, frozen=True):
    """``changed``: every dotted key that differs; ``restart``: those of them
    a reload cannot apply (the reload is refused when there are any)."""

    changed: list[str]
    restart: list[str]

    @property
    def refusal(self) -> str | None:
        """The one-line reason the reload is refused, or None to apply it."""
        if not self.restart:
            return None
        keys = ", ".join(self.restart)
        return f"{keys} changed: that takes a restart (systemctl restart tracehound)"


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ, in schema order."""
    out: list[str] = []
    for section in old.__struct_fields__:
        before, after = getattr(old, section), getattr(new, section)
        for name in before.__struct_fields__:
            if getattr(before, name) != getattr(after, name):
                out.append(f"{section}.{name}")
    return out


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    changed = changed_keys(old, new)
    return ReloadPlan(changed=changed, restart=[k for k in changed if k not in RELOADABLE])
