"""Every OCSF event tracehound projects, checked against the OCSF 1.3.0 schema's own facts.

The facts (``schema_1_3_0.json``) come from the schema release itself
(:mod:`tests.ocsf.extract_schema`); :mod:`tests.ocsf.validator` holds each
projected event to them. The events are the real mapper's records of every
kind and operation the capture names (:mod:`agent.capture.kinds`), each
with success and failure, plus the golden capture's hostile bytes.

A new record type needs one thing here: events that make it in
:func:`events`, or its type in :data:`NOT_PROJECTED`;
:func:`test_every_record_type_is_covered` fails until it has one of them.
"""

from __future__ import annotations

import copy
import errno
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.capture import calls
from agent.capture.events import (
    CallEvent,
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
    UringEvent,
)
from agent.capture.kinds import AT_REMOVEDIR, CALL_CREDS_OPS, FILE_OPS, NET_OPS, O_CREAT
from agent.capture.loader import ProbeStatus
from agent.evidence.app_event import AppEvent
from agent.evidence.mapper import Mapper
from agent.evidence.ocsf import (
    CLASS_FILE_SYSTEM,
    CLASS_NETWORK,
    CLASS_PROCESS,
    OCSF_VERSION,
    to_ocsf,
)
from agent.evidence.record_types import (
    CAPTURE_TYPES,
    PAYLOAD_TYPES,
    TYPE_APP,
    TYPE_SEEN,
    TYPE_SYSCALLS,
)
from agent.evidence.types import Anchor, EvidenceRecord
from tests.evidence.golden_events import golden_events
from tests.evidence.plain_mapper import plain
from tests.ocsf.validator import class_by_uid, facts, validate

ANCHOR = Anchor(boot_id="boot-ocsf", wall_ns=1_714_564_800_123_456_789, boottime_ns=10**12)
HEADER: dict[str, Any] = {
    "pid": 42,
    "tid": 43,
    "uid": 1000,
    "gid": 1000,
    "cgroup_id": 7,
    "comm": "app",
    "ts_ns": ANCHOR.boottime_ns + 5_000,
}
NOT_UTF8 = b"/tmp/x\xff".decode("utf-8", "surrogateescape")

NOT_PROJECTED = frozenset({TYPE_SEEN, TYPE_SYSCALLS, TYPE_APP, *CAPTURE_TYPES})
"""Record types with no OCSF class (see agent.evidence.ocsf): snapshots,
counters, the sensor's own health, and producers' application events (free
text and fields in the producer's words: no OCSF class says what they mean)."""

FAILURES = (-errno.EACCES, -errno.ENOENT)
ENDPOINTS = (
    Endpoint("ipv4", "192.0.2.7", 443),
    Endpoint("ipv6", "2001:db8::1", 22),
    Endpoint("unix", "/run/app.sock"),
    Endpoint("unix", "@abstract"),
    Endpoint("other", "af=38"),
    None,
)
NET_RETURNS = (0, -errno.ECONNREFUSED, -errno.EINPROGRESS, -errno.ENETUNREACH, -errno.EAGAIN)


