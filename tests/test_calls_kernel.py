"""Security-relevant calls against the real kernel: each family once.

One ``tracehound profile --evidence`` run of tests/workloads/calls.py (a
setresuid drop in a child, capset, ptrace, a signal to another process,
unshare + mount + umount2 + setns, module calls, bpf, memfd_create and an
exec of the memfd, and the file-like calls) is read three ways: the
profile, the CloudEvents evidence and its OCSF projection. What each shows
is compared with what the workload did (its facts file) and what the kernel
answered, never with constants the capture could have made up.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.capture.cache_store import CACHE_DIR_ENV
from tests.conftest import REPO, TRACEHOUND, require_kernel

WORKLOAD = REPO / "tests" / "workloads" / "calls.py"
CE = "dev.tracehound."
NOBODY = 65534


class Run:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.state = tmp / "state"
        facts, out = tmp / "facts.json", tmp / "profile.json"
        work = tmp / "work"
        work.mkdir()
        keygen = subprocess.run(
            [*TRACEHOUND, "evidence", "keygen", "--state-dir", str(self.state)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert keygen.returncode == 0, keygen.stderr
        done = subprocess.run(
            [*TRACEHOUND, "profile", "--evidence", str(self.state), "--output", str(out),
             "--", "/usr/bin/python3", str(WORKLOAD), str(facts), str(work)],
            capture_output=True, text=True, timeout=180, cwd=REPO,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.profile: dict[str, Any] = json.loads(out.read_text())
        self.facts: dict[str, Any] = json.loads(facts.read_text())
        self.procs = {p["pid"]: p for p in self.profile["processes"]}
        # Each line: a chained record, its CloudEvent in "body".
        self.records = [line["body"] for line in self._stream() if line["type"].startswith(CE)]
        self.ocsf = self._stream("--format", "ocsf")

    def _stream(self, *extra: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [*TRACEHOUND, "evidence", "stream", "--state-dir", str(self.state), *extra],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    def calls(self, pid: int, op: str) -> list[dict[str, Any]]:
        return [c for c in self.procs[pid].get("calls", []) if c["op"] == op]

    def evidence(self, type_: str, pid: int, op: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["type"] == CE + type_ and r["data"]["pid"] == pid and r["data"]["op"] == op
        ]

    def ocsf_of(self, record: dict[str, Any]) -> dict[str, Any]:
        [event] = [e for e in self.ocsf if e["metadata"]["uid"] == record["id"]]
        return event


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    require_kernel()
    return Run(tmp_path_factory.mktemp("calls"))


def test_every_call_probe_attached_and_the_books_balance(kernel: None, run: Run) -> None:
    probes = {p["name"]: p for p in run.profile["probes"]}
    calls = [name for name in probes if name.startswith("call.")]
    assert len(calls) == 21
    assert all(probes[name]["attached"] for name in calls), [probes[n] for n in calls]
    books = run.profile["accounting"]["call"]
    assert books["generated"] == books["delivered"] > 0 and books["lost_kernel"] == 0
    assert books["balanced"] is True
    assert run.profile["complete"] is True


def test_a_setresuid_drop_appears_as_such(kernel: None, run: Run) -> None:
    child = run.facts["drop_pid"]
    [gid] = run.calls(child, "setresgid")
    [drop] = run.calls(child, "setresuid")
    assert drop["family"] == "credentials" and drop["error"] == ""
    assert drop["args"] == {"ruid": NOBODY, "euid": NOBODY, "suid": NOBODY}
    # Read from the kernel's credentials: root before, nobody after, the
    # groups already dropped by the setresgid before it.
    assert drop["ids_before"] == {"uid": 0, "euid": 0, "suid": 0,
                                  "gid": NOBODY, "egid": NOBODY, "sgid": NOBODY}  # fmt: skip
    assert drop["ids_after"] == dict.fromkeys(
        ("uid", "euid", "suid", "gid", "egid", "sgid"), NOBODY
    )
    assert gid["ids_before"]["egid"] == 0 and gid["ids_after"]["egid"] == NOBODY
    # Leaving uid 0 clears the capability sets: the kernel's doing, seen as done.
    assert drop["caps_before"]["effective"] == run.facts["cap_effective"] != 0
    assert drop["caps_after"] == {"effective": 0, "permitted": 0, "inheritable": 0}
    # The way back is refused, and kept apart with its errno.
    [back] = run.calls(child, "setuid")
    assert back["args"] == {"uid": 0} and back["error"] == "EPERM"
    assert back["ids_before"] == back["ids_after"] == drop["ids_after"]
    # The process is nobody from then on.
    assert run.procs[child]["uid"] == NOBODY


def test_setresuid_evidence_and_ocsf(kernel: None, run: Run) -> None:
    [record] = run.evidence("process.credentials.v1", run.facts["drop_pid"], "setresuid")
    data = record["data"]
    assert data["syscall"] == "setresuid" and data["ret"] == 0
    assert data["args"] == {"ruid": NOBODY, "euid": NOBODY, "suid": NOBODY}
    assert data["ids_before"]["euid"] == 0 and data["ids_after"]["euid"] == NOBODY
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"]) == (1007, 5)
    assert event["process"]["user"]["uid"] == str(NOBODY)
    assert event["unmapped"]["ids_before"]["uid"] == 0
    [refused] = run.evidence("process.credentials.v1", run.facts["drop_pid"], "setuid")
    assert run.ocsf_of(refused)["status_id"] == 2
    assert run.ocsf_of(refused)["status_code"] == "EPERM"


def test_capset(kernel: None, run: Run) -> None:
    [capset] = run.calls(run.facts["pid"], "capset")
    assert capset["args"] == {"version": 0x20080522, "pid": 0}
    assert capset["error"] == "" and run.facts["capset"] == [0, 0]
    assert capset["caps_before"] == capset["caps_after"]  # set to what they were
    assert capset["caps_after"]["effective"] == run.facts["cap_effective"]


def test_a_memfd_and_its_exec_appear_as_such(kernel: None, run: Run) -> None:
    root = run.facts["pid"]
    [memfd] = run.calls(root, "memfd_create")
    assert memfd["family"] == "memfd"
    assert memfd["text"] == {"name": "th-fileless"} and memfd["args"] == {"flags": 0}
    [record] = run.evidence("process.memfd.v1", root, "memfd_create")
    assert record["data"]["ret"] == run.facts["memfd"] and record["data"]["name"] == "th-fileless"
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"]) == (1001, 1)
    assert event["file"]["name"] == "memfd:th-fileless"
    # The exec of that memfd (its fd's path) is the child's image.
    child = run.procs[run.facts["memfd_exec_pid"]]
    assert child["exe"] == f"/proc/self/fd/{run.facts['memfd']}"
    assert child["exit_code"] == 0


def test_signals_to_others_but_not_probes_or_oneself(kernel: None, run: Run) -> None:
    root = run.facts["pid"]
    kills = run.calls(root, "kill")
    # kill(self, 0), kill(self, SIGUSR1) and kill(sleeper, 0) are not signals to another.
    assert [k["args"] for k in kills] == [{"pid": run.facts["sleeper_pid"], "sig": 15}]
    sleeper, cont = run.facts["sleeper_pid"], 18
    assert [c["args"] for c in run.calls(root, "tkill")] == [{"tid": sleeper, "sig": cont}]
    # pthread_kill to oneself (a tgkill to one's own process) is not recorded.
    assert [c["args"] for c in run.calls(root, "tgkill")] == [
        {"tgid": sleeper, "tid": sleeper, "sig": cont}
    ]
    [queued] = run.calls(root, "rt_sigqueueinfo")
    assert queued["args"] == {"tgid": sleeper, "sig": cont} and queued["family"] == "signal"
    [record] = run.evidence("process.signal.v1", root, "kill")
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"]) == (1007, 99)
    assert event["process"]["pid"] == run.facts["sleeper_pid"]


def test_ptrace(kernel: None, run: Run) -> None:
    root, sleeper = run.facts["pid"], run.facts["sleeper_pid"]
    traced = run.calls(root, "ptrace")
    assert [(c["args"]["request"], c["args"]["pid"], c["error"]) for c in traced] == [
        (16, sleeper, ""),  # PTRACE_ATTACH
        (17, sleeper, ""),  # PTRACE_DETACH
    ]
    attach = next(r for r in run.evidence("process.ptrace.v1", root, "ptrace")
                  if r["data"]["args"]["request"] == 16)  # fmt: skip
    event = run.ocsf_of(attach)
    assert (event["class_uid"], event["activity_id"], event["process"]["pid"]) == (1007, 3, sleeper)


def test_namespaces_and_mounts(kernel: None, run: Run) -> None:
    child, target = run.facts["ns_pid"], run.facts["mount_target"]
    [unshare] = run.calls(child, "unshare")
    assert unshare["args"] == {"flags": 0x00020000 | 0x04000000}
    [setns] = run.calls(child, "setns")
    assert setns["args"] == {"fd": run.facts["uts_fd"], "nstype": 0x04000000}
    mounts = {c["text"]["target"]: c for c in run.calls(child, "mount")}
    tmpfs = mounts[target]
    assert tmpfs["text"] == {"source": "th-tmpfs", "target": target, "fstype": "tmpfs"}
    assert tmpfs["args"] == {"flags": 2 | 4} and tmpfs["error"] == ""
    assert mounts["/"]["text"]["source"] == ""  # NULL: no source given
    [umount] = run.calls(child, "umount")
    assert umount["text"] == {"target": target} and umount["args"] == {"flags": 2}
    record = next(r for r in run.evidence("fs.mount.v1", child, "mount")
                  if r["data"]["target"] == target)  # fmt: skip
    assert record["data"]["fstype"] == "tmpfs"
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"], event["file"]["path"]) == (1001, 12, target)
    [gone] = run.evidence("fs.mount.v1", child, "umount")
    assert run.ocsf_of(gone)["activity_id"] == 13
    [ns] = run.evidence("process.namespace.v1", child, "unshare")
    assert (run.ocsf_of(ns)["class_uid"], run.ocsf_of(ns)["kernel"]["name"]) == (1003, "unshare")


def test_modules_are_recorded_whatever_the_kernel_answered(kernel: None, run: Run) -> None:
    root = run.facts["pid"]
    [init] = run.calls(root, "init_module")
    [delete] = run.calls(root, "delete_module")
    ret, err = run.facts["init_module"]
    assert init["text"] == {"params": "th_param=1"}
    # Failed as the kernel said (ENOSYS without CONFIG_MODULES, else EFAULT/ENOEXEC).
    assert ret == -1 and run.facts["delete_module"][0] == -1
    assert init["error"] == errno.errorcode[err]
    assert delete["error"] == errno.errorcode[run.facts["delete_module"][1]]
    assert delete["text"] == {"name": "th_no_such_module"}
    [record] = run.evidence("kernel.module.v1", root, "delete_module")
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"]) == (1002, 2)
    assert event["driver"]["file"]["name"] == "th_no_such_module"
    [load] = run.evidence("kernel.module.v1", root, "init_module")
    assert run.ocsf_of(load)["activity_id"] == 1 and run.ocsf_of(load)["status_id"] == 2


def test_bpf_command(kernel: None, run: Run) -> None:
    root = run.facts["pid"]
    # MAP_CREATE of an array; the lookup in it after (a map element
    # operation) is not recorded.
    [made] = run.calls(root, "bpf")
    assert made["args"] == {"cmd": 0, "size": 120, "attr_type": 2}
    [record] = run.evidence("kernel.bpf.v1", root, "bpf")
    event = run.ocsf_of(record)
    assert (event["class_uid"], event["activity_id"]) == (1003, 1)
    assert record["data"]["ret"] >= 0


def test_file_like_calls(kernel: None, run: Run) -> None:
    facts = run.facts
    root = run.procs[facts["pid"]]
    files = {(f["op"], f["path"]): f for f in root["files"]}
    assert files[("link", facts["base"])]["target"] == facts["hard"]
    assert files[("symlink", "f")]["target"] == facts["soft"]
    assert ("truncate", facts["base"]) in files
    lchown = files[("chown", facts["soft"])]
    assert (lchown["owner"], lchown["group"]) == (1234, 5678)
    # The fd-only calls (fchmod, ftruncate, fchown) name the fd's file: its
    # absolute path, resolved in the kernel; a chown apart by its ids.
    ids = {(f["owner"], f["group"]) for f in root["files"] if f["op"] == "chown"}
    assert {(1234, -1), (1234, 5678), (-1, 4321)} <= ids
    fchown = next(f for f in root["files"] if (f["owner"], f["group"]) == (-1, 4321))
    assert fchown["path"] == facts["base"]
    assert any(f["op"] == "chmod" and f["mode"] == 0o640 for f in root["files"])
    records = [r for r in run.records if r["type"] == CE + "file.chown.v1"]
    lchowned = next(r for r in records if r["data"]["path"] == facts["soft"])
    assert lchowned["data"]["syscall"] == "lchown"
    assert (lchowned["data"]["owner"], lchowned["data"]["group"]) == (1234, 5678)
    assert lchowned["data"]["flags"] == 0x100  # AT_SYMLINK_NOFOLLOW: the link itself
    link = next(r for r in run.records if r["type"] == CE + "file.symlink.v1")
    event = run.ocsf_of(link)
    assert (event["activity_id"], event["file"]["path"], event["file"]["type_id"]) == (
        1, facts["soft"], 7
    )  # fmt: skip
    assert event["unmapped"]["link_target"] == "f"


def test_text_profile_shows_the_calls(kernel: None, run: Run, tmp_path: Path) -> None:
    out = subprocess.run(
        [*TRACEHOUND, "profile", "--format", "text", "--", "/usr/bin/python3", "-c",
         "import os\nif os.fork() == 0:\n    os.setresuid(65534, 65534, 65534)\n    os._exit(0)\n"
         "os.wait()"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "call setresuid" in x)
    assert "ruid=65534 euid=65534 suid=65534" in line
    assert "[uid=0,0,0" in line and "-> uid=65534,65534,65534" in line


def test_ids_unresolved_when_the_layout_check_fails(
    kernel: None, tmp_path: Path, skewed_program_cache: str
) -> None:
    """With the struct offsets refused, calls are still recorded, their
    ids marked unresolved (None), never read through a wrong layout."""
    skewed = Run(
        tmp_path,
        {"TRACEHOUND_TEST_LAYOUT_SKEW": "fs_struct.pwd=16", CACHE_DIR_ENV: skewed_program_cache},
    )
    [drop] = skewed.calls(skewed.facts["drop_pid"], "setresuid")
    assert drop["args"] == {"ruid": NOBODY, "euid": NOBODY, "suid": NOBODY}
    assert drop["ids_before"] is None and drop["ids_after"] is None
    assert drop["caps_before"] is None and drop["caps_after"] is None
    [record] = skewed.evidence("process.credentials.v1", skewed.facts["drop_pid"], "setresuid")
    assert record["data"]["ids_before"] is None
