"""Security-relevant call records without a kernel: the profile's folding,
its text, the evidence records and their OCSF projection, redaction and
hostile bytes. (tests/test_calls_kernel.py makes the same calls for real.)"""

from __future__ import annotations

import errno
import re
from typing import Any

import msgspec
import pytest

from agent.capture import calls, dispatch, kinds
from agent.capture.events import CallEvent, FileEvent
from agent.capture.loader import BPF_DIR
from agent.capture.probes import PROBES
from agent.evidence.mapper import Mapper
from agent.evidence.ocsf import to_ocsf
from agent.evidence.payloads import CallData
from agent.evidence.record_types import CALL_TYPES, PAYLOAD_TYPES, decode_payload
from agent.evidence.types import TYPE_PREFIX, Anchor
from agent.redact import Redactor
from agent.redact.events import redact_event
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import decode_profile, encode_profile, render_text
from agent.sinks.redacted_profile import redact_profile
from tests.evidence.plain_mapper import plain

ANCHOR = Anchor(boot_id="boot-1", wall_ns=1_714_564_800_123_456_789, boottime_ns=10**12)
HEADER: dict[str, Any] = {"pid": 42, "tid": 43, "uid": 0, "gid": 0, "cgroup_id": 1, "comm": "app"}
ROOT = dict.fromkeys(calls.ID_NAMES, 0)
NOBODY = dict.fromkeys(calls.ID_NAMES, 65534)
FULL = {"effective": 0x1FF_FFFF_FFFF, "permitted": 0x1FF_FFFF_FFFF, "inheritable": 0}
NONE = dict.fromkeys(calls.CAP_NAMES, 0)
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def call(op: str, ret: int = 0, ts: int = 0, **kw: Any) -> CallEvent:
    fields: dict[str, Any] = {
        "syscall": op,
        "args": {},
        "text": {},
        "text_cut": (),
        "unreadable": (),
        "ids_before": ROOT,
        "ids_after": None,
        "caps_before": FULL,
        "caps_after": None,
    }
    fields.update(kw)
    return CallEvent(ts_ns=ANCHOR.boottime_ns + ts, op=op, ret=ret, **fields, **HEADER)


def drop(ts: int = 0, ret: int = 0) -> CallEvent:
    return call(
        "setresuid", ret=ret, ts=ts, args={"ruid": 65534, "euid": 65534, "suid": 65534},
        ids_after=NOBODY if ret == 0 else ROOT, caps_after=NONE if ret == 0 else FULL,
    )  # fmt: skip


def mapped(event: CallEvent | FileEvent) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record's JSON as the log holds it, and its OCSF event (both ways agree)."""
    mapper = Mapper(host="web-1", anchor=ANCHOR, redactor=Redactor.builtin())
    mapper.anchor_record()
    record = mapper.map(event)
    body = msgspec.json.decode(record.body)
    typed = to_ocsf(record.event)
    assert typed == to_ocsf(plain(record))
    return body, typed


# -- the table ----------------------------------------------------------------------


def test_every_family_has_a_record_type_of_call_data() -> None:
    assert set(CALL_TYPES) == {*calls.FAMILIES, "other"}
    assert len(set(CALL_TYPES.values())) == len(CALL_TYPES)
    assert all(PAYLOAD_TYPES[t] is CallData for t in CALL_TYPES.values())
    # Every string a call names is a field of the payload, so escaping can name it.
    names = {name for spec in calls.CALL_SPECS.values() for name, _ in spec.strings}
    assert names <= set(CallData.__struct_fields__)


def test_the_programs_ops_are_the_dispatch_tables_numbers() -> None:
    """th_call_op (bpf/call.bpf.c) maps each syscall number to its op: the
    numbers the dispatch fills the call probes' slots with."""
    source = (BPF_DIR / "call.bpf.c").read_text()
    in_c = {
        int(nr): op.lower()
        for op, nr in re.findall(
            r"#ifdef TH_PROBE_CALL_(\w+)\n    case (\d+): return TH_CALL_\1;", source
        )
    }
    probes = [p for p in PROBES if p.concern == "call"]
    planned = {}
    for probe in probes:
        [enter, exit_] = list(dispatch.slots_of(probe))
        assert enter.nr == exit_.nr and (enter.fn, exit_.fn) == ("th_enter_call", "th_exit_call")
        planned[enter.nr] = probe.name.removeprefix("call.")
    assert in_c == planned
    assert set(in_c.values()) == set(kinds.CALL_OPS.values())
    # One program per direction: no per-slot number compiled in for it.
    assert not [f for f in dispatch.number_flags(probes) if "th_exit_call" in f]


