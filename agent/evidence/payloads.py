"""The evidence payloads: one msgspec Struct per record kind, the ``data`` of a CloudEvent.

Defined here, once: :func:`encode_payload` turns one into its canonical
bytes, and readers (OCSF, the API) decode a record's ``data`` back into the
type its ``type`` names (:mod:`agent.evidence.record_types`). The mapper
fills the rarer ones; for a kernel event's it writes the same bytes without
building the Struct (:mod:`agent.evidence.payload_bytes`, held
byte-identical to :func:`encode_payload` by its tests).

Canonical form. The bytes are RFC 8785 (JCS) for this value domain, made by
``msgspec.json.Encoder(order="sorted")`` (fields in code-point order, which
is UTF-16 order for the ASCII field names used here; the escapes JCS
prescribes; integers in decimal). The domain is what the types allow plus
what the mapper checks before it builds a payload: text without lone
surrogates (text holding raw bytes is put in escape form first, and the
field named in ``escaped``), integers within +-(2**53 - 1) (wider kernel
values are written as decimal strings), no floats, and ``dict`` values
(configuration, summaries) held to :func:`~agent.evidence.canonical.check_plain`.
``tests/evidence/test_canonical_encoder.py`` proves the bytes identical to
the ``rfc8785`` package's over that domain.

Every field of a payload is written, ``None`` as ``null`` (a reader sees
"not known" spelled out), except the few with a default: ``escaped`` (only
when something is escaped), a file or net record's fold fields (``count``
and ``last_ts_ns``, only when events were folded) and a loss record's
``cause``. That keeps an unfolded, valid-UTF-8 record's bytes what they were
before these types existed (the golden-log test holds them to it).
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

from agent.capture.container_id import Container
from agent.safetext import escape_fields

__all__ = [
    "AnchorData",
    "AppData",
    "CallData",
    "ConfigData",
    "DegradedData",
    "EndpointData",
    "ExecData",
    "ExitData",
    "FileData",
    "ForkData",
    "LossData",
    "MissingProbe",
    "NetData",
    "Payload",
    "RecoveredData",
    "SeenData",
    "StartData",
    "StopData",
    "SyscallsData",
    "UringData",
    "encode_payload",
]


class _Payload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of every payload: ``escaped`` names the fields in escape form."""

    escaped: list[str] = []


class _Kernel(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The header every record of a kernel event carries.

    ``cgroup_id`` and ``ts_ns`` are decimal strings: both pass 2**53.
    ``cgroup`` is that cgroup's path from the cgroup v2 root (redacted like
    any path), null when it could not be resolved (the cgroup was removed
    before it was looked up, no cgroup2 mount, or no resolver); ``container``
    what the path names (:mod:`agent.capture.container_id`), null when none.
    ``redacted`` lists the redaction rules that changed the record.
    """

    pid: int
    tid: int
    uid: int
    gid: int
    cgroup_id: str
    cgroup: str | None
    container: Container | None
    comm: str
    ts_ns: str
    redacted: list[str]


class ExecData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.exec.v1``: an execve/execveat and its result (0 or -errno).

    ``ppid``, ``euid``, ``egid``, ``loginuid`` (4294967295: no login
    session) are None when not resolved (enrichment off); ``cwd`` and
    ``exe`` are the absolute paths the kernel resolved ("" when not), with
    how their walk ended in ``cwd_flags``/``exe_flags`` ([] when whole);
    ``fileless``: the executable has no link on any filesystem (memfd,
    O_TMPFILE, deleted), ``exe_memfd``: it is a memfd; ``unresolved`` names
    what could not be read (filename, argv, ids, cwd, exe).
    """

    ret: int
    filename: str
    argv: list[str]
    argv_truncated: bool
    args_cut: list[int]
    argv_more: bool
    filename_cut: bool
    execveat: bool
    ppid: int | None
    euid: int | None
    egid: int | None
    loginuid: int | None
    cwd: str
    cwd_flags: list[str]
    exe: str
    exe_flags: list[str]
    fileless: bool
    exe_memfd: bool
    unresolved: list[str]


class ForkData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.fork.v1``: a new process; the header is the parent's."""

    child_pid: int
    clone_flags: int | str


