"""The mapper: every event kind, the envelope, identity, time, redaction, capture records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import blake3
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
from agent.evidence.canonical import CanonicalError, canonical
from agent.evidence.mapper import MapperStateError, decode, encode
from agent.evidence.record_types import (
    TYPE_ANCHOR,
    TYPE_CONFIG,
    TYPE_DEGRADED,
    TYPE_EXEC,
    TYPE_EXIT,
    TYPE_FORK,
    TYPE_LOSS,
    TYPE_SEEN,
    TYPE_START,
    TYPE_STOP,
    TYPE_SYSCALLS,
    file_type,
    net_type,
)
from agent.evidence.types import EXTENSION_NAME, Anchor, CloudEvent, format_rfc3339_ns
from agent.redact import BUILTIN_RULES, ERROR_MARKER, CompiledRule, Redactor, Rule, marker
from tests.evidence.plain_mapper import plain_mapper

BOOT_ID = "7c1c1a7e-3b1e-4a55-9d4c-1f2e3d4c5b6a"
# 2024-05-01T12:00:00.123456789Z, read at 1000 s of boot time.
WALL_NS = 1_714_564_800_123_456_789
BOOT_NS = 1_000_000_000_000
ANCHOR = Anchor(boot_id=BOOT_ID, wall_ns=WALL_NS, boottime_ns=BOOT_NS)
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
HEADER: dict[str, Any] = {"tid": 0, "uid": 1000, "gid": 1000, "cgroup_id": 2**60 + 7, "comm": "app"}


def at(offset_ns: int) -> int:
    """A kernel timestamp ``offset_ns`` after the anchor."""
    return BOOT_NS + offset_ns


def exec_event(argv: tuple[str, ...] = ("ls", "-l"), filename: str = "/bin/ls") -> ExecEvent:
    return ExecEvent(
        pid=10,
        ts_ns=at(1),
        ret=0,
        filename=filename,
        argv=argv,
        argv_truncated=False,
        at=False,
        ppid=9,
        euid=0,
        egid=1000,
        loginuid=4294967295,
        cwd="/home/app",
        exe="/usr/bin/ls",
        exe_flags=4,
        fileless=True,
        exe_memfd=True,
        unresolved=("argv",),
        **HEADER,
    )


def file_event(op: str, path: str = "/etc/hosts", **kw: object) -> FileEvent:
    fields: dict[str, object] = {
        "syscall": op,
        "ret": 0,
        "dfd": -100,
        "path": path,
        "dfd2": -100,
        "path2": "",
        "flags": 0,
        "mode": 0,
    }
    fields.update(kw)
    return FileEvent(pid=10, ts_ns=at(5), op=op, **fields, **HEADER)  # type: ignore[arg-type]


def net_event(op: str, endpoint: Endpoint | None, ret: int = 0) -> NetEvent:
    return NetEvent(
        pid=10, ts_ns=at(6), op=op, ret=ret, fd=3, endpoint=endpoint, backlog=128, **HEADER
    )


def sample_events() -> list[Event]:
    """One of every kind, every file and network op included."""
    return [
        exec_event(("curl", "-H", f"Authorization: token {GITHUB_TOKEN}", "https://x")),
        ForkEvent(pid=10, ts_ns=at(2), child_pid=11, clone_flags=0x11, **HEADER),
        ExitEvent(
            pid=11, ts_ns=at(3), exit_code=1, signal=0, have_code=True, have_signal=False, **HEADER
        ),
        file_event("open", flags=0o100),
        file_event("unlink", "/tmp/a"),
        file_event("unlink", "/tmp/d", syscall="unlinkat", flags=0x200),
        file_event("unlink", "/tmp/e", syscall="rmdir", flags=0x200),  # as the probe records it
        file_event("rename", "/tmp/a", path2="/tmp/b", syscall="renameat2"),
        file_event("chmod", "/tmp/b", mode=0o600),
        file_event("mkdir", "/tmp/c", mode=0o755),
        net_event("connect", Endpoint("ipv4", "93.184.216.34", 443)),
        net_event("accept", Endpoint("ipv6", "::1", 5555)),
        net_event("bind", Endpoint("unix", "/run/app.sock")),
        net_event("listen", None),
        SyscallCounts(pid=10, counts={"read": 3, "write": 1}, final=True),
        ProcessSeen(
            pid=1,
            ppid=0,
            comm="init",
            exe="/sbin/init",
            cmdline=("/sbin/init", "splash"),
            uid=0,
            user="root",
            start_time=1_714_564_000.25,
            preexisting=True,
        ),
    ]


def make_mapper(**kw: object) -> Any:
    return plain_mapper(host="web-1", anchor=ANCHOR, **kw)


def mapped(events: list[Event], **kw: object) -> list[CloudEvent]:
    return list(make_mapper(**kw).records(events))


# --- the stream ---------------------------------------------------------------


def test_anchor_record_is_first_and_holds_the_anchor() -> None:
    records = mapped(sample_events())
    first = records[0]
    assert first.type == TYPE_ANCHOR
    assert first.thseq == 0
    assert first.time == "2024-05-01T12:00:00.123456789Z"
    assert first.data == {"boot_id": BOOT_ID, "wall_ns": str(WALL_NS), "boottime_ns": str(BOOT_NS)}
    assert [r.thseq for r in records] == list(range(len(records)))


def test_map_before_the_anchor_is_refused_and_uses_no_seq() -> None:
    mapper = make_mapper()
    with pytest.raises(MapperStateError):
        mapper.map(exec_event())
    with pytest.raises(MapperStateError):
        mapper.capture_start({})
    assert mapper.next_seq == 1
    assert mapper.mapper.anchor_record() is mapper.mapper.anchor_record()
    assert mapper.map(exec_event()).thseq == 1


def test_same_capture_mapped_twice_is_byte_identical() -> None:
    first = [encode(r) for r in mapped(sample_events())]
    second = [encode(r) for r in mapped(sample_events())]
    assert first == second
    assert len({decode(raw).id for raw in first}) == len(first)


def test_two_runs_on_one_boot_get_different_ids() -> None:
    other_run = Anchor(boot_id=BOOT_ID, wall_ns=WALL_NS + 1, boottime_ns=BOOT_NS + 1)
    first = plain_mapper(host="h", anchor=ANCHOR).anchor_record().id
    second = plain_mapper(host="h", anchor=other_run).anchor_record().id
    assert first != second


def test_id_and_hash_are_derived_as_documented() -> None:
    for record in mapped(sample_events()):
        assert record.thhash == blake3.blake3(canonical(record.data)).hexdigest()
        identity = canonical(
            [record.source, BOOT_ID, str(WALL_NS), record.thseq, record.type, record.thhash]
        )
        assert record.id == blake3.blake3(identity).hexdigest()[:32]


def test_a_different_boot_or_host_gives_different_ids() -> None:
    base = mapped(sample_events())
    other_boot = list(
        plain_mapper(
            host="web-1",
            anchor=Anchor(boot_id="other", wall_ns=WALL_NS, boottime_ns=BOOT_NS),
        ).records(sample_events())
    )
    other_host = list(plain_mapper(host="web-2", anchor=ANCHOR).records(sample_events()))
    ids = {r.id for r in base}
    assert ids.isdisjoint(r.id for r in other_boot)
    assert ids.isdisjoint(r.id for r in other_host)


def test_envelope_attributes_and_extension_names() -> None:
    record = mapped([exec_event()])[1]
    raw = msgspec.json.decode(encode(record))
    assert raw["specversion"] == "1.0"
    assert raw["source"] == "tracehound://web-1"
    assert raw["datacontenttype"] == "application/json"
    assert raw["subject"] == "pid/10"
    assert raw["thproducer"] == "tracehound"
    assert raw["thversion"] == __version__
    assert raw["thhost"] == "web-1"
    assert raw["thbootid"] == BOOT_ID
    assert "traceparent" not in raw and "tracestate" not in raw
    core = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
    for name in set(raw) - core:
        assert EXTENSION_NAME.fullmatch(name), name
    assert re.fullmatch(r"[0-9a-f]{32}", raw["id"])
    assert re.fullmatch(r"[0-9a-f]{64}", raw["thhash"])


def test_every_type_is_reverse_dns_and_versioned() -> None:
    for record in mapped(sample_events()):
        assert re.fullmatch(r"dev\.tracehound\.[a-z]+\.[a-z]+\.v1", record.type), record.type


def test_source_percent_encodes_the_host() -> None:
    assert plain_mapper(host="a b/c", anchor=ANCHOR).source == "tracehound://a%20b%2Fc"
    assert plain_mapper(host="h", anchor=ANCHOR, source="/custom").source == "/custom"


def test_trace_context_is_carried_when_given() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    record = mapped([exec_event()], traceparent=parent, tracestate="congo=t61rcWkgMzE")[1]
    raw = msgspec.json.decode(encode(record))
    assert raw["traceparent"] == parent
    assert raw["tracestate"] == "congo=t61rcWkgMzE"


@pytest.mark.parametrize(
    "kw",
    [
        {"host": ""},
        {"traceparent": "not-a-traceparent"},
        {"anchor": Anchor(boot_id="", wall_ns=1, boottime_ns=1)},
        {"anchor": Anchor(boot_id="b", wall_ns=-1, boottime_ns=1)},
        {"anchor": Anchor(boot_id="b", wall_ns=10**30, boottime_ns=1)},
    ],
)
def test_bad_constructor_arguments_are_refused(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"host": "h", "anchor": ANCHOR, **kw}
    with pytest.raises(ValueError):
        plain_mapper(**args)  # type: ignore[arg-type]


def test_records_decode_back_equal() -> None:
    mapper = make_mapper()
    for record in mapper.records(sample_events()):
        assert encode(record) == canonical(record)
        assert decode(encode(record)) == record


def test_unknown_objects_are_refused() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    with pytest.raises(TypeError):
        mapper.map("exec")  # type: ignore[arg-type]


# --- time ---------------------------------------------------------------------


def test_time_is_nanosecond_exact() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    event = msgspec.structs.replace(exec_event(), ts_ns=at(876_543_211))
    # 12:00:00.123456789 + 0.876543211 s = 12:00:01.000000000 exactly.
    assert mapper.map(event).time == "2024-05-01T12:00:01.000000000Z"
    event = msgspec.structs.replace(exec_event(), ts_ns=at(-123_456_790))
    assert mapper.map(event).time == "2024-05-01T11:59:59.999999999Z"


def test_time_beyond_float_precision() -> None:
    # 2**53 ns past the anchor: a float would lose the last nanosecond.
    mapper = plain_mapper(host="h", anchor=Anchor(boot_id="b", wall_ns=0, boottime_ns=0))
    mapper.anchor_record()
    event = msgspec.structs.replace(exec_event(), ts_ns=2**53 + 1)
    assert mapper.map(event).time == format_rfc3339_ns(2**53 + 1)
    assert mapper.map(event).time.endswith(".254740993Z")


def test_records_without_a_timestamp_take_the_latest_kernel_time() -> None:
    mapper = make_mapper()
    anchor = mapper.anchor_record()
    counts = SyscallCounts(pid=1, counts={}, final=False)
    assert mapper.map(counts).time == anchor.time
    late = mapper.map(msgspec.structs.replace(exec_event(), ts_ns=at(10**9)))
    mapper.map(msgspec.structs.replace(exec_event(), ts_ns=at(5)))  # earlier: no change
    assert mapper.map(counts).time == late.time
    assert mapper.capture_stop({}, ts_ns=at(2 * 10**9)).time == "2024-05-01T12:00:02.123456789Z"


def test_a_timestamp_with_no_rfc3339_form_raises_and_keeps_the_stream_gapless() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    with pytest.raises(ValueError):
        mapper.map(msgspec.structs.replace(exec_event(), ts_ns=10**21))
    assert mapper.map(exec_event()).thseq == 1


# --- every kind ---------------------------------------------------------------


def by_type(records: list[CloudEvent]) -> dict[str, list[CloudEvent]]:
    out: dict[str, list[CloudEvent]] = {}
    for record in records:
        out.setdefault(record.type, []).append(record)
    return out


def test_every_kind_maps_to_its_type() -> None:
    types = [r.type for r in mapped(sample_events())[1:]]
    assert types == [
        TYPE_EXEC,
        TYPE_FORK,
        TYPE_EXIT,
        "dev.tracehound.file.open.v1",
        "dev.tracehound.file.unlink.v1",
        "dev.tracehound.file.rmdir.v1",
        "dev.tracehound.file.rmdir.v1",
        "dev.tracehound.file.rename.v1",
        "dev.tracehound.file.chmod.v1",
        "dev.tracehound.file.mkdir.v1",
        "dev.tracehound.network.connect.v1",
        "dev.tracehound.network.accept.v1",
        "dev.tracehound.network.bind.v1",
        "dev.tracehound.network.listen.v1",
        TYPE_SYSCALLS,
        TYPE_SEEN,
    ]


def test_unknown_ops_get_an_other_type() -> None:
    assert file_type("op9") == "dev.tracehound.file.other.v1"
    assert net_type("op9") == "dev.tracehound.network.other.v1"


def test_exec_data() -> None:
    record = mapped([exec_event()])[1]
    assert record.data == {
        "pid": 10,
        "tid": 0,
        "uid": 1000,
        "gid": 1000,
        "cgroup_id": str(2**60 + 7),
        "cgroup": None,  # no resolver: not known
        "container": None,
        "comm": "app",
        "ts_ns": str(at(1)),
        "ret": 0,
        "filename": "/bin/ls",
        "argv": ["ls", "-l"],
        "argv_truncated": False,
        "args_cut": [],
        "argv_more": False,
        "filename_cut": False,
        "execveat": False,
        "ppid": 9,
        "euid": 0,
        "egid": 1000,
        "loginuid": 4294967295,
        "cwd": "/home/app",
        "cwd_flags": [],
        "exe": "/usr/bin/ls",
        "exe_flags": ["unreachable"],
        "fileless": True,
        "exe_memfd": True,
        "unresolved": ["argv"],
        "redacted": [],
    }


def test_fork_exit_data() -> None:
    records = by_type(mapped(sample_events()))
    fork = records[TYPE_FORK][0]
    assert fork.subject == "pid/11"
    assert (fork.data["pid"], fork.data["child_pid"], fork.data["clone_flags"]) == (10, 11, 0x11)
    exit_ = records[TYPE_EXIT][0]
    assert exit_.subject == "pid/11"
    assert (exit_.data["exit_code"], exit_.data["signal"]) == (1, None)


def test_killed_process_has_a_signal_and_no_code() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    killed = ExitEvent(
        pid=5, ts_ns=at(1), exit_code=0, signal=9, have_code=False, have_signal=True, **HEADER
    )
    record = mapper.map(killed)
    assert (record.data["exit_code"], record.data["signal"]) == (None, 9)


def test_file_data() -> None:
    records = by_type(mapped(sample_events()))
    opened = records["dev.tracehound.file.open.v1"][0]
    assert opened.subject == "/etc/hosts"
    assert opened.data["path"] == "/etc/hosts"
    assert opened.data["flags"] == 0o100
    assert opened.data["path2"] is None
    renamed = records["dev.tracehound.file.rename.v1"][0]
    assert (renamed.data["path"], renamed.data["path2"]) == ("/tmp/a", "/tmp/b")
    assert renamed.data["syscall"] == "renameat2"
    assert records["dev.tracehound.file.chmod.v1"][0].data["mode"] == 0o600


def test_file_with_empty_path_has_a_pid_subject() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    assert mapper.map(file_event("open", "")).subject == "pid/10"


def test_net_data() -> None:
    records = by_type(mapped(sample_events()))
    connect = records["dev.tracehound.network.connect.v1"][0]
    assert connect.data["endpoint"] == {"family": "ipv4", "address": "93.184.216.34", "port": 443}
    assert connect.data["backlog"] is None
    assert records["dev.tracehound.network.listen.v1"][0].data["endpoint"] is None
    assert records["dev.tracehound.network.listen.v1"][0].data["backlog"] == 128
    unix = records["dev.tracehound.network.bind.v1"][0].data["endpoint"]
    assert unix == {"family": "unix", "address": "/run/app.sock", "port": 0}


def test_udp_send_and_connect_result_data() -> None:
    dns = Endpoint("ipv6", "::1", 53)
    send = NetEvent(pid=10, ts_ns=at(7), op="sendmmsg", ret=2, fd=4, endpoint=dns, backlog=0,
                    proto="udp", messages=2, peer_from_socket=True, **HEADER)  # fmt: skip
    result = NetEvent(pid=10, ts_ns=at(8), op="connect_result", ret=-111, fd=5, backlog=0,
                      endpoint=Endpoint("ipv4", "127.0.0.1", 9), proto="tcp",
                      outcome="refused", **HEADER)  # fmt: skip
    plain_send = NetEvent(pid=10, ts_ns=at(9), op="sendto", ret=9, fd=4, endpoint=dns, backlog=0,
                          messages=1, unchecked=True, **HEADER)  # fmt: skip
    records = mapped([send, result, plain_send])[1:]
    assert [r.type for r in records] == [
        "dev.tracehound.network.sendmmsg.v1",
        "dev.tracehound.network.connect_result.v1",
        "dev.tracehound.network.sendto.v1",
    ]
    data = [dict(r.data) for r in records]
    for d in data:
        for key in ("cgroup_id", "comm", "gid", "pid", "redacted", "tid", "ts_ns", "uid"):
            d.pop(key)
        assert (d.pop("cgroup"), d.pop("container")) == (None, None)
    assert data[0] == {"op": "sendmmsg", "ret": 2, "fd": 4, "backlog": None, "proto": "udp",
                       "endpoint": {"family": "ipv6", "address": "::1", "port": 53},
                       "messages": 2, "peer_from_socket": True}  # fmt: skip
    assert data[1] == {"op": "connect_result", "ret": -111, "fd": 5, "backlog": None,
                       "endpoint": {"family": "ipv4", "address": "127.0.0.1", "port": 9},
                       "proto": "tcp", "outcome": "refused"}  # fmt: skip
    assert data[2]["messages"] == 1 and data[2]["unchecked"] is True and "proto" not in data[2]


def test_syscalls_and_seen_data() -> None:
    records = by_type(mapped(sample_events()))
    counts = records[TYPE_SYSCALLS][0]
    assert counts.data == {"pid": 10, "counts": {"read": 3, "write": 1}, "final": True}
    seen = records[TYPE_SEEN][0]
    assert seen.data["start_time_ms"] == 1_714_564_000_250
    assert seen.data["cmdline"] == ["/sbin/init", "splash"]
    assert seen.data["exe"] == "/sbin/init"
    assert seen.subject == "pid/1"


def test_seen_with_a_nan_start_time_gets_none() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    seen = ProcessSeen(
        pid=1,
        ppid=0,
        comm="x",
        exe="",
        cmdline=(),
        uid=0,
        user="root",
        start_time=float("nan"),
        preexisting=False,
    )
    assert mapper.map(seen).data["start_time_ms"] is None


def test_no_floats_anywhere() -> None:
    def walk(value: object) -> Iterator[object]:
        yield value
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    for record in mapped(sample_events()):
        raw = msgspec.json.decode(encode(record))
        assert not any(isinstance(v, float) for v in walk(raw))


# --- redaction ----------------------------------------------------------------


SECRET_PATH = f"/home/u/.cache/{GITHUB_TOKEN}/x"
SECRET_UNIX = f"/run/{GITHUB_TOKEN}.sock"


def secret_events() -> list[Event]:
    return [
        exec_event(("app", f"--token={GITHUB_TOKEN}", "--password", "hunter2hunter2")),
        exec_event(("app",), filename=f"/opt/{GITHUB_TOKEN}/bin"),
        file_event("open", SECRET_PATH),
        file_event("rename", "/tmp/a", path2=SECRET_PATH),
        net_event("connect", Endpoint("unix", SECRET_UNIX)),
        ProcessSeen(
            pid=2,
            ppid=1,
            comm="app",
            exe=f"/opt/{GITHUB_TOKEN}",
            cmdline=("app", f"--api-key={GITHUB_TOKEN}"),
            uid=0,
            user="root",
            start_time=1.0,
            preexisting=True,
        ),
    ]


def test_secrets_never_reach_the_encoded_bytes() -> None:
    mapper = make_mapper()
    blob = b"".join(encode(r) for r in mapper.records(secret_events()))
    assert GITHUB_TOKEN.encode() not in blob
    assert b"hunter2hunter2" not in blob
    assert marker("github-token").encode() in blob
    assert b"--password" in blob  # the flag stays; only its value goes
    stats = mapper.redaction_stats
    assert stats.fields_redacted["github-token"] >= 6
    assert stats.failures == {}


def test_redacted_lists_the_rules_that_fired() -> None:
    records = mapped(secret_events())
    assert records[1].data["redacted"] == ["github-token", "secret-flag"]
    assert records[1].data["argv"] == ["app", marker("github-token"), "--password", "***"]
    assert records[3].subject == marker("github-token")
    assert records[4].data["path2"] == marker("github-token")
    assert records[5].data["endpoint"]["address"] == marker("github-token")


class Boom:
    """A matcher that raises on any text holding TRIGGER, like a rule with a bug."""

    def __init__(self) -> None:
        self._inner = re.compile("zzz")

    def search(self, string: str, /) -> re.Match[str] | None:
        if "TRIGGER" in string:
            raise RuntimeError("boom TRIGGER")
        return self._inner.search(string)

    def finditer(self, string: str, /) -> Iterator[re.Match[str]]:
        if "TRIGGER" in string:
            raise RuntimeError("boom TRIGGER")
        return self._inner.finditer(string)


def test_a_failing_rule_fails_closed_to_the_marker_and_counts() -> None:
    planted = CompiledRule(Rule(name="planted", privacy="sensitive", pattern="zzz"), Boom())
    redactor = Redactor([*BUILTIN_RULES, planted])
    mapper = make_mapper(redactor=redactor)
    mapper.anchor_record()
    raw_secret = "TRIGGER-raw-value"
    records = [
        mapper.map(exec_event(("app", raw_secret, "next"), filename=f"/x/{raw_secret}")),
        mapper.map(file_event("open", f"/tmp/{raw_secret}")),
        mapper.map(net_event("connect", Endpoint("unix", f"/run/{raw_secret}"))),
    ]
    blob = b"".join(encode(r) for r in records)
    assert raw_secret.encode() not in blob
    assert records[0].data["argv"][1] == ERROR_MARKER
    assert records[0].data["filename"] == ERROR_MARKER
    assert records[1].data["path"] == ERROR_MARKER
    assert records[2].data["endpoint"]["address"] == ERROR_MARKER
    assert all("error" in r.data["redacted"] for r in records)
    stats = mapper.redaction_stats
    assert stats.failures["rule:planted"] == 4
    # The entry after a failed one is masked too: it may be the failed flag's value.
    assert records[0].data["argv"][2] == ERROR_MARKER
    assert stats.failures["after-failure"] == 1
    assert stats.failures_by_field == {"argv": 2, "filename": 1, "path": 1, "address": 1}
    stop = mapper.capture_stop({"reason": "done"})
    assert stop.data["redaction"]["failures"]["rule:planted"] == 4


def test_default_redactor_is_the_builtin_one() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    record = mapper.map(exec_event(("app", GITHUB_TOKEN)))
    assert record.data["argv"] == ["app", marker("github-token")]


# --- capture records ------------------------------------------------------------


def test_capture_loss_record() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    record = mapper.capture_loss(
        {"exec": {"lost_kernel": 3, "dropped": 0}, "file": {"decode_errors": 2}},
        at(0),
        at(10**9),
    )
    assert record.type == TYPE_LOSS
    assert record.thseq == 1
    assert record.time == "2024-05-01T12:00:01.123456789Z"
    assert record.data == {
        "counts": {"exec": {"lost_kernel": 3, "dropped": 0}, "file": {"decode_errors": 2}},
        "total": 5,
        "window_start_ns": str(at(0)),
        "window_end_ns": str(at(10**9)),
        "window_start": "2024-05-01T12:00:00.123456789Z",
        "window_end": "2024-05-01T12:00:01.123456789Z",
    }


@pytest.mark.parametrize(
    ("counts", "start", "end"),
    [
        ({"exec": {"lost": -1}}, 0, 1),
        ({"exec": {"lost": True}}, 0, 1),
        ({"exec": {"lost": 1.0}}, 0, 1),
        ({}, 5, 1),
    ],
)
def test_bad_loss_input_is_refused_without_using_a_seq(
    counts: dict[str, dict[str, int]], start: int, end: int
) -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    with pytest.raises(ValueError):
        mapper.capture_loss(counts, start, end)
    assert mapper.next_seq == 1


def test_capture_degraded_record() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    record = mapper.capture_degraded(
        [
            ProbeStatus("file.openat2", "file", False, "tracepoint missing"),
            ProbeStatus("exec.execve", "exec", True),
            ProbeStatus("file.chmod", "file", False, "attach failed: EPERM"),
        ]
    )
    assert record.type == TYPE_DEGRADED
    assert record.data == {
        "missing": [
            {"name": "file.chmod", "kind": "file", "reason": "attach failed: EPERM"},
            {"name": "file.openat2", "kind": "file", "reason": "tracepoint missing"},
        ],
        "attached": 1,
        "total": 3,
    }


def test_capture_start_config_stop_records() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    start = mapper.capture_start({"probes": ["exec"], "ring_kib": 256})
    config = mapper.capture_config({"probes": ["exec", "file"]}, ts_ns=at(7))
    stop = mapper.capture_stop({"records": 3})
    assert [r.type for r in (start, config, stop)] == [TYPE_START, TYPE_CONFIG, TYPE_STOP]
    assert [r.thseq for r in (start, config, stop)] == [1, 2, 3]
    assert start.data == {"config": {"probes": ["exec"], "ring_kib": 256}}
    assert config.data == {"config": {"probes": ["exec", "file"]}}
    assert stop.data["summary"] == {"records": 3}
    assert set(stop.data["redaction"]) == {
        "fields",
        "fields_redacted",
        "failures",
        "failures_by_field",
    }
    assert stop.time == config.time  # no later kernel time was seen


def test_a_float_in_config_is_refused_by_path_without_using_a_seq() -> None:
    mapper = make_mapper()
    mapper.anchor_record()
    with pytest.raises(CanonicalError, match=r"\$\.config\.rate"):
        mapper.capture_start({"rate": 0.5})
    assert mapper.next_seq == 1


def test_a_secret_in_an_absolute_path_is_redacted_like_the_name() -> None:
    from agent.capture import kinds
    from agent.capture.events import FileEvent
    from agent.evidence.mapper import Mapper

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    event = FileEvent(
        pid=1, tid=1, ts_ns=BOOT_NS + 1, uid=0, gid=0, cgroup_id=1, comm="cp", op="rename",
        syscall="rename", ret=0, dfd=-100, path="x", dfd2=-100, path2=f"{token}.txt",
        flags=0, mode=0, abs_path=f"/home/{token}/x", abs_flags=kinds.PATH_JOINED,
        abs_path2=f"/home/u/{token}.txt", abs2_flags=kinds.PATH_JOINED,
    )  # fmt: skip
    for compose in (True, False):
        mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor.builtin())
        mapper._compose_payloads = compose  # both the byte template and the Struct path
        mapper.anchor_record()
        record = mapper.map(event)
        assert token.encode() not in record.body
        data = decode(record.body).data
        assert data["abs_path"] == data["abs_path2"] == data["path2"]  # the rule's marker
        assert "REDACTED" in data["abs_path"]
        assert data["abs_flags"] == ["joined"] and data["abs2_flags"] == ["joined"]
        assert data["path"] == "x"
        assert data["redacted"]
