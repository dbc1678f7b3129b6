"""Kernel struct offsets from BTF, and the start-up self-check that guards them.

The parser and the layout resolution are driven with real and made-up BTF;
the self-check runs on the real kernel: with the true offsets enrichment is
on, with one deliberately wrong (the test hook) it is off, says so in the
profile and the evidence, and capture goes on.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.capture import btf, kernel_layout, layout_check
from agent.capture.cache_store import CACHE_DIR_ENV
from tests.harness import TRACEHOUND, evidence, own_daemon

HAVE_BTF = btf.VMLINUX.exists()


@pytest.fixture(scope="module")
def vmlinux() -> btf.Btf:
    if not HAVE_BTF:
        pytest.skip("the kernel publishes no BTF")
    return btf.load()


# -- the parser, on the running kernel's BTF and on made-up blobs ---------------


def test_pt_regs_members_are_where_the_uapi_puts_them(vmlinux: btf.Btf) -> None:
    # struct pt_regs is a fixed ABI (ptrace hands it out): a reader that got
    # member offsets wrong could not land every one of these.
    names = ["r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax"]
    names += ["cx", "dx", "si", "di", "orig_ax", "ip"]  # cs is a u16 in a union since FRED
    found = [vmlinux.member("pt_regs", name) for name in names]
    assert [(m.offset, m.size) if m else None for m in found] == [(8 * i, 8) for i in range(17)]
    assert vmlinux.struct_size("pt_regs") == 21 * 8


def test_members_inside_anonymous_unions_and_embedded_structs(vmlinux: btf.Btf) -> None:
    # qstr.len sits in an anonymous struct in an anonymous union; dentry.d_name
    # is an embedded qstr: the offsets add up.
    qstr_len = vmlinux.member("qstr", "len")
    d_name = vmlinux.member("dentry", "d_name")
    nested = vmlinux.member("dentry", "d_name.len")
    assert qstr_len is not None and d_name is not None and nested is not None
    assert nested.offset == d_name.offset + qstr_len.offset
    assert nested.size == 4
    assert vmlinux.member("dentry", "no_such_member") is None
    assert vmlinux.member("no_such_struct_anywhere", "x") is None


def _blob(types: bytes, strings: bytes) -> bytes:
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_a_made_up_struct_is_read_back() -> None:
    strings = b"\0int\0point\0x\0y\0"
    types = struct.pack("<III", 1, (1 << 24), 4) + struct.pack("<I", 32)  # 1: int, 4 bytes
    types += struct.pack("<III", 5, (4 << 24) | 2, 8)  # 2: struct point {x; y}
    types += struct.pack("<III", 11, 1, 0) + struct.pack("<III", 13, 1, 32)
    parsed = btf.parse(_blob(types, strings))
    assert parsed.struct_size("point") == 8
    y = parsed.member("point", "y")
    assert y is not None and (y.offset, y.size) == (4, 4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 10, "shorter than the BTF header"),
        (b"\x00" * 24, "bad magic"),
        (_blob(struct.pack("<III", 0, (31 << 24), 0), b"\0"), "unknown BTF kind"),
        (_blob(struct.pack("<II", 0, 0), b"\0"), "truncated"),
    ],
)
def test_data_that_is_not_btf_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(btf.BtfError, match=message):
        btf.parse(data)


# -- resolving the field table ---------------------------------------------------


def test_every_field_the_programs_read_is_placed(vmlinux: btf.Btf) -> None:
    layout = kernel_layout.resolve(vmlinux)
    assert layout.usable, layout.problem
    assert len(layout.offsets) == len(kernel_layout.FIELDS)
    tgid = vmlinux.member("task_struct", "tgid")
    assert tgid is not None
    assert layout.offsets["TH_OFF_TASK_STRUCT_TGID"] == tgid.offset
    assert f"-DTH_OFF_TASK_STRUCT_TGID={tgid.offset}" in layout.flags()
    assert "-DTH_LAYOUT=1" in layout.flags()


def test_a_renamed_member_is_found_by_its_other_name(vmlinux: btf.Btf) -> None:
    # kernfs_node.parent became __parent in 6.15: whichever this kernel has.
    wanted = kernel_layout.Field("kernfs_node", "parent", 8, alternatives=("__parent",))
    layout = kernel_layout.resolve(vmlinux, [wanted])
    assert layout.usable
    member = vmlinux.member("kernfs_node", "parent") or vmlinux.member("kernfs_node", "__parent")
    assert member is not None
    assert layout.offsets["TH_OFF_KERNFS_NODE_PARENT"] == member.offset


def test_a_missing_or_resized_field_refuses_the_whole_layout(vmlinux: btf.Btf) -> None:
    missing = kernel_layout.resolve(vmlinux, [kernel_layout.Field("task_struct", "no_such")])
    assert missing.problem == "BTF has no task_struct.no_such"
    assert missing.flags() == ["-DTH_LAYOUT=0"]
    resized = kernel_layout.resolve(vmlinux, [kernel_layout.Field("task_struct", "tgid", 8)])
    assert "is 4 bytes, the programs read 8" in resized.problem
    optional = kernel_layout.resolve(
        vmlinux, [kernel_layout.Field("task_struct", "no_such", required=False)]
    )
    assert optional.usable and optional.offsets == {}
    assert kernel_layout.resolve(None).problem.startswith("the kernel publishes no BTF")


def test_the_skew_hook_parses_or_is_refused() -> None:
    assert kernel_layout.parse_skew("task_struct.tgid=64, cred.uid=-4") == {
        "task_struct.tgid": 64,
        "cred.uid": -4,
    }
    with pytest.raises(ValueError, match=r"'tgid=x' is not <struct>\.<member>=<bytes>"):
        kernel_layout.parse_skew("tgid=x")


# -- the self-check's comparison (pure) -----------------------------------------


def _reading(**changes: Any) -> layout_check.Reading:
    values: dict[str, Any] = dict(
        ran=True, compiled=True, tgid=10, ppid=1, cgroup_id=7, cgroup_helper=7, uid=0,
        cwd_flags=0, cwd="/srv",
    )  # fmt: skip
    values.update(changes)
    return layout_check.Reading(**values)


def test_compare_names_the_first_fact_that_differs() -> None:
    facts = layout_check.Facts(pid=10, ppid=1, uid=0, cwd="/srv")
    assert layout_check.compare(_reading(), facts) == ""
    assert "ppid read through BTF offsets is 2, expected 1" in layout_check.compare(
        _reading(ppid=2), facts
    )
    assert "cgroup id" in layout_check.compare(_reading(cgroup_id=8), facts)
    assert "cwd" in layout_check.compare(_reading(cwd="/srv/x"), facts)
    assert layout_check.compare(_reading(compiled=False), facts) == layout_check.NOT_COMPILED
    assert "did not run" in layout_check.compare(_reading(ran=False), facts)


# -- on the real kernel ------------------------------------------------------------


def _profile(tmp_path: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = subprocess.run(
        [*TRACEHOUND, "profile", "--format", "json", "--", "/bin/sh", "-c", "echo hi > out.txt"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=120,
    )
    profile: dict[str, Any] = json.loads(out.stdout)
    return profile


def _layout_probe(profile: dict[str, Any]) -> dict[str, Any]:
    (probe,) = [p for p in profile["probes"] if p["name"] == layout_check.PROBE_NAME]
    return probe


def test_the_self_check_passes_when_compiled_and_when_replayed(
    kernel: None, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # A working directory deep below a mount crossing: /proc is not it, /tmp is.
    work = tmp_path / "a b" / "c"
    work.mkdir(parents=True)
    for attempt in ("compiled", "replayed"):
        profile = _profile(tmp_path, {CACHE_DIR_ENV: str(cache)}, work)
        assert _layout_probe(profile) == {
            "name": "kernel.layout",
            "kind": "layout",
            "attached": True,
            "reason": "",
        }, attempt
    assert list(cache.iterdir()), "the first start stored its compile"


def test_a_wrong_offset_turns_enrichment_off_and_capture_goes_on(
    kernel: None, tmp_path: Path, skewed_program_cache: str
) -> None:
    env = {
        kernel_layout.SKEW_ENV: "task_struct.tgid=64",
        CACHE_DIR_ENV: skewed_program_cache,
    }
    profile = _profile(tmp_path, env, tmp_path)
    probe = _layout_probe(profile)
    assert probe["attached"] is False
    assert probe["reason"].startswith("self-check: tgid read through BTF offsets is ")
    # The rest of capture is whole: the shell's exec and its open of out.txt.
    (shell,) = [p for p in profile["processes"] if p["comm"] == "sh"]
    assert [e["filename"] for e in shell["execs"]] == ["/bin/sh"]
    assert any(f["path"].endswith("out.txt") for f in shell["files"])
    assert all(p["attached"] for p in profile["probes"] if p["name"] != "kernel.layout")


def test_a_skew_that_does_not_parse_is_a_one_line_error(kernel: None, tmp_path: Path) -> None:
    done = subprocess.run(
        [*TRACEHOUND, "profile", "--", "/bin/true"],
        env={**os.environ, kernel_layout.SKEW_ENV: "nonsense"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"tracehound: {kernel_layout.SKEW_ENV}: 'nonsense' is not <struct>.<member>=<bytes>"
    ]


def test_the_daemon_records_enrichment_off_in_the_evidence(
    kernel: None, tmp_path: Path, skewed_program_cache: str
) -> None:
    with own_daemon(tmp_path) as daemon:
        daemon.start(
            env={kernel_layout.SKEW_ENV: "fs_struct.pwd=16", CACHE_DIR_ENV: skewed_program_cache}
        )
        assert daemon.stop() == 0
    (degraded,) = evidence(daemon.state, "capture.degraded.v1")
    missing = {m["name"]: m for m in degraded["data"]["missing"]}
    assert missing["kernel.layout"]["reason"].startswith("self-check: cwd")