def test_conversions() -> None:
    assert calls.decode_args("setreuid", (0xFFFF_FFFF, 0x1_0000_0005, 0, 0)) == {
        "ruid": -1, "euid": 5
    }  # fmt: skip
    assert calls.decode_args("kill", (0xFFFF_FFFF_FFFF_FFFF, 9, 0, 0)) == {"pid": -1, "sig": 9}
    assert calls.decode_args("ptrace", (16, 7, 2**63, 1))["addr"] == 2**63


# -- the profile --------------------------------------------------------------------


def test_repeats_fold_by_op_args_result_and_ids() -> None:
    sink = AggregatingSink()
    for i in range(3):
        sink.apply(call("kill", ts=i, args={"pid": 7, "sig": 15}))
    sink.apply(call("kill", ts=5, args={"pid": 8, "sig": 15}))
    sink.apply(call("kill", ts=6, ret=-errno.EPERM, args={"pid": 7, "sig": 15}))
    [proc] = sink.snapshot().processes
    assert [(c.args, c.count, c.error) for c in proc.calls] == [
        ({"pid": 7, "sig": 15}, 3, ""),
        ({"pid": 8, "sig": 15}, 1, ""),
        ({"pid": 7, "sig": 15}, 1, "EPERM"),
    ]
    assert proc.calls[0].first_ns == ANCHOR.boottime_ns
    assert sink.accounting()["aggregating"]["call"] == (5, 0)


def test_a_credential_change_makes_the_process_that_user() -> None:
    sink = AggregatingSink()
    sink.apply(drop(ret=-errno.EPERM))
    [proc] = sink.snapshot().processes
    assert proc.uid == 0
    sink.apply(drop(ts=1))
    [proc] = sink.snapshot().processes
    assert (proc.uid, proc.gid) == (65534, 65534)
    assert [(c.error, c.ids_after) for c in proc.calls] == [("EPERM", ROOT), ("", NOBODY)]


def test_calls_per_process_are_capped_and_counted() -> None:
    sink = AggregatingSink(max_calls=2)
    for pid in range(3):
        sink.apply(call("kill", ts=pid, args={"pid": 100 + pid, "sig": 9}))
    [proc] = sink.snapshot().processes
    assert len(proc.calls) == 2 and proc.evicted == {"calls": 1}
    assert sink.status().evictions["calls"] == 1 and sink.status().held["calls"] == 2


def test_text_view_and_json_round_trip_with_hostile_bytes() -> None:
    sink = AggregatingSink()
    target = "/mnt/\udcff\nevil"
    sink.apply(call("mount", args={"flags": 0}, text={"source": "x", "target": target,
                                                      "fstype": "tmpfs"}))  # fmt: skip
    sink.apply(drop(ts=1))
    profile = sink.snapshot()
    again = decode_profile(encode_profile(profile))
    assert again.processes[0].calls[0].text["target"] == target
    text = render_text(profile)
    assert "\nevil" not in text  # one line per call, whatever the path holds
    mount = next(line for line in text.splitlines() if "call mount" in line)
    assert "flags=0" in mount and "fstype=tmpfs" in mount and "\\377" in mount
    setresuid = next(line for line in text.splitlines() if "call setresuid" in line)
    assert "[uid=0,0,0 gid=0,0,0 -> uid=65534,65534,65534 gid=65534,65534,65534]" in setresuid


def test_a_profile_redacts_call_strings_as_every_output_does() -> None:
    sink = AggregatingSink()
    source = f"//host/share?token={TOKEN}"
    sink.apply(call("mount", args={"flags": 0}, text={"source": source, "target": "/mnt",
                                                      "fstype": "cifs"}))  # fmt: skip
    raw = sink.snapshot()
    assert raw.processes[0].calls[0].text["source"] == source
    shown = redact_profile(raw, Redactor.builtin())
    text = shown.processes[0].calls[0].text
    assert TOKEN not in text["source"] and text["target"] == "/mnt" and text["fstype"] == "cifs"
    assert TOKEN not in encode_profile(shown).decode()


