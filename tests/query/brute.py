"""A brute-force answer to a filter, written from EventFilter's docstring
words alone (no code shared with agent.query), for tests to compare with."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from pathlib import Path
from typing import Any

from agent.evidence.types import TYPE_PREFIX
from agent.query.filter import EventFilter
from agent.safetext import unescape


def logged(state: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every CloudEvent of the log with its seq (complete lines only)."""
    out = []
    for segment in sorted((state / "segments").glob("*.ndjson")):
        for line in segment.read_bytes().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # the writer's line in progress
            record = json.loads(line)
            if record["type"].startswith(TYPE_PREFIX):
                out.append((record["seq"], record["body"]))
    return out


def text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if not isinstance(value, str):
        return None
    return unescape(value) if name in (obj.get("escaped") or []) else value


def ns(when: str) -> int:
    from datetime import datetime

    head, _, frac = when.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(head + "+00:00").timestamp())
    return seconds * 10**9 + int(frac.ljust(9, "0"))


def brute(state: Path, flt: EventFilter) -> list[int]:
    """The seqs of the records matching ``flt``, from its docstring's words."""
    return [seq for seq, _ in brute_events(state, flt)]


def brute_events(
    source: Path | list[tuple[int, dict[str, Any]]], flt: EventFilter
) -> list[tuple[int, dict[str, Any]]]:
    """The records matching ``flt`` (seq, CloudEvent), in log order, of the
    state directory ``source`` or of records :func:`logged` read before."""
    tree = {flt.pid}
    exe: dict[int, str] = {}
    out: list[tuple[int, dict[str, Any]]] = []
    for seq, event in logged(source) if isinstance(source, Path) else source:
        data = event.get("data") or {}
        pid = data.get("pid")
        kind = event["type"]
        if kind.endswith("process.fork.v1"):
            if pid in tree:
                tree.add(data["child_pid"])
            if pid in exe:
                exe[data["child_pid"]] = exe[pid]
        if kind.endswith("process.exec.v1") and data.get("ret") == 0:
            exe[pid] = text(data, "exe") or text(data, "filename") or ""
        if kind.endswith("process.seen.v1") and text(data, "exe"):
            exe[pid] = str(text(data, "exe"))
        when = ns(event["time"])
        paths = [
            text(data, a) or text(data, b)
            for a, b in (("abs_path", "path"), ("abs_path2", "path2"), ("exe", "filename"))
        ]
        endpoint = data.get("endpoint") or {}
        container = (data.get("container") or {}).get("id") or ""
        checks = [
            not flt.types or kind in flt.types,
            flt.since_ns is None or when >= flt.since_ns,
            flt.until_ns is None or when < flt.until_ns,
            flt.pid is None or (pid in tree if flt.tree else pid == flt.pid),
            flt.comm is None or text(data, "comm") == flt.comm,
            flt.exe is None or exe.get(pid) == flt.exe,
            flt.path is None or any(p and fnmatch.fnmatchcase(p, flt.path) for p in paths),
            flt.container is None or container.startswith(flt.container),
            flt.uid is None or data.get("uid") == flt.uid,
            flt.remote is None
            or (
                endpoint.get("family") in ("ipv4", "ipv6")
                and (flt.remote.port is None or endpoint["port"] == flt.remote.port)
                and (
                    flt.remote.network is None
                    or ipaddress.ip_address(endpoint["address"])
                    in ipaddress.ip_network(flt.remote.network)
                )
            ),
        ]
        if all(checks):
            out.append((seq, event))
    return out