class ExitData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.exit.v1``: ``exit_code`` or ``signal``, each None when unknown."""

    exit_code: int | None
    signal: int | None


class FileData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``file.<op>.v1``. ``dfd2``/``path2``/``path2_cut`` are a rename's or
    link's new name (a symlink's new link, its ``path`` being the link's
    text), else None. ``path`` is empty for an operation on an open file
    (fchmod, ftruncate, fchown), whose fd is ``dfd``.

    ``path`` is the name as the process passed it; ``abs_path`` the
    absolute path the kernel used ("" when not resolved), ``abs_flags``
    how it was found (``PATH_FLAG_NAMES`` of :mod:`agent.capture.kinds`:
    ``joined``, ``cut``, ``lexical``, ``no_layout``, ``off``...; [] when
    read whole from the file itself). ``abs_path2``/``abs2_flags``: the
    rename's, link's or symlink's new name's, else None. ``owner``/``group``:
    the ids a chown asked for, each left out when unchanged (-1).

    Folded (``count`` > 1): ``count`` identical events, the first at
    ``ts_ns``, the last at ``last_ts_ns``.
    """

    op: str
    syscall: str
    ret: int
    dfd: int
    path: str
    path_cut: bool
    dfd2: int | None
    path2: str | None
    path2_cut: bool | None
    flags: int
    mode: int
    abs_path: str
    abs_flags: list[str]
    abs_path2: str | None
    abs2_flags: list[str] | None
    owner: int | None = None
    group: int | None = None
    count: int = 1
    last_ts_ns: str | None = None


class EndpointData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """A socket address: ``family`` ipv4, ipv6, unix or other."""

    family: str
    address: str
    port: int


class NetData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``network.<op>.v1``; ``backlog`` only for listen. Folded like :class:`FileData`.

    ``proto``: the socket's protocol (tcp, udp, udplite), left out when not
    known. UDP sends (``network.sendto/sendmsg/sendmmsg.v1``): ``endpoint``
    is the destination, ``messages`` the datagrams of the call sent to it
    (a sendmmsg makes one record per run of messages to one destination,
    among its first 8; ``more_messages``: it sent more, not looked at),
    ``peer_from_socket``: no address was passed, the destination is the
    connected socket's peer. ``network.connect_result.v1``: how a connect
    that returned EINPROGRESS ended, ``outcome`` established, refused or
    failed; ``ret`` 0 or -errno (0 with failed: not known). ``unchecked``:
    struct enrichment was off, so a send was not checked to be UDP, or a
    failed connect's error was not read.
    """

    op: str
    ret: int
    fd: int
    endpoint: EndpointData | None
    backlog: int | None
    count: int = 1
    last_ts_ns: str | None = None
    proto: str | None = None
    messages: int | None = None
    more_messages: bool = False
    peer_from_socket: bool = False
    outcome: str | None = None
    unchecked: bool = False


class UringData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``uring.op.v1``: one completion of an io_uring request, with what its
    submission said (:class:`agent.capture.events.UringEvent`).

    ``user_data`` and ``complete_ns`` are decimal strings (u64s). Path ops:
    ``path`` as passed, relative to ``dfd``; ``path2`` a rename's or link's
    new name (None for other ops). ``abs_path``: an openat's installed file
    resolved in the kernel, None if the op has none; ``abs_flags`` how the
    walk ended (names, as a file record's; [] whole). ``endpoint``: a connect's or an
    addressed send's destination. ``unpaired``: no submission was seen,
    only the completion's facts are known and the header is the completing
    task's. ``no_layout``: enrichment off, nothing read from the request.
    """

    op: str
    opcode: int
    res: int
    user_data: str
    complete_ns: str
    fd: int
    dfd: int | None
    path: str | None
    path_cut: bool | None
    dfd2: int | None
    path2: str | None
    path2_cut: bool | None
    abs_path: str | None
    abs_flags: list[str] | None
    op_flags: int | str
    mode: int
    cflags: int
    endpoint: EndpointData | None
    unpaired: bool
    sqpoll: bool
    fixed_file: bool
    direct: bool
    no_layout: bool


class CallData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """A security-relevant call (``process.credentials.v1``,
    ``process.ptrace.v1``, ``process.signal.v1``, ``process.namespace.v1``,
    ``process.memfd.v1``, ``kernel.module.v1``, ``kernel.bpf.v1``,
    ``fs.mount.v1``; agent.capture.calls names each call's fields).

    ``args``: the call's arguments by name (a uid or gid of -1: unchanged;
    pointers past 2**53 as decimal strings). The strings it took, each
    written only for the calls that have it: ``source``, ``target`` and
    ``fstype`` (mount, umount), ``params`` (init_module, finit_module),
    ``name`` (delete_module, memfd_create); ``text_cut`` names those the
    capture may have cut, ``unreadable`` the arguments and strings whose
    memory could not be read. ``ids_before``/``ids_after``: the caller's
    uid, euid, suid, gid, egid, sgid before and (credential changes only)
    after the call; ``caps_before``/``caps_after``: its effective,
    permitted and inheritable capability masks; None when not resolved (or,
    for ``*_after``, not a credential change).
    """

    op: str
    syscall: str
    ret: int
    args: dict[str, int | str]
    text_cut: list[str]
    unreadable: list[str]
    ids_before: dict[str, int] | None
    ids_after: dict[str, int] | None
    caps_before: dict[str, int | str] | None
    caps_after: dict[str, int | str] | None
    source: str | None = None
    target: str | None = None
    fstype: str | None = None
    params: str | None = None
    name: str | None = None


