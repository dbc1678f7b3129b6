"""Drift between two profiles: what a run did that another did not. Pure.

``tracehound profile diff A B`` compares a baseline A with a new run B:
programs executed, file operations and network endpoints that appeared or
vanished. Addresses a run cannot choose are left out of the comparison so
that drift means behaviour, not noise: the client port of an accepted
connection, and the port of a bind to port 0.

Items are display text: paths and names escaped as ``ls -b`` does
(agent.safetext), so a drift line cannot be forged by a file name.
"""

from __future__ import annotations

import msgspec

from agent.safetext import escape_text, text_field
from agent.sinks.profile import NetRecord, Profile, endpoint_text


class Drift(msgspec.Struct, frozen=True):
    """Each list is sorted; ``added`` is in B only, ``removed`` in A only."""

    programs_added: list[str]
    programs_removed: list[str]
    files_added: list[str]
    files_removed: list[str]
    endpoints_added: list[str]
    endpoints_removed: list[str]

    @property
    def any(self) -> bool:
        return any(
            (self.programs_added, self.programs_removed, self.files_added,
             self.files_removed, self.endpoints_added, self.endpoints_removed)
        )  # fmt: skip


def programs(profile: Profile) -> set[str]:
    """Every program a process of the profile ran (successful execs)."""
    return {
        text_field(ex.filename, cut=ex.filename_cut)
        for p in profile.processes
        for ex in p.execs
        if not ex.error
    }


def files(profile: Profile) -> set[str]:
    """``op path`` (``rename old -> new``) for every successful file operation."""
    out: set[str] = set()
    for proc in profile.processes:
        for f in proc.files:
            target = f" -> {text_field(f.target, cut=f.target_cut)}" if f.target else ""
            out.add(f"{f.op} {text_field(f.path, cut=f.path_cut)}{target}")
    return out


def _endpoint_key(record: NetRecord) -> str | None:
    ep = record.endpoint
    if ep is None:
        return None
    if record.op == "accept" or (record.op == "bind" and ep.port == 0):
        # The port is not the program's choice.
        return f"{record.op} {ep.family}:{escape_text(ep.address)}"
    return f"{record.op} {endpoint_text(ep)}"


def endpoints(profile: Profile) -> set[str]:
    out: set[str] = set()
    for proc in profile.processes:
        for record in proc.network:
            key = _endpoint_key(record)
            if key is not None:
                out.add(key)
    return out


def diff(a: Profile, b: Profile) -> Drift:
    pa, pb, fa, fb, ea, eb = (
        programs(a),
        programs(b),
        files(a),
        files(b),
        endpoints(a),
        endpoints(b),
    )
    return Drift(
        programs_added=sorted(pb - pa), programs_removed=sorted(pa - pb),
        files_added=sorted(fb - fa), files_removed=sorted(fa - fb),
        endpoints_added=sorted(eb - ea), endpoints_removed=sorted(ea - eb),
    )  # fmt: skip


def render_drift(drift: Drift) -> str:
    lines: list[str] = []
    for title, added, removed in (
        ("programs", drift.programs_added, drift.programs_removed),
        ("files", drift.files_added, drift.files_removed),
        ("endpoints", drift.endpoints_added, drift.endpoints_removed),
    ):
        for item in added:
            lines.append(f"+ {title[:-1]} {item}")
        for item in removed:
            lines.append(f"- {title[:-1]} {item}")
    return "\n".join(lines) + ("\n" if lines else "no drift\n")
