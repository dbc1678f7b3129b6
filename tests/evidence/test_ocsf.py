"""The OCSF 1.3.0 projection: classes, activities, required fields, arithmetic, the pin."""

from __future__ import annotations

import errno
from typing import Any

import msgspec
import pytest

from agent import __version__
from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
)
from agent.capture.loader import ProbeStatus
from agent.evidence.canonical import canonical
from agent.evidence.mapper import Mapper
from agent.evidence.ocsf import OCSF_VERSION, OcsfError, to_ocsf
from agent.evidence.types import Anchor, CloudEvent
from agent.redact import marker
from tests.evidence.plain_mapper import plain, plain_mapper

ANCHOR = Anchor(boot_id="boot-1", wall_ns=1_714_564_800_123_456_789, boottime_ns=10**12)
HEADER: dict[str, Any] = {
    "pid": 42,
    "tid": 43,
    "uid": 1000,
    "gid": 1000,
    "cgroup_id": 1,
    "comm": "app",
}
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"

BASE_REQUIRED = ("activity_id", "category_uid", "class_uid", "severity_id", "type_uid", "time")


def project(event: Event, ts_offset: int = 0) -> dict[str, Any] | None:
    mapper = Mapper(host="web-1", anchor=ANCHOR)
    mapper.anchor_record()
    if hasattr(event, "ts_ns"):
        event = msgspec.structs.replace(event, ts_ns=ANCHOR.boottime_ns + ts_offset)
    record = mapper.map(event)
    typed, read_back = to_ocsf(record.event), to_ocsf(plain(record))
    assert typed == read_back  # the typed payload and the log's JSON project alike
    return typed


def exec_event(ret: int = 0, argv: tuple[str, ...] = ("ls", "-l")) -> ExecEvent:
    return ExecEvent(
        ts_ns=0, ret=ret, filename="/bin/ls", argv=argv, argv_truncated=False, at=False, **HEADER
    )


def file_event(op: str, syscall: str = "", ret: int = 0, **kw: Any) -> FileEvent:
    fields: dict[str, Any] = {
        "path": "/etc/hosts",
        "dfd": -100,
        "dfd2": -100,
        "path2": "",
        "flags": 0,
        "mode": 0,
    }
    fields.update(kw)
    return FileEvent(ts_ns=0, op=op, syscall=syscall or op, ret=ret, **fields, **HEADER)


def net_event(op: str, endpoint: Endpoint | None, ret: int = 0) -> NetEvent:
    return NetEvent(ts_ns=0, op=op, ret=ret, fd=3, endpoint=endpoint, backlog=0, **HEADER)


IPV4 = Endpoint("ipv4", "192.0.2.7", 443)

CASES: list[tuple[Event, int, int]] = [
    (exec_event(), 1007, 1),
    (ForkEvent(ts_ns=0, child_pid=99, clone_flags=0, **HEADER), 1007, 1),
    (
        ExitEvent(ts_ns=0, exit_code=3, signal=0, have_code=True, have_signal=False, **HEADER),
        1007,
        2,
    ),
    (file_event("open", flags=0o100), 1001, 14),
    (file_event("mkdir"), 1001, 1),
    (file_event("unlink"), 1001, 4),
    (file_event("unlink", syscall="rmdir", flags=0x200), 1001, 4),
    (file_event("rename", path2="/etc/hosts.new"), 1001, 5),
    (file_event("chmod", mode=0o644), 1001, 7),
    (file_event("op9"), 1001, 99),
    (net_event("connect", IPV4), 4001, 1),
    (net_event("connect", IPV4, ret=-errno.EINPROGRESS), 4001, 1),
    (net_event("connect", IPV4, ret=-errno.ECONNREFUSED), 4001, 5),
    (net_event("connect", IPV4, ret=-errno.ENETUNREACH), 4001, 4),
    (net_event("accept", IPV4), 4001, 1),
    (net_event("accept", None, ret=-errno.EAGAIN), 4001, 4),
    (net_event("listen", None), 4001, 7),
    (net_event("listen", None, ret=-errno.EADDRINUSE), 4001, 4),
    (net_event("bind", Endpoint("unix", "/run/a.sock")), 4001, 99),
]