class SyscallsData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.syscalls.v1``: cumulative counts (decimal strings past 2**53)."""

    pid: int
    counts: dict[str, int | str]
    final: bool


class SeenData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.seen.v1``: a process known from /proc."""

    pid: int
    ppid: int
    comm: str
    exe: str
    cmdline: list[str]
    uid: int
    user: str
    start_time_ms: int | None
    preexisting: bool
    redacted: list[str]


class AnchorData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.anchor.v1``: where the kernel clock meets the wall clock."""

    boot_id: str
    wall_ns: str
    boottime_ns: str


class LossData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.loss.v1``: events lost by kind and stage in a window."""

    counts: dict[str, dict[str, int]]
    total: int
    window_start_ns: str
    window_end_ns: str
    window_start: str
    window_end: str
    cause: dict[str, Any] | None = None


class MissingProbe(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One probe that did not attach, and why."""

    name: str
    kind: str
    reason: str


class DegradedData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.degraded.v1``: which probes are missing."""

    missing: list[MissingProbe]
    attached: int
    total: int


class StartData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.start.v1``: the configuration capture started with."""

    config: dict[str, Any]


class ConfigData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.config.v1``: the configuration changed."""

    config: dict[str, Any]


class RecoveredData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.recovered.v1``: what the log showed of a run that never stopped."""

    found: dict[str, Any]


class StopData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``capture.stop.v1``: the run's summary and the redaction counters."""

    summary: dict[str, Any]
    redaction: dict[str, Any]


class AppData(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``app.event.v1``: an event a local producer appended (``POST
    /v1/events``, ``tracehound mark``), in its own words, beside the kernel's.

    Who sent it, as the kernel vouches: ``pid``, ``uid``, ``gid``
    (``SO_PEERCRED``); what the producer's process was when it arrived,
    read from /proc: ``exe``, ``comm``, ``cgroup_id`` and the ``cgroup``
    and ``container`` it names (as a kernel record's header has them);
    ``peer_gone``: it had exited by then, and those are empty (never
    guessed from whoever holds the pid now). What it said: ``kind`` (a name
    such as ``mark`` or ``deploy.start``), ``message`` and ``data`` (plain
    JSON). Every text in it, ``data``'s keys and strings included, went
    through the same redaction as the kernel's records; ``redacted`` lists
    the rules that changed it. ``ts_ns``: when it arrived (kernel
    boot-time ns, a decimal string, as a kernel record's).
    """

    pid: int
    uid: int
    gid: int
    comm: str
    exe: str
    peer_gone: bool
    cgroup_id: str
    cgroup: str | None
    container: Container | None
    ts_ns: str
    kind: str
    message: str
    data: dict[str, Any]
    redacted: list[str]


Payload: TypeAlias = (
    CallData
    | ExecData
    | ForkData
    | ExitData
    | FileData
    | NetData
    | UringData
    | SyscallsData
    | SeenData
    | AnchorData
    | LossData
    | DegradedData
    | StartData
    | ConfigData
    | RecoveredData
    | StopData
    | AppData
)

_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def encode_payload(payload: Payload) -> tuple[Payload, bytes]:
    """The payload (in escape form if it held raw bytes) and its canonical bytes.

    Text holding bytes that are not UTF-8 (lone surrogates, as the wire
    decoder hands them over) has no JSON form: those fields are written in
    escape form and named in ``escaped`` (:mod:`agent.safetext`), and the
    payload returned is that escaped copy. Anything else outside the domain
    raises (:class:`msgspec.EncodeError`, :class:`TypeError`): it is
    refused, never re-encoded some other way.
    """
    try:
        return payload, _ENCODER.encode(payload)
    except UnicodeEncodeError:
        pass
    plain = escape_fields(msgspec.to_builtins(payload))
    escaped = msgspec.convert(plain, type(payload))
    return escaped, _ENCODER.encode(escaped)
