"""An OCSF 1.3.0 projection of evidence records, for SIEMs that speak OCSF.

Pinned to OCSF **1.3.0** (:data:`OCSF_VERSION`, written into every event's
``metadata.version``); the schema repository's main branch is a 2.0 draft
whose classes differ, so the pin matters. The CloudEvents record stays the
evidence: this is a derived view, made from the record alone (its ``data``,
already redacted, and its envelope), so it can be produced again at any time
from a verified log.

Classes and activities chosen:

=========================  =====  ==========================================
record type                class  activity_id
=========================  =====  ==========================================
process.exec.v1            1007   1 Launch (``status_id`` 2 Failure if ret < 0)
process.fork.v1            1007   1 Launch: ``process`` is the child (pid
                                  only), ``actor.process`` the parent
process.exit.v1            1007   2 Terminate, with ``exit_code``
file.open.v1               1001   14 Open. Also with O_CREAT: the event cannot
                                  tell a created file from an existing one,
                                  so it claims no more than the open
file.mkdir.v1              1001   1 Create (``file.type_id`` 2 Folder)
file.unlink.v1/rmdir.v1    1001   4 Delete
file.rename.v1             1001   5 Rename; the target is ``file_result``
file.chmod.v1              1001   7 Set Security: mode bits are the file's
                                  access control, not a plain attribute
file.other.v1              1001   99 Other
network.connect.v1         4001   1 Open; 5 Refuse for ECONNREFUSED; 4 Fail
                                  for any other error. EINPROGRESS (a
                                  non-blocking connect under way) is Open
network.accept.v1          4001   1 Open (inbound); 4 Fail on error
network.listen.v1          4001   7 Listen; 4 Fail on error
network.bind.v1 / other    4001   99 Other (``activity_name`` "Bind");
                                  a bind opens no connection
=========================  =====  ==========================================

Host text that is not UTF-8 stays in the record's escape form (see
:mod:`agent.safetext`) and ``unmapped.escaped`` names the fields holding
it; ``process.cmd_line`` is the argv shell-quoted word by word.

Every event carries ``status_id`` (1 Success, 2 Failure) and, on failure,
``status_code`` (the errno name or number). ``severity_id`` is 1
Informational throughout: capture observes, it does not judge.

Records with no OCSF class here return None: ``process.seen.v1`` (a /proc
snapshot is not an activity), ``process.syscalls.v1`` (counters), and every
``capture.*`` record (the sensor's own health). Those are only in the
CloudEvents stream; a consumer that needs gaps must read that stream.

A folded record (``data.count`` > 1: that many identical events) carries
the OCSF ``count`` attribute.

A file event's ``file.path`` (and a rename's ``file_result.path``) is the
absolute path the kernel used (``data.abs_path``), or the name as passed
when it was not resolved; the name as passed is then in
``unmapped.path_passed`` (``path2_passed``) when it differs, and how the
absolute path was found, when not read whole from the file, in
``unmapped.path_flags`` (``path2_flags``: ``joined``, ``cut``,
``lexical``...). ``unmapped.escaped`` names the record's data fields
(``abs_path`` is ``file.path``).

What can go wrong: a record whose ``data`` is not its type's payload (a
field missing or mistyped: a record not made by :mod:`agent.evidence.mapper`,
or a newer type version) raises :class:`OcsfError`, naming the record and
the field; nothing is guessed.
"""

from __future__ import annotations

import errno
import posixpath
from typing import Any, Final

import msgspec

from agent.evidence.payloads import EndpointData, ExecData, ExitData, FileData, ForkData, NetData
from agent.evidence.record_types import PAYLOAD_TYPES
from agent.evidence.types import PRODUCER, TYPE_PREFIX, CloudEvent, parse_rfc3339_ns
from agent.safetext import shell_join, unescape

__all__ = [
    "CATEGORY_NETWORK",
    "CATEGORY_SYSTEM",
    "CLASS_FILE_SYSTEM",
    "CLASS_NETWORK",
    "CLASS_PROCESS",
    "OCSF_VERSION",
    "OcsfError",
    "to_ocsf",
]

OCSF_VERSION: Final = "1.3.0"
"""The OCSF schema release every projected event follows."""

CATEGORY_SYSTEM: Final = 1
CATEGORY_NETWORK: Final = 4
CLASS_FILE_SYSTEM: Final = 1001
CLASS_PROCESS: Final = 1007
CLASS_NETWORK: Final = 4001