@pytest.mark.parametrize(("event", "class_uid", "activity_id"), CASES)
def test_class_activity_and_required_fields(event: Event, class_uid: int, activity_id: int) -> None:
    out = project(event)
    assert out is not None
    for name in BASE_REQUIRED:
        assert isinstance(out[name], int), name
    assert out["class_uid"] == class_uid
    assert out["activity_id"] == activity_id
    assert out["type_uid"] == class_uid * 100 + activity_id
    assert out["category_uid"] == class_uid // 1000
    assert out["severity_id"] == 1
    assert out["status_id"] in (1, 2)
    metadata = out["metadata"]
    assert metadata["version"] == "1.3.0"
    assert metadata["product"] == {
        "name": "tracehound",
        "vendor_name": "tracehound",
        "version": __version__,
    }
    assert out["device"]["hostname"] == "web-1"
    assert out["actor"]["process"]["pid"] == 42
    if class_uid == 1007:
        assert "pid" in out["process"]
    elif class_uid == 1001:
        assert {"name", "type_id"} <= set(out["file"])
    else:
        # dst_endpoint is required and names something; src_endpoint only when known
        assert out["dst_endpoint"]
        assert out.get("src_endpoint", True)
        assert out["metadata"]["profiles"] == ["host"]  # network classes: actor, device
        assert "direction_id" in out["connection_info"]
    canonical(out)  # plain JSON: no floats, nothing exotic


def test_metadata_uid_is_the_record_id() -> None:
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    mapper.anchor_record()
    record = mapper.map(exec_event())
    out = to_ocsf(record)
    assert out is not None
    assert out["metadata"]["uid"] == record.id


def test_every_event_says_the_schema_version_it_follows() -> None:
    """The class and activity ids are OCSF 1.3.0's, and every event says so
    (the module's documentation names the same version)."""
    out = project(exec_event())
    assert out is not None
    assert out["metadata"]["version"] == OCSF_VERSION
    assert (out["class_uid"], OCSF_VERSION) == (1007, "1.3.0")
    import agent.evidence.ocsf as module

    assert module.__doc__ is not None and OCSF_VERSION in module.__doc__


def test_bytes_that_are_not_utf8_stay_reversible_and_named() -> None:
    out = project(exec_event(argv=("cat", "a b", "x\udcff\n")))
    assert out is not None
    assert out["process"]["cmd_line"] == "cat 'a b' $'x\\377\\n'"
    assert out["unmapped"]["escaped"] == ["argv"]


def test_time_is_epoch_ms_floored() -> None:
    # Anchor wall time is ...800.123456789 s; +876543210 ns is ...800.999999999 s.
    out = project(exec_event(), ts_offset=876_543_210)
    assert out is not None
    assert out["time"] == 1_714_564_800_999
    out = project(exec_event(), ts_offset=876_543_211)
    assert out is not None
    assert out["time"] == 1_714_564_801_000


def test_exec_process_object() -> None:
    out = project(exec_event(argv=("app", f"--token={TOKEN}")))
    assert out is not None
    process = out["process"]
    # Shell-quoted word by word: the marker has characters a shell reads.
    assert process["cmd_line"] == f"app '{marker('github-token')}'"
    assert process["file"] == {"name": "ls", "path": "/bin/ls", "type_id": 1}
    assert TOKEN not in repr(out)


def test_failed_exec_is_a_failed_launch() -> None:
    out = project(exec_event(ret=-errno.ENOENT))
    assert out is not None
    assert (out["activity_id"], out["status_id"], out["status_code"]) == (1, 2, "ENOENT")


def test_exit_code_and_signal() -> None:
    exited = ExitEvent(ts_ns=0, exit_code=3, signal=0, have_code=True, have_signal=False, **HEADER)
    out = project(exited)
    assert out is not None
    assert out["exit_code"] == 3
    killed = ExitEvent(ts_ns=0, exit_code=0, signal=9, have_code=False, have_signal=True, **HEADER)
    out = project(killed)
    assert out is not None
    assert "exit_code" not in out
    assert out["unmapped"]["signal"] == 9


def test_fork_names_the_child() -> None:
    out = project(ForkEvent(ts_ns=0, child_pid=99, clone_flags=0, **HEADER))
    assert out is not None
    assert out["process"] == {"pid": 99, "parent_process": {"pid": 42}}