def events() -> Iterator[Event]:
    """Events of every kind and op, each with success and failure."""
    for ret in (0, *FAILURES):
        for argv in (("ls", "-l"), (), ("cat", NOT_UTF8)):
            yield ExecEvent(
                **HEADER, ret=ret, filename="/bin/ls", argv=argv, argv_truncated=False, at=False
            )
    yield ExecEvent(
        **HEADER, ret=0, filename="", argv=(), argv_truncated=True, at=True, filename_cut=True
    )
    yield ForkEvent(**HEADER, child_pid=99, clone_flags=0x11)
    yield ExitEvent(**HEADER, exit_code=3, signal=0, have_code=True, have_signal=False)
    yield ExitEvent(**HEADER, exit_code=0, signal=9, have_code=False, have_signal=True)
    yield ExitEvent(**HEADER, exit_code=0, signal=0, have_code=False, have_signal=False)
    file_ops = [*FILE_OPS.values(), "op99"]
    for op in file_ops:
        for ret in (0, 3, *FAILURES):
            for path in ("/etc/hosts", "rel/name", "/", NOT_UTF8):
                yield FileEvent(
                    **HEADER,
                    op=op,
                    syscall=op,
                    ret=ret,
                    dfd=-100,
                    path=path,
                    dfd2=-100,
                    path2="/etc/hosts.new" if op == "rename" else "",
                    flags=O_CREAT if op == "open" else 0,
                    mode=0o644,
                )
    yield FileEvent(
        **HEADER,
        op="unlink",
        syscall="rmdir",
        ret=0,
        dfd=-100,
        path="/tmp/d",
        dfd2=-100,
        path2="",
        flags=AT_REMOVEDIR,
        mode=0,
        count=5,
        last_ts_ns=HEADER["ts_ns"] + 10,
    )
    for op in [*NET_OPS.values(), "shutdown"]:
        for endpoint in ENDPOINTS:
            for ret in NET_RETURNS:
                yield NetEvent(
                    **HEADER, op=op, ret=ret, fd=3, endpoint=endpoint, backlog=128, count=2
                )
    # io_uring ops with an OCSF class: path ops and socket ops with a peer
    # (reads, writes and polls have none: tests/test_uring_pure.py).
    uring_ops = [
        ("openat", "/etc/hosts", "", None),
        ("unlinkat", "rel/name", "", None),
        ("renameat", "/a", "/b", None),
        ("mkdirat", NOT_UTF8, "", None),
        ("linkat", "/a", "/b", None),
        ("connect", "", "", ENDPOINTS[0]),
        ("sendmsg", "", "", ENDPOINTS[1]),
    ]
    for op, path, path2, endpoint in uring_ops:
        for res in (3, *FAILURES):
            yield UringEvent(
                **HEADER, op=op, opcode=0, res=res, user_data=7, complete_ns=HEADER["ts_ns"] + 1,
                fd=4, dfd=-100, path=path, dfd2=-100, path2=path2, op_flags=0, mode=0o600,
                cflags=0, endpoint=endpoint, abs_path="/etc/hosts" if op == "openat" else "",
                abs_flags=0,
            )  # fmt: skip
    # Security-relevant calls: every op the capture names (plus one it does
    # not), with the arguments and strings each keeps, resolved or not.
    ids = dict.fromkeys(calls.ID_NAMES, 0)
    caps = dict.fromkeys(calls.CAP_NAMES, 0x1FF)
    for op, spec in [*calls.CALL_SPECS.items(), ("op99", None)]:
        args = {name: 16 for name, _, _ in spec.args} if spec else {}
        text = {name: "/mnt/x" for name, _ in spec.strings} if spec else {}
        for ret in (0, *FAILURES):
            for resolved in (True, False):
                yield CallEvent(
                    **HEADER, op=op, syscall=op, ret=ret, args=args, text=text, text_cut=(),
                    unreadable=(), ids_before=ids if resolved else None,
                    ids_after=ids if resolved and op in CALL_CREDS_OPS else None,
                    caps_before=caps if resolved else None,
                    caps_after=caps if resolved and op in CALL_CREDS_OPS else None,
                )  # fmt: skip
    yield SyscallCounts(pid=42, counts={"read": 3}, final=True)
    yield ProcessSeen(
        pid=1,
        ppid=0,
        comm="init",
        exe="/sbin/init",
        cmdline=("/sbin/init",),
        uid=0,
        user="root",
        start_time=1_714_564_000.5,
        preexisting=True,
    )


def records() -> list[EvidenceRecord]:
    """The real mapper's records of :func:`events`, every ``capture.*`` record
    and a producer's ``app.event``."""
    mapper = Mapper(host="web-1", anchor=ANCHOR)
    out = [mapper.anchor_record(), *(mapper.map(event) for event in events())]
    ts = HEADER["ts_ns"]
    out += [
        mapper.capture_start({"probes": ["exec"]}, ts_ns=ts),
        mapper.capture_config({"probes": ["file"]}, ts_ns=ts),
        mapper.capture_degraded([ProbeStatus("x", "tracepoint", False, "no")], ts_ns=ts),
        mapper.capture_loss({"file": {"lost_kernel": 1}}, ts - 10, ts),
        mapper.capture_recovered({"last_seq": 1}, ts_ns=ts),
        mapper.capture_stop({"events": 1}, ts_ns=ts),
        mapper.app_event(
            AppEvent(
                pid=42,
                uid=1000,
                gid=1000,
                exe=b"/usr/bin/deploy",
                comm=b"deploy",
                cgroup_id=7,
                peer_gone=False,
                kind="deploy.start",
                message="v1.2",
                data={"version": "1.2"},
                ts_ns=ts,
            )
        ),
    ]
    return out


RECORDS = records()


def projected(record: EvidenceRecord) -> dict[str, Any] | None:
    """The OCSF event of a record, made from the typed payload and from the
    log's JSON (they must agree)."""
    typed = to_ocsf(record.event)
    assert typed == to_ocsf(plain(record))
    return typed


def test_every_record_type_is_covered() -> None:
    """Each type the mapper can write is made here and either projected and
    validated, or named as having no OCSF class."""
    made = {r.type for r in RECORDS}
    assert made == set(PAYLOAD_TYPES), sorted(set(PAYLOAD_TYPES) - made)
    for record in RECORDS:
        out = projected(record)
        if record.type in NOT_PROJECTED:
            assert out is None, record.type
        else:
            assert out is not None, record.type


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r.type.rsplit('.', 2)[-2]}")
def test_projected_record_follows_the_schema(record: EvidenceRecord) -> None:
    out = projected(record)
    if out is not None:
        assert validate(out) == [], (record.type, out)


def test_golden_capture_follows_the_schema() -> None:
    """The golden capture's hostile text, secrets and odd numbers, projected."""
    mapper = Mapper(host="golden-host", anchor=ANCHOR)
    mapper.anchor_record()
    checked = 0
    for event in golden_events(200):
        out = projected(mapper.map(event))
        if out is not None:
            assert validate(out) == [], out
            checked += 1
    assert checked > 100