_CLASS_NAMES: Final = {
    CLASS_FILE_SYSTEM: ("File System Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_PROCESS: ("Process Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_NETWORK: ("Network Activity", CATEGORY_NETWORK, "Network Activity"),
}

_SEVERITY_INFORMATIONAL: Final = 1
_STATUS_SUCCESS: Final = 1
_STATUS_FAILURE: Final = 2
_OS_LINUX: Final = 200
_DEVICE_UNKNOWN: Final = 0
_FILE_UNKNOWN: Final = 0
_FILE_REGULAR: Final = 1
_FILE_FOLDER: Final = 2
_DIRECTION_UNKNOWN: Final = 0
_DIRECTION_INBOUND: Final = 1
_DIRECTION_OUTBOUND: Final = 2

_PROCESS_ACTIVITY: Final = {"exec": (1, "Launch"), "fork": (1, "Launch"), "exit": (2, "Terminate")}
_FILE_ACTIVITY: Final = {
    "open": (14, "Open"),
    "mkdir": (1, "Create"),
    "unlink": (4, "Delete"),
    "rmdir": (4, "Delete"),
    "rename": (5, "Rename"),
    "chmod": (7, "Set Security"),
    "other": (99, "Other"),
}
_NET_OPEN: Final = (1, "Open")
_NET_FAIL: Final = (4, "Fail")
_NET_REFUSE: Final = (5, "Refuse")
_NET_LISTEN: Final = (7, "Listen")


class OcsfError(ValueError):
    """A record cannot be projected: a field its type needs is missing or mistyped."""


def to_ocsf(ce: CloudEvent[Any]) -> dict[str, Any] | None:
    """Project one record to an OCSF 1.3.0 event dict, or None if it has no class.

    ``ce.data`` is the record's typed payload (:mod:`agent.evidence.payloads`),
    as the mapper makes it, or its plain JSON, as read back from the log:
    that is checked against the payload type first. The result is plain
    JSON (canonical-safe: integers, no floats). Its ``metadata.uid`` is the
    record's ``id``, so the OCSF event and the evidence record it came from
    can always be matched up.
    """
    if not ce.type.startswith(TYPE_PREFIX):
        return None
    family, _, rest = ce.type[len(TYPE_PREFIX) :].partition(".")
    op, _, version = rest.rpartition(".")
    if version != "v1":
        return None
    if not (family == "process" and op in _PROCESS_ACTIVITY) and family not in ("file", "network"):
        return None
    payload_type = PAYLOAD_TYPES.get(ce.type)
    if payload_type is None:
        return None
    data = ce.data
    if not isinstance(data, payload_type):
        try:
            data = msgspec.convert(data, payload_type)
        except msgspec.ValidationError as exc:
            raise OcsfError(f"record {ce.id} ({ce.type}): {exc}") from None
    if isinstance(data, ExecData | ForkData | ExitData):
        return _process(ce, data)
    if isinstance(data, FileData):
        return _file(ce, op, data)
    if isinstance(data, NetData):
        return _network(ce, op, data)
    return None


def _base(
    ce: CloudEvent[Any], class_uid: int, activity: tuple[int, str], ret: int
) -> dict[str, Any]:
    """The attributes every class here requires, plus status from a syscall result."""
    activity_id, activity_name = activity
    class_name, category_uid, category_name = _CLASS_NAMES[class_uid]
    event: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": _SEVERITY_INFORMATIONAL,
        "severity": "Informational",
        # Floor division: an event in the last ms of a second stays in that ms.
        "time": parse_rfc3339_ns(ce.time) // 1_000_000,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": ce.id,
            "product": {"name": PRODUCER, "vendor_name": PRODUCER, "version": ce.thversion},
            "log_name": ce.source,
        },
        "device": {
            "hostname": ce.thhost,
            "type_id": _DEVICE_UNKNOWN,
            "os": {"name": "Linux", "type_id": _OS_LINUX},
        },
        "status_id": _STATUS_SUCCESS if ret >= 0 else _STATUS_FAILURE,
    }
    if ret < 0:
        event["status_code"] = _errno_name(ret)
    return event


def _actor(data: ExecData | ForkData | ExitData | FileData | NetData) -> dict[str, Any]:
    """The process that did it: the event header's pid, thread, command and user."""
    return {
        "process": {
            "pid": data.pid,
            "tid": data.tid,
            "name": data.comm,
            "user": {"uid": str(data.uid)},
        },
        "user": {"uid": str(data.uid)},
    }


def _process(ce: CloudEvent[Any], data: ExecData | ForkData | ExitData) -> dict[str, Any]:
    if isinstance(data, ExecData):
        event = _base(ce, CLASS_PROCESS, _PROCESS_ACTIVITY["exec"], data.ret)
        event["actor"] = _actor(data)
        event["process"] = {
            "pid": data.pid,
            "tid": data.tid,
            "name": data.comm,
            "cmd_line": _cmd_line(data),
            "file": {
                "name": posixpath.basename(data.filename),
                "path": data.filename,
                "type_id": _FILE_REGULAR,
            },
            "user": {"uid": str(data.uid)},
        }
    elif isinstance(data, ForkData):
        event = _base(ce, CLASS_PROCESS, _PROCESS_ACTIVITY["fork"], 0)
        event["actor"] = _actor(data)
        event["process"] = {"pid": data.child_pid, "parent_process": {"pid": data.pid}}
    else:
        event = _base(ce, CLASS_PROCESS, _PROCESS_ACTIVITY["exit"], 0)
        event["actor"] = _actor(data)
        event["process"] = {"pid": data.pid, "name": data.comm}
        if data.exit_code is not None:
            event["exit_code"] = data.exit_code
        if data.signal is not None:
            event["unmapped"] = {"signal": data.signal}
    return _escaped(event, data.escaped)