def test_rename_has_a_file_result() -> None:
    out = project(file_event("rename", path2="/etc/hosts.new"))
    assert out is not None
    assert out["file"]["path"] == "/etc/hosts"
    assert out["file_result"] == {"name": "hosts.new", "path": "/etc/hosts.new", "type_id": 0}


def test_failed_file_op_has_a_status_code() -> None:
    out = project(file_event("unlink", ret=-errno.EACCES))
    assert out is not None
    assert (out["status_id"], out["status_code"]) == (2, "EACCES")


def test_network_endpoints_by_direction() -> None:
    out = project(net_event("connect", IPV4))
    assert out is not None
    assert out["src_endpoint"] == {"hostname": "web-1"}
    assert out["dst_endpoint"] == {"ip": "192.0.2.7", "port": 443}
    assert out["connection_info"]["direction_id"] == 2
    out = project(net_event("accept", IPV4))
    assert out is not None
    assert out["src_endpoint"] == {"ip": "192.0.2.7", "port": 443}
    assert out["connection_info"]["direction_id"] == 1
    out = project(net_event("bind", Endpoint("unix", "/run/a.sock")))
    assert out is not None
    assert out["activity_name"] == "Bind"
    assert out["dst_endpoint"] == {"hostname": "web-1", "name": "unix:/run/a.sock"}


def test_in_progress_connect_is_not_a_failure() -> None:
    out = project(net_event("connect", IPV4, ret=-errno.EINPROGRESS))
    assert out is not None
    assert out["status_id"] == 1


def test_udp_sends_are_outbound_traffic() -> None:
    dns = Endpoint("ipv4", "192.0.2.53", 53)
    sent = NetEvent(ts_ns=0, op="sendto", ret=40, fd=3, endpoint=dns, backlog=0, count=3,
                    proto="udp", messages=1, **HEADER)  # fmt: skip
    out = project(sent)
    assert out is not None
    assert (out["activity_id"], out["activity_name"], out["type_uid"]) == (6, "Traffic", 400106)
    assert out["dst_endpoint"] == {"ip": "192.0.2.53", "port": 53}
    assert out["src_endpoint"] == {"hostname": "web-1"}
    assert out["connection_info"] == {"direction_id": 2, "protocol_name": "udp", "protocol_num": 17}
    assert out["traffic"] == {"packets_out": 3, "bytes_out": 120}
    batch = msgspec.structs.replace(sent, op="sendmmsg", ret=5, messages=4, count=1,
                                    peer_from_socket=True, more_messages=True)  # fmt: skip
    out = project(batch)
    assert out is not None
    assert out["traffic"] == {"packets_out": 4}  # sendmmsg's result counts messages
    assert out["unmapped"]["peer_from_socket"] is out["unmapped"]["more_messages"] is True
    failed = project(msgspec.structs.replace(sent, ret=-errno.ENETUNREACH, count=1))
    assert failed is not None
    assert (failed["activity_id"], failed["status_code"]) == (4, "ENETUNREACH")
    assert "traffic" not in failed


@pytest.mark.parametrize(
    ("outcome", "ret", "activity", "status"),
    [
        ("established", 0, 1, (1, None)),
        ("refused", -errno.ECONNREFUSED, 5, (2, "ECONNREFUSED")),
        ("failed", -errno.ETIMEDOUT, 4, (2, "ETIMEDOUT")),
        ("failed", 0, 4, (2, "unknown")),
    ],
)
def test_connect_result_activity(
    outcome: str, ret: int, activity: int, status: tuple[int, str | None]
) -> None:
    event = NetEvent(ts_ns=0, op="connect_result", ret=ret, fd=3, endpoint=IPV4, backlog=0,
                     proto="tcp", outcome=outcome, unchecked=ret == 0 and outcome == "failed",
                     **HEADER)  # fmt: skip
    out = project(event)
    assert out is not None
    assert out["activity_id"] == activity
    assert (out["status_id"], out.get("status_code")) == status
    assert out["dst_endpoint"] == {"ip": "192.0.2.7", "port": 443}
    assert out["connection_info"]["protocol_num"] == 6