# -- evidence and OCSF --------------------------------------------------------------


def test_setresuid_record_and_ocsf() -> None:
    body, event = mapped(drop())
    assert body["type"] == TYPE_PREFIX + "process.credentials.v1"
    data = decode_payload(body["type"], msgspec.json.encode(body["data"]))
    assert isinstance(data, CallData)
    assert data.ids_before == ROOT and data.ids_after == NOBODY
    assert data.caps_before == FULL and data.caps_after == NONE
    assert "source" not in body["data"]  # strings only where the call has them
    assert event is not None
    assert (event["class_uid"], event["activity_id"], event["status_id"]) == (1007, 5, 1)
    assert event["type_uid"] == 100705
    assert event["process"]["user"] == {"uid": "65534"}
    assert event["unmapped"]["ids_before"] == ROOT


@pytest.mark.parametrize(
    ("event", "type_", "class_uid", "activity"),
    [
        (call("setgid", args={"gid": 5}, ids_after=ROOT), "process.credentials.v1", 1007, 99),
        (call("capset", args={"version": 1, "pid": 0}), "process.credentials.v1", 1007, 99),
        (call("ptrace", args={"request": 16, "pid": 9, "addr": 0, "data": 0}),
         "process.ptrace.v1", 1007, 3),
        (call("ptrace", args={"request": 5, "pid": 9, "addr": 1, "data": 2}),
         "process.ptrace.v1", 1007, 4),
        (call("ptrace", args={"request": 0, "pid": 0, "addr": 0, "data": 0}),
         "process.ptrace.v1", 1007, 99),
        (call("kill", args={"pid": 9, "sig": 9}), "process.signal.v1", 1007, 99),
        (call("tgkill", args={"tgid": 9, "tid": 10, "sig": 9}), "process.signal.v1", 1007, 99),
        (call("mount", args={"flags": 0}, text={"source": "s", "target": "/m", "fstype": "t"}),
         "fs.mount.v1", 1001, 12),
        (call("umount", args={"flags": 0}, text={"target": "/m"}), "fs.mount.v1", 1001, 13),
        (call("memfd_create", ret=3, args={"flags": 1}, text={"name": "x"}),
         "process.memfd.v1", 1001, 1),
        (call("init_module", ret=-38, args={"len": 0}, text={"params": ""}),
         "kernel.module.v1", 1002, 1),
        (call("finit_module", args={"fd": 3, "flags": 0}, text={"params": "a=1"}),
         "kernel.module.v1", 1002, 1),
        (call("delete_module", args={"flags": 0}, text={"name": "m"}), "kernel.module.v1", 1002, 2),
        (call("bpf", args={"cmd": 5, "size": 1, "attr_type": 1}), "kernel.bpf.v1", 1003, 1),
        (call("bpf", args={"cmd": 1, "size": 1, "attr_type": 0}), "kernel.bpf.v1", 1003, 4),
        (call("unshare", args={"flags": 0x20000}), "process.namespace.v1", 1003, 4),
        (call("setns", args={"fd": 3, "nstype": 0}), "process.namespace.v1", 1003, 4),
        (call("op99", args={"arg0": 1}), "process.call.v1", 1003, 4),
    ],
)  # fmt: skip
def test_each_call_family_record_type_and_ocsf_class(
    event: CallEvent, type_: str, class_uid: int, activity: int
) -> None:
    body, ocsf = mapped(event)
    assert body["type"] == TYPE_PREFIX + type_
    assert body["data"]["op"] == event.op and body["data"]["args"] == event.args
    assert ocsf is not None
    assert (ocsf["class_uid"], ocsf["activity_id"]) == (class_uid, activity)
    assert ocsf["status_id"] == (1 if event.ret >= 0 else 2)
    assert ocsf["metadata"]["uid"] == body["id"]


