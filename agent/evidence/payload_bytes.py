"""The canonical bytes of the kernel payloads, composed without building them.

Every kernel event becomes a record; building its payload Struct
(:mod:`agent.evidence.payloads`) with twenty keyword arguments and encoding
it with sorted keys costs more than everything else the mapper does for it
but the hashes. The payload's bytes are a fixed sequence of members, so for
the common shapes they are composed here instead: one ``%`` format per kind
whose constant parts are the member names in key order, with the values put
in as msgspec writes them (a string by the same encoder, an integer in
decimal, ``true``/``false``/``null``).

What is composed is exactly what :func:`~agent.evidence.payloads.encode_payload`
writes for the Struct the mapper would have built from the same values: the
Struct stays the type's one definition (readers decode into it), and
``tests/evidence/test_payload_bytes.py`` holds the two byte-identical over
random events and values, as ``test_canonical_encoder.py`` holds both to
RFC 8785. Each function returns None for a shape it does not compose: text
holding raw bytes (lone surrogates: their fields need the escape form and an
``escaped`` list) or a kernel integer outside what the Struct path accepts.
The mapper then builds the Struct, which escapes or refuses as it always did.

The values given are the ones already redacted; the event supplies the rest.
Pure functions, no state.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import msgspec

from agent.capture.container_id import Container
from agent.capture.events import Endpoint, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent
from agent.capture.kinds import PATH_FLAG_NAMES, SEND_OPS, TWO_PATH_OPS, path_flag_names
from agent.evidence.canonical import MAX_SAFE_INTEGER
from agent.redact.events import RedactedFile

__all__ = [
    "NO_CGROUP",
    "Cgroup",
    "cgroup_bytes",
    "exec_bytes",
    "exit_bytes",
    "file_bytes",
    "fork_bytes",
    "json_text",
    "net_bytes",
    "redacted_bytes",
]

_ENCODER: Final = msgspec.json.Encoder(order="sorted")
json_text: Final = _ENCODER.encode
"""A value as the payload encoder writes it (raises UnicodeEncodeError for a
lone surrogate)."""

_BOOL: Final = (b"false", b"true")
_NULL: Final = b"null"

Cgroup: TypeAlias = tuple[bytes, bytes]
"""The ``cgroup`` and ``container`` members' values, as JSON: made once per
cgroup id by :func:`cgroup_bytes` (the mapper keeps them)."""
NO_CGROUP: Final[Cgroup] = (_NULL, _NULL)


def cgroup_bytes(path: str | None, container: Container | None) -> Cgroup | None:
    """The JSON of a cgroup path (already redacted) and its container, or
    None for a path holding raw bytes (the Struct path escapes it)."""
    try:
        return (
            _NULL if path is None else json_text(path),
            _NULL if container is None else json_text(container),
        )
    except UnicodeEncodeError:
        return None


# Member names in code-point order (RFC 8785 for these ASCII names), the
# defaults that the Struct leaves out (count, last_ts_ns, escaped) spliced in
# where they sort when present.
_FILE: Final = (
    b'{"abs2_flags":%s,"abs_flags":%s,"abs_path":%s,"abs_path2":%s,"cgroup":%s,"cgroup_id":"%d",'
    b'"comm":%s,"container":%s%s,"dfd":%d,"dfd2":%s,"flags":%d,"gid":%d%s%s,"mode":%d,"op":%s%s,'
    b'"path":%s,"path2":%s,"path2_cut":%s,"path_cut":%s,"pid":%d,"redacted":%s,"ret":%d,'
    b'"syscall":%s,"tid":%d,"ts_ns":"%d","uid":%d}'
)
_EXEC: Final = (
    b'{"args_cut":%s,"argv":%s,"argv_more":%s,"argv_truncated":%s,"cgroup":%s,"cgroup_id":"%d",'
    b'"comm":%s,"container":%s,"cwd":%s,"cwd_flags":%s,"egid":%s,"euid":%s,"exe":%s,'
    b'"exe_flags":%s,"exe_memfd":%s,"execveat":%s,"fileless":%s,"filename":%s,'
    b'"filename_cut":%s,"gid":%d,"loginuid":%s,"pid":%d,"ppid":%s,"redacted":%s,"ret":%d,'
    b'"tid":%d,"ts_ns":"%d","uid":%d,"unresolved":%s}'
)
_FORK: Final = (
    b'{"cgroup":%s,"cgroup_id":"%d","child_pid":%d,"clone_flags":%s,"comm":%s,"container":%s,'
    b'"gid":%d,"pid":%d,'
    b'"redacted":%s,"tid":%d,"ts_ns":"%d","uid":%d}'
)
_EXIT: Final = (
    b'{"cgroup":%s,"cgroup_id":"%d","comm":%s,"container":%s,"exit_code":%s,"gid":%d,"pid":%d,"redacted":%s,"signal":%s,'
    b'"tid":%d,"ts_ns":"%d","uid":%d}'
)
_NET: Final = (
    b'{"backlog":%s,"cgroup":%s,"cgroup_id":"%d","comm":%s,"container":%s%s,"endpoint":%s,'
    b'"fd":%d,"gid":%d%s%s%s,"op":%s%s%s,'
    b'"pid":%d%s,"redacted":%s,"ret":%d,"tid":%d,"ts_ns":"%d","uid":%d%s}'
)
_ENDPOINT: Final = b'{"address":%s,"family":%s,"port":%d}'
# The JSON of the commonest operation and syscall names, made once.
_OPS: Final = {
    name: json_text(name)
    for name in ("open", "openat", "openat2", "creat", "unlink", "unlinkat", "rename", "renameat",
                 "renameat2", "mkdir", "mkdirat", "rmdir", "chmod", "fchmodat", "connect",
                 "accept", "accept4", "bind", "listen", "sendto", "sendmsg", "sendmmsg",
                 "connect_result", "tcp", "udp", "udplite", "established", "refused", "failed")
}  # fmt: skip


def redacted_bytes(fired: tuple[str, ...]) -> bytes:
    """The ``redacted`` member's value: the rules that fired, as a JSON array."""
    return b"[]" if not fired else json_text(fired)