def test_records_without_a_class_give_none() -> None:
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    records = [
        mapper.anchor_record(),
        mapper.map(SyscallCounts(pid=1, counts={"read": 1}, final=False)),
        mapper.map(
            ProcessSeen(
                pid=1,
                ppid=0,
                comm="init",
                exe="/sbin/init",
                cmdline=(),
                uid=0,
                user="root",
                start_time=0.0,
                preexisting=True,
            )
        ),
        mapper.capture_loss({"exec": {"lost_kernel": 1}}, 0, 1),
        mapper.capture_degraded([ProbeStatus("file.chmod", "file", False, "missing")]),
        mapper.capture_start({}),
        mapper.capture_config({}),
        mapper.capture_stop({}),
    ]
    assert [to_ocsf(r) for r in records] == [None] * len(records)


def test_foreign_or_newer_types_give_none() -> None:
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    mapper.anchor_record()
    record = mapper.map(exec_event())
    assert to_ocsf(msgspec.structs.replace(record, type="com.example.exec.v1")) is None
    assert to_ocsf(msgspec.structs.replace(record, type="dev.tracehound.process.exec.v2")) is None


def test_a_record_missing_a_field_raises_ocsf_error() -> None:
    mapper = plain_mapper(host="h", anchor=ANCHOR)
    mapper.anchor_record()
    record: CloudEvent = mapper.map(exec_event())
    broken = msgspec.structs.replace(
        record, data={k: v for k, v in record.data.items() if k != "argv"}
    )
    with pytest.raises(OcsfError, match="argv"):
        to_ocsf(broken)


def test_an_address_not_captured_is_named_not_guessed() -> None:
    """OCSF requires dst_endpoint and an endpoint naming something: a connect
    whose address could not be read says so; an accept with no peer address
    leaves src_endpoint out (it is only recommended)."""
    out = project(net_event("connect", None))
    assert out is not None
    assert out["dst_endpoint"] == {"name": "unresolved"}
    out = project(net_event("accept", None, ret=-errno.EAGAIN))
    assert out is not None
    assert "src_endpoint" not in out
    assert out["dst_endpoint"] == {"hostname": "web-1"}


def test_type_name_of_other_is_the_schema_s_caption() -> None:
    """type_name is type_uid's caption ("...: Other" for 99); the source's
    own word stays in activity_name."""
    out = project(net_event("bind", IPV4))
    assert out is not None
    assert (out["type_uid"], out["type_name"], out["activity_name"]) == (
        400199,
        "Network Activity: Other",
        "Bind",
    )
    out = project(exec_event(ret=-errno.ENOENT))
    assert out is not None
    assert (out["status_id"], out["status"]) == (2, "Failure")


def test_the_absolute_path_is_the_file_path_and_the_name_as_passed_is_kept() -> None:
    from agent.capture import kinds

    out = project(
        file_event(
            "rename", syscall="renameat2", path="a.tmp", path2="../a", dfd=3, dfd2=3,
            abs_path="/srv/w/a.tmp", abs_flags=kinds.PATH_JOINED,
            abs_path2="/srv/a", abs2_flags=kinds.PATH_JOINED | kinds.PATH_CUT,
        )
    )  # fmt: skip
    assert out is not None
    assert (out["file"]["path"], out["file"]["name"]) == ("/srv/w/a.tmp", "a.tmp")
    assert out["file_result"]["path"] == "/srv/a"
    unmapped = out["unmapped"]
    assert (unmapped["path_passed"], unmapped["path2_passed"]) == ("a.tmp", "../a")
    assert (unmapped["path_flags"], unmapped["path2_flags"]) == (["joined"], ["cut", "joined"])
    # Resolved whole, from the file, by the same name: nothing more to say.
    same = project(file_event("open", abs_path="/etc/hosts", abs_flags=0))
    assert same is not None and same["file"]["path"] == "/etc/hosts"
    assert "path_passed" not in same["unmapped"] and "path_flags" not in same["unmapped"]
    # Not resolved: the name as passed, and why not.
    off = project(file_event("open", path="rel", abs_flags=kinds.PATH_NO_LAYOUT))
    assert off is not None and off["file"]["path"] == "rel"
    assert off["unmapped"]["path_flags"] == ["no_layout"]