def test_call_specific_ocsf_objects() -> None:
    _, mount = mapped(call("mount", args={"flags": 0}, text={"source": "s", "target": "/mnt/x",
                                                            "fstype": "tmpfs"}))  # fmt: skip
    assert mount is not None and mount["file"] == {"name": "x", "path": "/mnt/x", "type_id": 2}
    assert mount["unmapped"]["fstype"] == "tmpfs"
    _, module = mapped(call("delete_module", args={"flags": 0}, text={"name": "evil"}))
    assert module is not None and module["driver"]["file"]["name"] == "evil"
    _, signal = mapped(call("kill", args={"pid": 77, "sig": 9}))
    assert signal is not None and signal["process"] == {"pid": 77}
    _, memfd = mapped(call("memfd_create", ret=4, args={"flags": 0}, text={"name": "payload"}))
    assert memfd is not None and memfd["file"]["name"] == "memfd:payload"


def test_call_strings_are_redacted_and_raw_bytes_escaped() -> None:
    event = call("mount", args={"flags": 0},
                 text={"source": f"//host/share?token={TOKEN}", "target": "/mnt/\udcfe",
                       "fstype": "cifs"})  # fmt: skip
    body, ocsf = mapped(event)
    data = body["data"]
    assert TOKEN not in msgspec.json.encode(body).decode()
    assert data["redacted"] and data["fstype"] == "cifs"
    assert data["escaped"] == ["target"] and data["target"] != "/mnt/\udcfe"
    assert ocsf is not None and ocsf["unmapped"]["escaped"] == ["target"]
    redacted, fired = redact_event(Redactor.builtin(), event)
    assert isinstance(redacted, CallEvent) and TOKEN not in redacted.text["source"] and fired


def test_huge_pointers_are_strings_not_rounded_numbers() -> None:
    body, _ = mapped(call("ptrace", args={"request": 4, "pid": 9, "addr": 2**63 + 1, "data": 0}))
    assert body["data"]["args"]["addr"] == str(2**63 + 1)


def test_unresolved_ids_are_null() -> None:
    body, ocsf = mapped(call("setuid", args={"uid": 0}, ids_before=None, caps_before=None))
    assert body["data"]["ids_before"] is None and body["data"]["caps_before"] is None
    assert ocsf is not None and "user" not in ocsf["process"]


def file_event(op: str, syscall: str, **kw: Any) -> FileEvent:
    fields: dict[str, Any] = {"path": "/etc/x", "dfd": -100, "dfd2": -100, "path2": "",
                              "flags": 0, "mode": 0}  # fmt: skip
    fields.update(kw)
    return FileEvent(ts_ns=ANCHOR.boottime_ns, op=op, syscall=syscall, ret=0, **fields, **HEADER)


def test_file_like_calls_in_evidence_and_ocsf() -> None:
    body, ocsf = mapped(file_event("chown", "fchown", path="", dfd=5, owner=-1, group=7))
    assert body["type"] == TYPE_PREFIX + "file.chown.v1"
    # -1 leaves the owner unchanged: left out, as every id a call does not set.
    assert "owner" not in body["data"] and body["data"]["group"] == 7
    assert ocsf is not None and ocsf["activity_id"] == 7 and ocsf["file"]["name"] == "fd:5"
    body, ocsf = mapped(file_event("symlink", "symlink", path="../t", path2="/etc/l"))
    assert body["data"]["path2"] == "/etc/l" and "owner" not in body["data"]
    assert ocsf is not None and ocsf["file"]["path"] == "/etc/l" and ocsf["file"]["type_id"] == 7
    assert ocsf["unmapped"]["link_target"] == "../t"
    body, ocsf = mapped(file_event("truncate", "truncate"))
    assert ocsf is not None and ocsf["activity_id"] == 3 and body["data"]["path2"] is None
    sink = AggregatingSink()
    sink.apply(file_event("link", "linkat", path="a", dfd=3, path2="b", dfd2=4))
    sink.apply(file_event("chmod", "fchmod", path="", dfd=6, mode=0o600))
    [proc] = sink.snapshot().processes
    assert [(f.op, f.path, f.target, f.mode) for f in proc.files] == [
        ("link", "fd:3/a", "fd:4/b", None),
        ("chmod", "fd:6", "", 0o600),
    ]