def _cmd_line(data: ExecData) -> str:
    """The argv as one shell line, each word quoted (agent.safetext): joined
    with bare spaces, ``a b`` and ``a`` ``b`` would read the same."""
    argv = data.argv
    if "argv" in data.escaped:
        argv = [unescape(entry) for entry in argv]
    return shell_join(argv)


def _escaped(event: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Carry which fields hold text in escape form (agent.safetext) into
    ``unmapped.escaped``, so a consumer can restore the original bytes."""
    if names:
        event.setdefault("unmapped", {})["escaped"] = sorted(names)
    return event


def _file_object(path: str, type_id: int) -> dict[str, Any]:
    return {"name": posixpath.basename(path) or path, "path": path, "type_id": type_id}


def _file(ce: CloudEvent[Any], op: str, data: FileData) -> dict[str, Any]:
    activity = _FILE_ACTIVITY.get(op, _FILE_ACTIVITY["other"])
    event = _base(ce, CLASS_FILE_SYSTEM, activity, data.ret)
    event["actor"] = _actor(data)
    folder = op in ("mkdir", "rmdir")
    # The absolute path the kernel used first; the name as passed (and how
    # the absolute one was found, when not exactly) stays in unmapped.
    path = data.abs_path or data.path
    event["file"] = _file_object(path, _FILE_FOLDER if folder else _FILE_UNKNOWN)
    unmapped: dict[str, Any] = {
        "syscall": data.syscall,
        "flags": data.flags,
        "mode": data.mode,
        "dfd": data.dfd,
    }
    if path != data.path:
        unmapped["path_passed"] = data.path
    if data.abs_flags:
        unmapped["path_flags"] = data.abs_flags
    if op == "rename" and data.path2 is not None:
        target = data.abs_path2 or data.path2
        event["file_result"] = _file_object(target, _FILE_UNKNOWN)
        if target != data.path2:
            unmapped["path2_passed"] = data.path2
        if data.abs2_flags:
            unmapped["path2_flags"] = data.abs2_flags
    if data.owner is not None or data.group is not None:
        unmapped["owner"], unmapped["group"] = data.owner, data.group
    event["unmapped"] = unmapped
    if data.count > 1:
        event["count"] = data.count
    return _escaped(event, data.escaped)


def _network(ce: CloudEvent[Any], op: str, data: NetData) -> dict[str, Any]:
    ret = data.ret
    activity: tuple[int, str]
    if op == "connect":
        if ret == -errno.ECONNREFUSED:
            activity = _NET_REFUSE
        elif ret >= 0 or ret == -errno.EINPROGRESS:
            activity = _NET_OPEN
        else:
            activity = _NET_FAIL
        direction = _DIRECTION_OUTBOUND
    elif op == "accept":
        activity = _NET_OPEN if ret >= 0 else _NET_FAIL
        direction = _DIRECTION_INBOUND
    elif op == "listen":
        activity = _NET_LISTEN if ret >= 0 else _NET_FAIL
        direction = _DIRECTION_INBOUND
    else:
        activity = (99, "Bind" if op == "bind" else "Other")
        direction = _DIRECTION_UNKNOWN
    # A connect in progress is not a failure, whatever its return value.
    status_ret = 0 if ret == -errno.EINPROGRESS and op == "connect" else ret
    event = _base(ce, CLASS_NETWORK, activity, status_ret)
    event["actor"] = _actor(data)
    local: dict[str, Any] = {"hostname": ce.thhost}
    peer = _endpoint(data.endpoint)
    if op == "connect":
        src, dst = local, peer
    elif op == "accept":
        src, dst = peer, local
    else:  # bind, listen: the address given is our own, there is no peer
        src = local
        dst = {**local, **peer} if peer else local
    event["src_endpoint"] = src or {}
    event["dst_endpoint"] = dst or {}
    event["connection_info"] = {"direction_id": direction}
    event["unmapped"] = {"fd": data.fd, "op": data.op}
    if data.count > 1:
        event["count"] = data.count
    names = list(data.escaped)
    if data.endpoint is not None:
        names += [f"endpoint.{name}" for name in data.endpoint.escaped]
    return _escaped(event, names)


def _endpoint(endpoint: EndpointData | None) -> dict[str, Any]:
    """An OCSF network endpoint: ip and port, or a UNIX path as its name."""
    if endpoint is None:
        return {}
    if endpoint.family in ("ipv4", "ipv6"):
        return {"ip": endpoint.address, "port": endpoint.port}
    return {"name": f"{endpoint.family}:{endpoint.address}"}


def _errno_name(ret: int) -> str:
    """``-2`` -> ``"ENOENT"``; an errno this platform does not name stays a number."""
    return errno.errorcode.get(-ret, str(-ret))
