"""The Profile: what a set of processes ran, touched and talked to.

Each type is defined once here, as a msgspec Struct; ``encode_profile``
gives deterministic JSON (the same events give byte-identical output), and
``render_text`` a human view of the same data.

Host text is attacker-chosen: JSON keeps bytes that are not UTF-8 in the
escape form of :mod:`agent.safetext` (each object names such fields in its
``escaped`` list, and :func:`decode_profile` restores them); the text view
escapes every field as ``ls -b`` does and shell-quotes argv, so no file name
or argument can draw a line of its own.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

from agent.capture.events import Endpoint
from agent.capture.ledger import KindAccount
from agent.capture.loader import ProbeStatus
from agent.safetext import (
    ESCAPED_KEY,
    escape_fields,
    escape_text,
    restore_json,
    shell_join,
    terminal_safe_json,
    text_field,
)

PROFILE_VERSION = 1


class ExecRecord(msgspec.Struct, frozen=True):
    """One exec attempt. ``error`` is the errno name of a failed one.

    ``argv_truncated`` if anything was cut: ``args_cut`` lists the entries
    cut short, ``filename_cut`` the filename, ``argv_more`` says there were
    more entries than were captured.
    """

    ts_ns: int
    filename: str
    argv: list[str]
    argv_truncated: bool
    error: str = ""
    filename_cut: bool = False
    args_cut: list[int] = []
    argv_more: bool = False


class FileRecord(msgspec.Struct, frozen=True):
    """Operations on one path, merged.

    ``op``: open, unlink, rmdir, rename, chmod or mkdir. For open, ``access``
    lists what the flags asked for: read, write, create (O_CREAT: the file
    may have existed), exclusive-create (O_CREAT|O_EXCL: it did not),
    truncate, append, directory. ``path`` is the absolute path the kernel
    used when it was resolved (the file an open installed, else the cwd or
    dirfd joined with the name); ``passed`` is then the name as the process
    gave it, when that differs (the first such name, if several led to the
    same file). Unresolved, ``path`` is as the process gave it: a relative
    path is relative to the working directory, or ``fd:N/`` names the
    directory fd it was relative to. ``target``/``target_passed``: a
    rename's new name, the same way. ``path_cut``/``target_cut``: the path
    shown may have been cut short. ``path_flags``/``target_flags``: what
    was doubtful about resolving it (``cut``, ``lexical``: a ``..`` kept
    after a name, ``no_layout``, ``off``... see
    :data:`agent.capture.kinds.PATH_FLAG_NAMES`); empty when exact.
    """

    path: str
    op: str
    access: list[str]
    count: int
    first_ns: int
    target: str = ""
    mode: int | None = None
    error: str = ""
    path_cut: bool = False
    target_cut: bool = False
    passed: str = ""
    target_passed: str = ""
    path_flags: list[str] = []
    target_flags: list[str] = []


def _file_path_text(path: str, cut: bool, passed: str, flags: list[str]) -> str:
    """A profile file path as text: the path, ``(as NAME)`` when the
    process named it otherwise, ``[flags]`` when resolving it was doubtful."""
    text = text_field(path, cut=cut)
    if passed:
        text += f" (as {text_field(passed)})"
    if flags:
        text += f" [{','.join(flags)}]"
    return text


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
    argv_cut: list[int] = []
    argv_more: bool = False


Redaction: TypeAlias = Literal["applied", "off"]
"""Whether the profile's text went through redaction. ``off`` only with
``tracehound profile --no-redact``, and the profile says so."""


class Profile(msgspec.Struct, frozen=True):
    """``complete`` is true only when every probe attached, every kind's
    books balance with no loss, and nothing was evicted. ``redaction``
    says whether secrets were redacted (always, unless ``--no-redact``)."""

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
    redaction: Redaction = "applied"


def is_complete(profile: Profile) -> bool:
    return (
        all(p.attached for p in profile.probes)
        and all(a.balanced and a.lost == 0 for a in profile.accounting.values())
        and not any(profile.evictions.values())
    )  # fmt: skip


_encoder: Final = msgspec.json.Encoder(order="deterministic")
_plain_encoder: Final = msgspec.json.Encoder()
_ESCAPED_MARK: Final = f'"{ESCAPED_KEY}":'.encode()


def encode_profile(profile: Profile) -> bytes:
    """Deterministic JSON: struct fields in definition order, dict keys sorted.

    Text holding bytes that are not UTF-8 is written in escape form and named
    in its object's ``escaped`` list (agent.safetext); the output is
    terminal-safe. Never raises for any text the capture can hold.
    """
    try:
        data = _encoder.encode(profile)
    except UnicodeEncodeError:
        # to_builtins keeps struct fields in order and sorts dict keys, as
        # the encoder above does; escape_fields appends the escaped lists.
        plain = msgspec.to_builtins(profile, order="deterministic")
        data = _plain_encoder.encode(escape_fields(plain))
    return terminal_safe_json(data) + b"\n"


def decode_profile(data: bytes) -> Profile:
    """Read a profile back, escaped fields restored to their original text.

    Raises msgspec.DecodeError (not JSON) or msgspec.ValidationError (not a
    profile).
    """
    if _ESCAPED_MARK not in data:
        return msgspec.json.decode(data, type=Profile)
    return msgspec.convert(restore_json(msgspec.json.decode(data)), Profile)


def _exit_text(proc: ProcessProfile) -> str:
    if proc.exit_signal:
        return f"killed by signal {proc.exit_signal}"
    if proc.exit_code is not None:
        return f"exit {proc.exit_code}"
    if proc.exited_ns is not None:
        return "exited"
    return "running"


def endpoint_text(endpoint: Endpoint | None) -> str:
    """An endpoint as one text token: a UNIX path escaped like any host text."""
    if endpoint is None:
        return "?"
    if endpoint.family in ("ipv4", "ipv6"):
        return endpoint.render()
    if endpoint.family == "unix":
        return f"unix:{escape_text(endpoint.address)}"
    return f"{endpoint.family}:{escape_text(endpoint.address)}"


def render_text(profile: Profile) -> str:
    """A readable report: the process tree, then per process what it did.

    Every field from the host is one escaped token (agent.safetext): argv
    shell-quoted, paths and names escaped as ``ls -b`` does, text the
    capture cut followed by ``[cut]``.
    """
    lines: list[str] = []
    if profile.redaction == "off":
        lines.append("redaction: OFF (--no-redact): secrets are shown as captured")
    if profile.command:
        lines.append(f"command: {shell_join(profile.command)}")
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
        if proc.argv:
            argv = shell_join(proc.argv, cut=proc.argv_cut, more=proc.argv_more)
        else:
            argv = escape_text(proc.comm)
        lines.append(f"{pad}- [{proc.pid}] {argv}  ({_exit_text(proc)})")
        for ex in proc.execs:
            if ex.error:
                name = text_field(ex.filename, cut=ex.filename_cut)
                lines.append(f"{pad}    exec FAILED {name}: {ex.error}")
        for f in proc.files:
            what = f.op + (f"({','.join(f.access)})" if f.access else "")
            path = _file_path_text(f.path, f.path_cut, f.passed, f.path_flags)
            target = (
                " -> " + _file_path_text(f.target, f.target_cut, f.target_passed, f.target_flags)
                if f.target
                else ""
            )
            lines.append(f"{pad}    file {what} {path}{target}")
        for f in proc.failed_files:
            path = _file_path_text(f.path, f.path_cut, f.passed, f.path_flags)
            lines.append(f"{pad}    file {f.op} FAILED {path}: {f.error}")
        for n in proc.network:
            ep = endpoint_text(n.endpoint)
            lines.append(
                f"{pad}    net {n.op} {ep}" + ("" if n.result == "ok" else f" ({n.result})")
            )
        for n in proc.failed_network:
            lines.append(f"{pad}    net {n.op} FAILED {endpoint_text(n.endpoint)}: {n.error}")
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
            f" lost={acct.lost}"
            f"{'' if acct.balanced else ' UNBALANCED'}"
        )
    for what, count in sorted(profile.evictions.items()):
        if count:
            lines.append(f"  evicted {what}: {count}")
    for note in profile.notes:
        lines.append(f"  note: {note}")  # our own words, not host text
    lines.append(f"complete: {'yes' if profile.complete else 'no'}")
    return "\n".join(lines) + "\n"