def _safe(value: int) -> bool:
    return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def _folded(count: int, last_ts_ns: int) -> tuple[bytes, bytes]:
    """The ``count`` and ``last_ts_ns`` members, each empty when the Struct leaves it out."""
    if count == 1:
        return b"", b""
    return b',"count":%d' % count, b',"last_ts_ns":"%d"' % last_ts_ns if count > 1 else b""


#: Every combination of the known resolution flags, as its JSON array of
#: names (1024 small arrays, made once).
_FLAG_NAMES: Final = {
    flags: json_text(path_flag_names(flags)) for flags in range(2 * max(PATH_FLAG_NAMES))
}


def _flag_names(flags: int) -> bytes:
    """A path's resolution flags as a JSON array of names."""
    return _FLAG_NAMES.get(flags) or json_text(path_flag_names(flags))


def _id_member(name: bytes, value: int) -> bytes:
    """An ``owner``/``group`` member, empty when unchanged (-1)."""
    return b"" if value == -1 else b',"%s":%d' % (name, value)


def file_bytes(
    event: FileEvent, op: str, r: RedactedFile, cgroup: Cgroup = NO_CGROUP
) -> bytes | None:
    """A :class:`~agent.evidence.payloads.FileData`'s bytes (``op`` as typed:
    ``rmdir`` for a directory's unlink), from the event and its redacted
    text ``r``, or None (see the module)."""
    ret = event.ret
    if not -MAX_SAFE_INTEGER <= ret <= MAX_SAFE_INTEGER:
        return None
    owner, group = event.owner, event.group
    if not (-1 <= owner <= MAX_SAFE_INTEGER and -1 <= group <= MAX_SAFE_INTEGER):
        return None
    try:
        rename = op in TWO_PATH_OPS
        count, last = (b"", b"") if event.count == 1 else _folded(event.count, event.last_ts_ns)
        path = json_text(r.path)
        return _FILE % (
            _flag_names(event.abs2_flags) if rename else _NULL,
            _flag_names(event.abs_flags),
            path if r.abs_path == r.path else json_text(r.abs_path),
            json_text(r.abs_path2) if rename else _NULL,
            cgroup[0],
            event.cgroup_id,
            json_text(r.comm),
            cgroup[1],
            count,
            event.dfd,
            b"%d" % event.dfd2 if rename else _NULL,
            event.flags,
            event.gid,
            _id_member(b"group", group) if group != -1 else b"",
            last,
            event.mode,
            _OPS.get(op) or json_text(op),
            _id_member(b"owner", owner) if owner != -1 else b"",
            path,
            json_text(r.path2) if rename else _NULL,
            _BOOL[bool(event.path2_cut)] if rename else _NULL,
            b"true" if event.path_cut else b"false",
            event.pid,
            redacted_bytes(r.fired),
            ret,
            _OPS.get(event.syscall) or json_text(event.syscall),
            event.tid,
            event.ts_ns,
            event.uid,
        )
    except UnicodeEncodeError:
        return None


