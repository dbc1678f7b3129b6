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
process.exec.v1            1007   1 Launch (``status_id`` 2 Failure if ret < 0); the
                                    exe's absolute path as ``process.file``, ppid as
                                    ``parent_process.pid``, cwd/euid/egid/loginuid/
                                    fileless in ``unmapped``
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
file.chown.v1              1001   7 Set Security: the owner decides access
file.link.v1/symlink.v1    1001   1 Create: ``file`` is the new name (a
                                  symlink's type_id 7), ``unmapped.
                                  link_target`` what it points to
file.truncate.v1           1001   3 Update
file.other.v1              1001   99 Other
process.credentials.v1     1007   5 Set User ID (setuid, setreuid,
                                  setresuid); 99 Other for the gid calls
                                  ("Set Group ID") and capset ("Set
                                  Capabilities"). ``process.user`` holds
                                  the ids after, ``unmapped`` before/after
process.ptrace.v1          1007   3 Open (attach, seize), 4 Inject (poke,
                                  set registers), 99 Other; ``process`` is
                                  the traced pid
process.signal.v1          1007   99 Other ("Signal"); ``process`` the
                                  target pid, ``unmapped.signal``
process.memfd.v1           1001   1 Create: ``file`` ``memfd:<name>``,
                                  type_id 99 Other (a file with no path)
fs.mount.v1                1001   12 Mount / 13 Unmount: ``file`` is the
                                  mount point (a folder)
kernel.module.v1           1002   1 Load (init/finit_module), 2 Unload
                                  (delete_module): Kernel Extension
                                  Activity, ``driver.file`` the module
kernel.bpf.v1              1003   1 Create (BPF_PROG_LOAD, BPF_MAP_CREATE),
                                  4 Invoke otherwise: Kernel Activity,
                                  ``kernel`` a System Call (type_id 2)
process.namespace.v1       1003   4 Invoke: ``kernel`` the system call
                                  (unshare, setns)
network.connect.v1         4001   1 Open; 5 Refuse for ECONNREFUSED; 4 Fail
                                  for any other error. EINPROGRESS (a
                                  non-blocking connect under way) is Open
network.accept.v1          4001   1 Open (inbound); 4 Fail on error
network.listen.v1          4001   7 Listen; 4 Fail on error
network.bind.v1 / other    4001   99 Other (``activity_name`` "Bind");
                                  a bind opens no connection
network.sendto.v1,         4001   6 Traffic (outbound): a UDP datagram's
 sendmsg.v1, sendmmsg.v1          destination; ``traffic.packets_out`` the
                                  datagrams, ``traffic.bytes_out`` the bytes
                                  (sendto/sendmsg); 4 Fail on error
network.connect_result.v1  4001   how a connect that returned EINPROGRESS
                                  ended: 1 Open (established), 5 Refuse, 4
                                  Fail (``status_code`` "unknown" when the
                                  kernel's error was not read)
uring.op.v1 (path ops)     1001   as the file record of the same operation
                                  (openat/openat2 as open, unlinkat,
                                  renameat, mkdirat; linkat and symlinkat
                                  99 Other), the absolute path first;
                                  ``unmapped.via`` "io_uring"
uring.op.v1 (socket ops)   4001   as the network record: connect, accept,
                                  and a send with a destination (99 Other)
=========================  =====  ==========================================

``connection_info.protocol_name``/``protocol_num`` say tcp (6), udp (17) or
udplite (136) when the record names the socket's protocol.

Checked against the schema, not memory: ``tests/ocsf/schema_1_3_0.json``
holds the 1.3.0 release's facts (class and category uids, activity ids,
required attributes with what base_event, the category and the profiles
add, enums, object constraints), extracted from the ``ocsf/ocsf-schema``
repository at tag 1.3.0 by ``tests/ocsf/extract_schema.py``, and
``tests/ocsf/test_ocsf_schema.py`` validates every record type's
projection against them. What that check fixed: Network Activity's
``actor`` and ``device`` are the ``host`` profile's, so network events say
``metadata.profiles: ["host"]``; ``type_name`` is ``type_uid``'s caption
(``Network Activity: Other`` for 99, the source's word stays in
``activity_name``); an endpoint object must name something, so an unknown
source endpoint is left out and a destination the capture could not read
is ``{"name": "unresolved"}`` (``dst_endpoint`` is required).

Other io_uring ops (reads, writes, polls, timeouts...) have no class here:
counted in the profile, in the CloudEvents stream only.

Host text that is not UTF-8 stays in the record's escape form (see
:mod:`agent.safetext`) and ``unmapped.escaped`` names the fields holding
it; ``process.cmd_line`` is the argv shell-quoted word by word.

Every event carries ``status_id`` (1 Success, 2 Failure), its caption
``status`` and, on failure,
``status_code`` (the errno name or number). ``severity_id`` is 1
Informational throughout: capture observes, it does not judge.

Records with no OCSF class here return None: ``process.seen.v1`` (a /proc
snapshot is not an activity), ``process.syscalls.v1`` (counters), and every
``capture.*`` record (the sensor's own health). Those are only in the
CloudEvents stream; a consumer that needs gaps must read that stream.

A folded record (``data.count`` > 1: that many identical events) carries
the OCSF ``count`` attribute. A record whose cgroup names a container
(``data.container``) carries the ``container`` profile's object (``uid``,
``runtime``, ``pod_uuid``) and says so in ``metadata.profiles``.

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

from agent.capture.calls import family_of
from agent.capture.container_id import Container
from agent.capture.kinds import AT_FDCWD, AT_REMOVEDIR, PATH_FLAG_NAMES, PATH_NO_BASE
from agent.capture.uring_facts import FILE_OPS as URING_FILE_OPS
from agent.capture.uring_facts import NET_OPS as URING_NET_OPS
from agent.evidence.payloads import (
    CallData,
    EndpointData,
    ExecData,
    ExitData,
    FileData,
    ForkData,
    NetData,
    UringData,
)
from agent.evidence.record_types import PAYLOAD_TYPES
from agent.evidence.types import PRODUCER, TYPE_PREFIX, CloudEvent, parse_rfc3339_ns
from agent.safetext import shell_join, unescape

__all__ = [
    "CATEGORY_NETWORK",
    "CATEGORY_SYSTEM",
    "CLASS_FILE_SYSTEM",
    "CLASS_KERNEL",
    "CLASS_KERNEL_EXTENSION",
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
CLASS_KERNEL_EXTENSION: Final = 1002
CLASS_KERNEL: Final = 1003
CLASS_PROCESS: Final = 1007
CLASS_NETWORK: Final = 4001

_CLASS_NAMES: Final = {
    CLASS_FILE_SYSTEM: ("File System Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_KERNEL_EXTENSION: ("Kernel Extension Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_KERNEL: ("Kernel Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_PROCESS: ("Process Activity", CATEGORY_SYSTEM, "System Activity"),
    CLASS_NETWORK: ("Network Activity", CATEGORY_NETWORK, "Network Activity"),
}

_ACTIVITY_OTHER: Final = 99
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
    "chown": (7, "Set Security"),
    "link": (1, "Create"),
    "symlink": (1, "Create"),
    "truncate": (3, "Update"),
    "other": (99, "Other"),
}
_NETWORK_PROFILES: Final = ("host",)
_UNRESOLVED: Final = "unresolved"
_FAMILIES: Final = frozenset({"file", "network", "uring"})
_FILE_SYMLINK: Final = 7
_FILE_OTHER: Final = 99
_KERNEL_SYSCALL: Final = 2
#: ptrace requests (linux/ptrace.h) that start tracing, and that write the tracee.
_PTRACE_OPEN: Final = frozenset({16, 0x4206})  # ATTACH, SEIZE
_PTRACE_INJECT: Final = frozenset({4, 5, 6, 13, 15, 0x4205})  # POKE*, SETREGS, SETFPREGS, SETREGSET
_BPF_CREATE: Final = frozenset({0, 5})  # BPF_MAP_CREATE, BPF_PROG_LOAD
_NET_OPEN: Final = (1, "Open")
_NET_FAIL: Final = (4, "Fail")
_NET_REFUSE: Final = (5, "Refuse")
_NET_LISTEN: Final = (7, "Listen")
_NET_TRAFFIC: Final = (6, "Traffic")
_NET_SENDS: Final = frozenset({"sendto", "sendmsg", "sendmmsg"})
_PROTOCOL_NUMBERS: Final = {"tcp": 6, "udp": 17, "udplite": 136}


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
    payload_type = PAYLOAD_TYPES.get(ce.type)
    if payload_type is None:
        return None
    calls = payload_type is CallData
    if (
        not calls
        and not (family == "process" and op in _PROCESS_ACTIVITY)
        and family not in _FAMILIES
    ):
        return None
    data = ce.data
    if not isinstance(data, payload_type):
        try:
            data = msgspec.convert(data, payload_type)
        except msgspec.ValidationError as exc:
            raise OcsfError(f"record {ce.id} ({ce.type}): {exc}") from None
    if isinstance(data, ExecData | ForkData | ExitData):
        event = _process(ce, data)
    elif isinstance(data, FileData):
        event = _file(ce, op, data)
    elif isinstance(data, NetData):
        event = _network(ce, op, data)
    elif isinstance(data, CallData):
        event = _call(ce, data)
    elif isinstance(data, UringData):
        uring = _uring(ce, data)
        if uring is None:
            return None
        event = uring
    else:
        return None
    return _with_container(event, data.container)


def _with_container(event: dict[str, Any], container: Container | None) -> dict[str, Any]:
    """The OCSF ``container`` profile's object, when the record's cgroup named
    a container: ``uid`` (the id), ``runtime`` and a Kubernetes ``pod_uuid``;
    what the cgroup path does not say (name, image) is left out, never guessed."""
    if container is None:
        return event
    found: dict[str, Any] = {"uid": container.id, "runtime": container.runtime}
    if container.pod is not None:
        found["pod_uuid"] = container.pod
    event["container"] = found
    event["metadata"]["profiles"] = ["container"]
    return event


def _base(
    ce: CloudEvent[Any],
    class_uid: int,
    activity: tuple[int, str],
    ret: int,
    profiles: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The attributes every class here requires, plus status from a syscall result.

    ``profiles`` are the OCSF profiles whose attributes the event uses
    (``metadata.profiles``): in the Network category ``actor`` and
    ``device`` are the ``host`` profile's, and a consumer may ignore
    attributes of a profile the event does not declare.
    """
    activity_id, activity_name = activity
    class_name, category_uid, category_name = _CLASS_NAMES[class_uid]
    # type_name is the schema's caption of type_uid: for 99 that is "Other",
    # whatever source-specific word activity_name carries.
    type_activity = "Other" if activity_id == _ACTIVITY_OTHER else activity_name
    event: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {type_activity}",
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
        "status": "Success" if ret >= 0 else "Failure",
    }
    if profiles:
        event["metadata"]["profiles"] = list(profiles)
    if ret < 0:
        event["status_code"] = _errno_name(ret)
    return event


def _actor(data: ExecData | ForkData | ExitData | FileData | NetData | CallData) -> dict[str, Any]:
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
        # The executable's absolute path when the kernel resolved it whole,
        # else the filename as the exec named it.
        path = data.exe if data.exe and not data.exe_flags else data.filename
        event["process"] = {
            "pid": data.pid,
            "tid": data.tid,
            "name": data.comm,
            "cmd_line": _cmd_line(data),
            "file": {
                "name": posixpath.basename(path) or path,
                "path": path,
                "type_id": _FILE_REGULAR,
            },
            "user": {"uid": str(data.uid)},
        }
        if data.ppid is not None:
            event["process"]["parent_process"] = {"pid": data.ppid}
        # No 1.3.0 process attribute holds these: unmapped, named as in the record.
        unmapped = {
            "cwd": data.cwd,
            "euid": data.euid,
            "egid": data.egid,
            "loginuid": data.loginuid,
            "fileless": data.fileless,
            "exe_memfd": data.exe_memfd,
            "unresolved": data.unresolved,
        }
        event["unmapped"] = {k: v for k, v in unmapped.items() if v not in (None, "", [], False)}
        if not event["unmapped"]:
            del event["unmapped"]
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
    path = data.abs_path or data.path
    unmapped: dict[str, Any] = {
        "syscall": data.syscall,
        "flags": data.flags,
        "mode": data.mode,
        "dfd": data.dfd,
    }
    if op in ("link", "symlink") and data.path2 is not None:
        # What was created is the new name; what it points to stays beside
        # it: a symlink's text as written, a hard link's old file.
        new = data.abs_path2 or data.path2
        event["file"] = _file_object(new, _FILE_SYMLINK if op == "symlink" else 0)
        unmapped["link_target"] = data.path if op == "symlink" else path
        if new != data.path2:
            unmapped["path2_passed"] = data.path2
    elif path or data.dfd == AT_FDCWD:
        event["file"] = _file_object(path, _FILE_FOLDER if folder else _FILE_UNKNOWN)
        if path != data.path:
            unmapped["path_passed"] = data.path
    else:  # fchmod, ftruncate, fchown on an fd not resolved: known by its fd
        event["file"] = {"name": f"fd:{data.dfd}", "type_id": _FILE_UNKNOWN}
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
    elif op == "connect_result":
        outcome = data.outcome
        activity = (
            _NET_OPEN
            if outcome == "established"
            else _NET_REFUSE
            if outcome == "refused"
            else _NET_FAIL
        )
        direction = _DIRECTION_OUTBOUND
    elif op in _NET_SENDS:
        activity = _NET_TRAFFIC if ret >= 0 else _NET_FAIL
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
    event = _base(ce, CLASS_NETWORK, activity, status_ret, _NETWORK_PROFILES)
    if op == "connect_result" and data.outcome != "established" and ret >= 0:
        event["status_id"] = _STATUS_FAILURE  # failed, the kernel's error not read
        event["status"] = "Failure"
        event["status_code"] = "unknown"
    event["actor"] = _actor(data)
    local: dict[str, Any] = {"hostname": ce.thhost}
    peer = _endpoint(data.endpoint)
    if op in ("connect", "connect_result") or op in _NET_SENDS:
        src, dst = local, peer
    elif op == "accept":
        src, dst = peer, local
    else:  # bind, listen: the address given is our own, there is no peer
        src = local
        dst = {**local, **peer} if peer else local
    # An endpoint object must name something (OCSF: at least one of ip, name,
    # hostname...): a source that is unknown is left out (it is only
    # recommended); the destination is required, so an address the capture
    # could not read is named as such rather than guessed.
    if src:
        event["src_endpoint"] = src
    event["dst_endpoint"] = dst or {"name": _UNRESOLVED}
    connection: dict[str, Any] = {"direction_id": direction}
    if data.proto:
        connection["protocol_name"] = data.proto
        if data.proto in _PROTOCOL_NUMBERS:
            connection["protocol_num"] = _PROTOCOL_NUMBERS[data.proto]
    event["connection_info"] = connection
    event["unmapped"] = {"fd": data.fd, "op": data.op}
    if op in _NET_SENDS and ret >= 0:
        traffic = {"packets_out": (data.messages or 1) * data.count}
        if op != "sendmmsg":  # its result counts messages, not bytes
            traffic["bytes_out"] = ret * data.count
        event["traffic"] = traffic
    for flag in ("peer_from_socket", "more_messages", "unchecked"):
        if getattr(data, flag):
            event["unmapped"][flag] = True
    if data.count > 1:
        event["count"] = data.count
    names = list(data.escaped)
    if data.endpoint is not None:
        names += [f"endpoint.{name}" for name in data.endpoint.escaped]
    return _escaped(event, names)


_URING_LINKS: Final = frozenset({"linkat", "symlinkat"})
#: io_uring path ops other than openat carry the name as passed only.
_NO_BASE: Final = PATH_FLAG_NAMES[PATH_NO_BASE]


def _uring(ce: CloudEvent[Any], data: UringData) -> dict[str, Any] | None:
    """An io_uring op as the file or network event the same syscall would
    give, marked ``unmapped.via`` "io_uring"; None for ops that are neither."""
    header: dict[str, Any] = {
        "pid": data.pid, "tid": data.tid, "uid": data.uid, "gid": data.gid,
        "cgroup_id": data.cgroup_id, "cgroup": data.cgroup, "container": data.container,
        "comm": data.comm, "ts_ns": data.ts_ns,
        "redacted": data.redacted, "escaped": data.escaped,
    }  # fmt: skip
    flags = data.op_flags if isinstance(data.op_flags, int) else 0
    file_op = URING_FILE_OPS.get(data.op) or ("other" if data.op in _URING_LINKS else None)
    net_op = URING_NET_OPS.get(data.op)
    event: dict[str, Any]
    if file_op is not None:
        if file_op == "unlink" and flags & AT_REMOVEDIR:
            file_op = "rmdir"
        two = data.path2 is not None
        as_file = FileData(
            **header, op=file_op, syscall=f"io_uring:{data.op}", ret=data.res,
            dfd=data.dfd if data.dfd is not None else -100,
            path=data.path or "",
            path_cut=bool(data.path_cut), dfd2=data.dfd2 if two else None,
            path2=data.path2, path2_cut=data.path2_cut if two else None,
            flags=flags, mode=data.mode,
            abs_path=data.abs_path or "",
            abs_flags=data.abs_flags if data.abs_flags is not None else [_NO_BASE],
            abs_path2="" if two else None, abs2_flags=[_NO_BASE] if two else None,
        )  # fmt: skip
        event = _file(ce, file_op, as_file)
        if data.op in _URING_LINKS and data.path2 is not None:
            event["file_result"] = _file_object(data.path2, _FILE_UNKNOWN)
    elif net_op is not None and (net_op in ("connect", "accept") or data.endpoint is not None):
        as_net = NetData(
            **header, op=net_op, ret=data.res, fd=data.fd, endpoint=data.endpoint, backlog=None
        )
        event = _network(ce, net_op, as_net)
    else:
        return None
    event["unmapped"].update(via="io_uring", op=data.op, user_data=data.user_data)
    return event


def _call_activity(data: CallData) -> tuple[int, tuple[int, str]]:
    """The OCSF class and activity of a call (see the module's table)."""
    op, family = data.op, family_of(data.op)
    if family == "credentials":
        if op.endswith("uid"):
            return CLASS_PROCESS, (5, "Set User ID")
        return CLASS_PROCESS, (99, "Set Capabilities" if op == "capset" else "Set Group ID")
    if family == "ptrace":
        request = data.args.get("request")
        if request in _PTRACE_OPEN:
            return CLASS_PROCESS, (3, "Open")
        if request in _PTRACE_INJECT:
            return CLASS_PROCESS, (4, "Inject")
        return CLASS_PROCESS, (99, "Other")
    if family == "signal":
        return CLASS_PROCESS, (99, "Signal")
    if family == "mount":
        return CLASS_FILE_SYSTEM, (13, "Unmount") if op == "umount" else (12, "Mount")
    if family == "memfd":
        return CLASS_FILE_SYSTEM, (1, "Create")
    if family == "module":
        return CLASS_KERNEL_EXTENSION, (2, "Unload") if op == "delete_module" else (1, "Load")
    if family == "bpf":
        create = data.args.get("cmd") in _BPF_CREATE
        return CLASS_KERNEL, (1, "Create") if create else (4, "Invoke")
    return CLASS_KERNEL, (4, "Invoke")  # namespace, and any call not named here


def _call(ce: CloudEvent[Any], data: CallData) -> dict[str, Any]:
    class_uid, activity = _call_activity(data)
    event = _base(ce, class_uid, activity, data.ret)
    event["actor"] = _actor(data)
    family = family_of(data.op)
    target = data.args.get("pid", data.args.get("tgid", data.args.get("tid")))
    if family == "credentials":
        ids = data.ids_after or data.ids_before
        process: dict[str, Any] = {"pid": data.pid, "tid": data.tid, "name": data.comm}
        if ids is not None:
            process["user"] = {"uid": str(ids["euid"])}
        event["process"] = process
    elif family in ("ptrace", "signal") and isinstance(target, int):
        event["process"] = {"pid": target}
    elif family == "mount" and data.target is not None:
        event["file"] = _file_object(data.target, _FILE_FOLDER)
    elif family == "memfd":
        name = f"memfd:{data.name or ''}"
        event["file"] = {"name": name, "type_id": _FILE_OTHER, "type": "memfd"}
    elif family == "module":
        # delete_module names the module; finit_module loads it from an fd;
        # init_module's image is in memory, its name inside the ELF.
        fd = data.args.get("fd")
        name = data.name or (f"fd:{fd}" if isinstance(fd, int) else "")
        event["driver"] = {"file": {"name": name, "type_id": _FILE_REGULAR}}
    elif class_uid == CLASS_KERNEL:
        event["kernel"] = {"name": data.op, "type_id": _KERNEL_SYSCALL}
    unmapped: dict[str, Any] = {"syscall": data.syscall, "op": data.op, "args": data.args}
    for key in ("source", "target", "fstype", "params", "name"):
        value = getattr(data, key)
        if value is not None:
            unmapped[key] = value
    for key in ("ids_before", "ids_after", "caps_before", "caps_after"):
        value = getattr(data, key)
        if value is not None:
            unmapped[key] = value
    if data.text_cut:
        unmapped["text_cut"] = data.text_cut
    if data.unreadable:
        unmapped["unreadable"] = data.unreadable
    event["unmapped"] = unmapped
    return _escaped(event, data.escaped)


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
