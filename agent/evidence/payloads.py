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

from agent.safetext import escape_fields

__all__ = [
    "AnchorData",
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
    "encode_payload",
]


class _Payload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of every payload: ``escaped`` names the fields in escape form."""

    escaped: list[str] = []


class _Kernel(_Payload, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The header every record of a kernel event carries.

    ``cgroup_id`` and ``ts_ns`` are decimal strings: both pass 2**53.
    ``redacted`` lists the redaction rules that changed the record.
    """

    pid: int
    tid: int
    uid: int
    gid: int
    cgroup_id: str
    comm: str
    ts_ns: str
    redacted: list[str]


class ExecData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.exec.v1``: an execve/execveat and its result (0 or -errno)."""

    ret: int
    filename: str
    argv: list[str]
    argv_truncated: bool
    args_cut: list[int]
    argv_more: bool
    filename_cut: bool
    execveat: bool


class ForkData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.fork.v1``: a new process; the header is the parent's."""

    child_pid: int
    clone_flags: int | str


class ExitData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``process.exit.v1``: ``exit_code`` or ``signal``, each None when unknown."""

    exit_code: int | None
    signal: int | None


class FileData(_Kernel, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``file.<op>.v1``. ``dfd2``/``path2``/``path2_cut`` are a rename's, else None.

    ``path`` is the name as the process passed it; ``abs_path`` the
    absolute path the kernel used ("" when not resolved), ``abs_flags``
    how it was found (``PATH_FLAG_NAMES`` of :mod:`agent.capture.kinds`:
    ``joined``, ``cut``, ``lexical``, ``no_layout``, ``off``...; [] when
    read whole from the file itself). ``abs_path2``/``abs2_flags``: the
    rename target's, else None. ``owner``/``group``: a chown's new ids,
    left out when unchanged.

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
    """``network.<op>.v1``; ``backlog`` only for listen. Folded like :class:`FileData`."""

    op: str
    ret: int
    fd: int
    endpoint: EndpointData | None
    backlog: int | None
    count: int = 1
    last_ts_ns: str | None = None


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


Payload: TypeAlias = (
    ExecData
    | ForkData
    | ExitData
    | FileData
    | NetData
    | SyscallsData
    | SeenData
    | AnchorData
    | LossData
    | DegradedData
    | StartData
    | ConfigData
    | RecoveredData
    | StopData
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