def test_the_classes_used_are_the_schema_s() -> None:
    """The projection's class constants name the classes the schema gives those uids."""
    names = {uid: class_by_uid(uid) for uid in (CLASS_PROCESS, CLASS_FILE_SYSTEM, CLASS_NETWORK)}
    assert {uid: found[0] for uid, found in names.items() if found} == {
        1007: "process_activity",
        1001: "file_activity",
        4001: "network_activity",
    }
    assert facts()["version"] == OCSF_VERSION == "1.3.0"
    assert facts()["source"]["ref"] == "1.3.0"


# --- the validator can fail ---------------------------------------------------------


def _first(
    class_uid: int, pred: Callable[[dict[str, Any]], bool] = lambda e: True
) -> dict[str, Any]:
    for record in RECORDS:
        out = projected(record)
        if out is not None and out["class_uid"] == class_uid and pred(out):
            return out
    raise AssertionError(f"no projected record of class {class_uid}")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for key in parents:
            node = node[key]
        del node[last]

    return change


def _activity(activity_id: int, name: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event["activity_id"] = activity_id
        event["activity_name"] = name
        event["type_uid"] = event["class_uid"] * 100 + activity_id

    return change


BREAKAGES: list[tuple[int, str, Callable[[dict[str, Any]], None], str]] = [
    # process classes have no activity 14 (that is File System Activity's Open)
    (CLASS_PROCESS, "activity id of another class", _activity(14, "Open"), "activity_id"),
    (CLASS_FILE_SYSTEM, "caption not the id's", _set("activity_name", "Delete"), "activity_name"),
    # 100101 is a type_uid of the class (Create), but not of this event's activity (Open)
    (CLASS_FILE_SYSTEM, "type_uid arithmetic", _set("type_uid", 100101), "type_uid"),
    (CLASS_FILE_SYSTEM, "category", _set("category_uid", 4), "category_uid"),
    (CLASS_FILE_SYSTEM, "required file.type_id", _drop("file.type_id"), "file.type_id"),
    (CLASS_FILE_SYSTEM, "file type enum", _set("file.type_id", 12), "file.type_id"),
    (CLASS_PROCESS, "required actor", _drop("actor"), "actor"),
    (CLASS_PROCESS, "required device", _drop("device"), "device"),
    (CLASS_PROCESS, "pid as text", _set("process.pid", "42"), "process.pid"),
    (CLASS_PROCESS, "unknown attribute", _set("process.executable", "/bin/ls"), "executable"),
    (CLASS_PROCESS, "status enum", _set("status_id", 3), "status_id"),
    (CLASS_PROCESS, "severity caption", _set("severity", "Low"), "severity"),
    (CLASS_PROCESS, "boolean is no integer", _set("severity_id", True), "severity_id"),
    (CLASS_PROCESS, "os type", _set("device.os.type_id", 7), "device.os.type_id"),
    (CLASS_PROCESS, "version", _set("metadata.version", "1.1.0"), "metadata.version"),
    (CLASS_PROCESS, "required metadata.product", _drop("metadata.product"), "product"),
    (CLASS_PROCESS, "profile not declared", _set("process.container", {"uid": "c"}), "profile"),
    (CLASS_PROCESS, "empty user", _set("actor.user", {}), "actor.user"),
    (CLASS_NETWORK, "empty endpoint", _set("dst_endpoint", {}), "dst_endpoint"),
    (CLASS_NETWORK, "port range", _set("dst_endpoint.port", 70000), "port"),
    (CLASS_NETWORK, "required dst_endpoint", _drop("dst_endpoint"), "dst_endpoint"),
    (CLASS_NETWORK, "direction enum", _set("connection_info.direction_id", 5), "direction_id"),
    (CLASS_NETWORK, "host profile needed", _drop("metadata.profiles"), "profile"),
]


@pytest.mark.parametrize(
    ("class_uid", "what", "change", "named"), BREAKAGES, ids=[b[1] for b in BREAKAGES]
)
def test_the_validator_catches(
    class_uid: int, what: str, change: Callable[[dict[str, Any]], None], named: str
) -> None:
    event = copy.deepcopy(
        _first(class_uid, lambda e: "dst_endpoint" not in e or "port" in e["dst_endpoint"])
    )
    assert validate(event) == []
    change(event)
    errors = validate(event)
    assert errors, what
    assert any(named in error for error in errors), errors


def test_an_unknown_class_is_refused() -> None:
    event = copy.deepcopy(_first(CLASS_PROCESS))
    event["class_uid"] = 1099
    assert validate(event) == ["class_uid: 1099 is not a class of OCSF 1.3.0"]


def test_the_validator_catches_a_source_word_in_type_name() -> None:
    """type_name is type_uid's caption: 99's is "Other", the source's own
    word ("Bind") belongs in activity_name (what the projection once did wrong)."""
    event = copy.deepcopy(_first(CLASS_NETWORK, lambda e: e["activity_id"] == 99))
    assert event["activity_name"] == "Bind" and validate(event) == []
    event["type_name"] = "Network Activity: Bind"
    assert validate(event) == [
        "network_activity.type_name: 'Network Activity: Bind',"
        " type_uid 400199 is 'Network Activity: Other'"
    ]
