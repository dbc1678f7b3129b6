"""The Profile: what a set of processes ran, touched and talked to.

Each type is defined once here, as a msgspec Struct; ``encode_profile``
gives deterministic JSON (the same events give byte-identical output), and
``render_text`` a human view of the same data.
"""

from __future__ import annotations

import msgspec

from agent.capture.events import Endpoint
from agent.capture.ledger import KindAccount
from agent.capture.loader import ProbeStatus

PROFILE_VERSION = 1


class ExecRecord(msgspec.Struct, frozen=True):
    """One exec attempt. ``error`` is the errno name of a failed one."""

    ts_ns: int
    filename: str
    argv: list[str]
    argv_truncated: bool
    error: str = ""


class FileRecord(msgspec.Struct, frozen=True):
    """Operations on one path, merged.

    ``op``: open, unlink, rmdir, rename, chmod or mkdir. For open, ``access``
    lists what the flags asked for: read, write, create (O_CREAT: the file
    may have existed), exclusive-create (O_CREAT|O_EXCL: it did not),
    truncate, append, directory. ``path`` is as the process gave it; a
    relative path is relative to the working directory, or ``fd:N/`` names
    the directory fd it was relative to. ``target`` is a rename's new name.
    """

    path: str
    op: str
    access: list[str]
    count: int
    first_ns: int
    target: str = ""
    mode: int | None = None
    error: str = ""


class NetRecord(msgspec.Struct, frozen=True):
    """A network operation on one endpoint, merged.

    ``op``: connect and accept name the peer, bind the local address,
    listen the address bound earlier on that socket (None if not seen).
    ``result`` is ``ok`` or ``in-progress`` (a non-blocking connect);
    failed attempts are kept apart, with ``error``.
    """

    op: str
    endpoint: Endpoint | None
    count: int
    first_ns: int
    result: str = "ok"
    error: str = ""


class ProcessProfile(msgspec.Struct, frozen=True):
    pid: int
    ppid: int | None
    comm: str
    exe: str
    argv: list[str]
    uid: int
    gid: int
    cgroup_id: int
    started_ns: int | None
    exited_ns: int | None
    exit_code: int | None
    exit_signal: int | None
    preexisting: bool
    execs: list[ExecRecord]
    files: list[FileRecord]
    failed_files: list[FileRecord]
    network: list[NetRecord]
    failed_network: list[NetRecord]
    syscalls: dict[str, int]
    evicted: dict[str, int]


class Profile(msgspec.Struct, frozen=True):
    """``complete`` is true only when every probe attached, every kind's
    books balance with no loss, and nothing was evicted."""

    version: int
    command: list[str]
    root_pid: int | None
    exit_status: int | None
    processes: list[ProcessProfile]
    evictions: dict[str, int]
    probes: list[ProbeStatus]
    accounting: dict[str, KindAccount]
    notes: list[str]
    complete: bool


def is_complete(profile: Profile) -> bool:
    return (
        all(p.attached for p in profile.probes)
        and all(a.balanced and a.lost_kernel == 0 and a.dropped_sink == 0
                for a in profile.accounting.values())
        and not any(profile.evictions.values())
    )  # fmt: skip


_encoder = msgspec.json.Encoder(order="deterministic")


def encode_profile(profile: Profile) -> bytes:
    """Deterministic JSON: struct fields in definition order, dict keys sorted."""
    return _encoder.encode(profile) + b"\n"


def decode_profile(data: bytes) -> Profile:
    return msgspec.json.decode(data, type=Profile)


def _exit_text(proc: ProcessProfile) -> str:
    if proc.exit_signal:
        return f"killed by signal {proc.exit_signal}"
    if proc.exit_code is not None:
        return f"exit {proc.exit_code}"
    if proc.exited_ns is not None:
        return "exited"
    return "running"


def render_text(profile: Profile) -> str:
    """A readable report: the process tree, then per process what it did."""
    lines: list[str] = []
    if profile.command:
        lines.append(f"command: {' '.join(profile.command)}")
    if profile.exit_status is not None:
        lines.append(f"exit status: {profile.exit_status}")
    # Processes are in start order. A process's parent is the latest earlier
    # process with its ppid: pids are reused, so a pid alone is ambiguous.
    latest: dict[int, int] = {}
    children: dict[int | None, list[int]] = {}
    for index, proc in enumerate(profile.processes):
        parent = latest.get(proc.ppid) if proc.ppid is not None else None
        children.setdefault(parent, []).append(index)
        latest[proc.pid] = index
    lines.append(f"processes: {len(profile.processes)}")

    def walk(proc: ProcessProfile, depth: int) -> None:
        pad = "  " * depth
        argv = " ".join(proc.argv) or proc.comm
        lines.append(f"{pad}- [{proc.pid}] {argv}  ({_exit_text(proc)})")
        for ex in proc.execs:
            if ex.error:
                lines.append(f"{pad}    exec FAILED {ex.filename}: {ex.error}")
        for f in proc.files:
            what = f.op + (f"({','.join(f.access)})" if f.access else "")
            target = f" -> {f.target}" if f.target else ""
            lines.append(f"{pad}    file {what} {f.path}{target}")
        for f in proc.failed_files:
            lines.append(f"{pad}    file {f.op} FAILED {f.path}: {f.error}")
        for n in proc.network:
            ep = n.endpoint.render() if n.endpoint else "?"
            lines.append(
                f"{pad}    net {n.op} {ep}" + ("" if n.result == "ok" else f" ({n.result})")
            )
        for n in proc.failed_network:
            ep = n.endpoint.render() if n.endpoint else "?"
            lines.append(f"{pad}    net {n.op} FAILED {ep}: {n.error}")
        if proc.syscalls:
            top = sorted(proc.syscalls.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
            lines.append(f"{pad}    syscalls: " + ", ".join(f"{k}={v}" for k, v in top))

    def walk_tree(index: int, depth: int) -> None:
        walk(profile.processes[index], depth)
        for child in children.get(index, []):
            walk_tree(child, depth + 1)

    for root in children.get(None, []):
        walk_tree(root, 0)
    lines.append("capture:")
    for probe in profile.probes:
        if not probe.attached:
            lines.append(f"  probe {probe.name} MISSING: {probe.reason}")
    for kind, acct in profile.accounting.items():
        lines.append(
            f"  {kind}: generated={acct.generated} delivered={acct.delivered}"
            f" lost={acct.lost_kernel + acct.decode_errors + acct.dropped_sink}"
            f"{'' if acct.balanced else ' UNBALANCED'}"
        )
    for what, count in sorted(profile.evictions.items()):
        if count:
            lines.append(f"  evicted {what}: {count}")
    for note in profile.notes:
        lines.append(f"  note: {note}")
    lines.append(f"complete: {'yes' if profile.complete else 'no'}")
    return "\n".join(lines) + "\n"
