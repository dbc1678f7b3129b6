"""The OCSF ``container`` profile: on records whose cgroup names a container,
with only what the cgroup path says; absent otherwise."""

from __future__ import annotations

from agent.capture.cgroups import CgroupInfo
from agent.capture.container_id import parse_container
from agent.capture.events import FileEvent
from agent.evidence.mapper import Mapper, decode
from agent.evidence.ocsf import to_ocsf
from agent.evidence.types import Anchor

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)
ID = "ef" * 32
POD = "2b1c8a3e-7d4f-4e21-9a0b-5c6d7e8f9a0b"
K8S = f"/kubepods/burstable/pod{POD}/{ID}"
PODMAN = f"/machine.slice/libpod-{ID}.scope"
TABLE = {
    2: CgroupInfo(path=K8S, container=parse_container(K8S)),
    3: CgroupInfo(path=PODMAN, container=parse_container(PODMAN)),
    4: CgroupInfo(path="/system.slice/cron.service"),
}


def open_in(cgroup_id: int) -> FileEvent:
    return FileEvent(pid=5, tid=5, ts_ns=ANCHOR.boottime_ns, uid=0, gid=0, cgroup_id=cgroup_id,
                     comm="cat", op="open", syscall="openat", ret=3, dfd=-100,
                     path="/etc/hosts", dfd2=0, path2="", flags=0, mode=0)  # fmt: skip


def test_container_object_only_when_the_cgroup_names_one() -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, cgroups=TABLE.__getitem__)
    mapper.anchor_record()
    k8s, podman, plain = (to_ocsf(decode(mapper.map(open_in(i)).body)) for i in (2, 3, 4))
    assert k8s is not None and podman is not None and plain is not None
    assert k8s["container"] == {"uid": ID, "runtime": "kubernetes", "pod_uuid": POD}
    assert podman["container"] == {"uid": ID, "runtime": "podman"}
    assert k8s["metadata"]["profiles"] == ["container"]
    assert "container" not in plain and "profiles" not in plain["metadata"]