def _opt_int(value: int | None) -> bytes:
    return _NULL if value is None else b"%d" % value


def exec_bytes(
    event: ExecEvent,
    comm: str,
    filename: str,
    argv: tuple[str, ...],
    cwd: str,
    exe: str,
    fired: tuple[str, ...],
    cgroup: Cgroup = NO_CGROUP,
) -> bytes | None:
    """An :class:`~agent.evidence.payloads.ExecData`'s bytes, or None."""
    ret = event.ret
    if not _safe(ret):
        return None
    try:
        return _EXEC % (
            json_text(event.args_cut),
            json_text(argv),
            _BOOL[bool(event.argv_more)],
            _BOOL[bool(event.argv_truncated)],
            cgroup[0],
            event.cgroup_id,
            json_text(comm),
            cgroup[1],
            json_text(cwd),
            json_text(path_flag_names(event.cwd_flags)),
            _opt_int(event.egid),
            _opt_int(event.euid),
            json_text(exe),
            json_text(path_flag_names(event.exe_flags)),
            _BOOL[bool(event.exe_memfd)],
            _BOOL[bool(event.at)],
            _BOOL[bool(event.fileless)],
            json_text(filename),
            _BOOL[bool(event.filename_cut)],
            event.gid,
            _opt_int(event.loginuid),
            event.pid,
            _opt_int(event.ppid),
            redacted_bytes(fired),
            ret,
            event.tid,
            event.ts_ns,
            event.uid,
            json_text(event.unresolved),
        )
    except UnicodeEncodeError:
        return None


def fork_bytes(
    event: ForkEvent, comm: str, fired: tuple[str, ...], cgroup: Cgroup = NO_CGROUP
) -> bytes | None:
    """A :class:`~agent.evidence.payloads.ForkData`'s bytes, or None. Clone
    flags past 2**53 are a decimal string, as the Struct path writes them."""
    flags = event.clone_flags
    try:
        return _FORK % (
            cgroup[0],
            event.cgroup_id,
            event.child_pid,
            b"%d" % flags if _safe(flags) else b'"%d"' % flags,
            json_text(comm),
            cgroup[1],
            event.gid,
            event.pid,
            redacted_bytes(fired),
            event.tid,
            event.ts_ns,
            event.uid,
        )
    except UnicodeEncodeError:
        return None


def exit_bytes(
    event: ExitEvent, comm: str, fired: tuple[str, ...], cgroup: Cgroup = NO_CGROUP
) -> bytes | None:
    """An :class:`~agent.evidence.payloads.ExitData`'s bytes, or None."""
    try:
        return _EXIT % (
            cgroup[0],
            event.cgroup_id,
            json_text(comm),
            cgroup[1],
            b"%d" % event.exit_code if event.have_code else _NULL,
            event.gid,
            event.pid,
            redacted_bytes(fired),
            b"%d" % event.signal if event.have_signal else _NULL,
            event.tid,
            event.ts_ns,
            event.uid,
        )
    except UnicodeEncodeError:
        return None


def net_bytes(
    event: NetEvent,
    comm: str,
    endpoint: Endpoint | None,
    fired: tuple[str, ...],
    cgroup: Cgroup = NO_CGROUP,
) -> bytes | None:
    """A :class:`~agent.evidence.payloads.NetData`'s bytes, or None."""
    ret = event.ret
    if not _safe(ret):
        return None
    try:
        count, last = _folded(event.count, event.last_ts_ns)
        op = event.op
        proto, outcome = event.proto, event.outcome
        return _NET % (
            b"%d" % event.backlog if op == "listen" else _NULL,
            cgroup[0],
            event.cgroup_id,
            json_text(comm),
            cgroup[1],
            count,
            _NULL
            if endpoint is None
            else _ENDPOINT
            % (json_text(endpoint.address), json_text(endpoint.family), endpoint.port),
            event.fd,
            event.gid,
            last,
            b',"messages":%d' % event.messages if op in SEND_OPS else b"",
            b',"more_messages":true' if event.more_messages else b"",
            _OPS.get(op) or json_text(op),
            b',"outcome":' + (_OPS.get(outcome) or json_text(outcome)) if outcome else b"",
            b',"peer_from_socket":true' if event.peer_from_socket else b"",
            event.pid,
            b',"proto":' + (_OPS.get(proto) or json_text(proto)) if proto else b"",
            redacted_bytes(fired),
            ret,
            event.tid,
            event.ts_ns,
            event.uid,
            b',"unchecked":true' if event.unchecked else b"",
        )
    except UnicodeEncodeError:
        return None
