"""Evidence records carry the cgroup path and container: looked up once per
cgroup id, redacted like a path, escaped when not UTF-8, null when unresolved."""

from __future__ import annotations

import msgspec

from agent.capture.cgroups import UNRESOLVED, CgroupInfo
from agent.capture.container_id import parse_container
from agent.capture.events import ExecEvent, ForkEvent
from agent.evidence.mapper import Mapper
from agent.evidence.types import Anchor
from agent.redact import Redactor

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)
ID = "cd" * 32
DOCKER = f"/system.slice/docker-{ID}.scope"
TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
TABLE = {
    7: CgroupInfo(path=DOCKER, container=parse_container(DOCKER)),
    8: UNRESOLVED,
    9: CgroupInfo(path=f"/user.slice/{TOKEN}.scope"),
    10: CgroupInfo(path="/odd\udcff.slice"),
}


def exec_in(cgroup_id: int, pid: int = 5) -> ExecEvent:
    return ExecEvent(pid=pid, tid=pid, ts_ns=ANCHOR.boottime_ns, uid=0, gid=0,
                     cgroup_id=cgroup_id, comm="sh", ret=0, filename="/bin/true",
                     argv=("true",), argv_truncated=False, at=False)  # fmt: skip


def test_records_carry_the_container_and_look_each_id_up_once() -> None:
    asked: list[int] = []

    def lookup(cgroup_id: int) -> CgroupInfo:
        asked.append(cgroup_id)
        return TABLE[cgroup_id]

    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor.builtin(), cgroups=lookup)
    mapper.anchor_record()
    first, second = mapper.map(exec_in(7)), mapper.map(exec_in(7, pid=6))
    fork = mapper.map(ForkEvent(pid=6, tid=6, ts_ns=ANCHOR.boottime_ns, uid=0, gid=0,
                                cgroup_id=7, comm="sh", child_pid=9, clone_flags=0))  # fmt: skip
    for record in (first, second, fork):
        data = msgspec.json.decode(record.body)["data"]
        assert data["cgroup"] == DOCKER
        assert data["container"] == {"id": ID, "runtime": "docker", "pod": None}
    assert asked == [7]
    gone = msgspec.json.decode(mapper.map(exec_in(8)).body)["data"]
    assert (gone["cgroup"], gone["container"]) == (None, None)


def test_cgroup_path_is_redacted_and_escaped() -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor.builtin(), cgroups=TABLE.__getitem__)
    mapper.anchor_record()
    secret = msgspec.json.decode(mapper.map(exec_in(9)).body)["data"]
    assert TOKEN not in secret["cgroup"]
    assert "github-token" in secret["redacted"]
    odd = msgspec.json.decode(mapper.map(exec_in(10)).body)["data"]
    assert odd["cgroup"] == "/odd\\xff.slice"
    assert odd["escaped"] == ["cgroup"]
