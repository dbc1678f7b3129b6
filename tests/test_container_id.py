"""The cgroup path parser: every runtime's forms, and the near misses that
must not be taken for containers (hostile names included)."""

from __future__ import annotations

import pytest

from agent.capture.container_id import MAX_COMPONENTS, Container, parse_container

H = "0123456789abcdef" * 4  # a 64-hex id
H2 = "fedcba9876543210" * 4
UID = "2b1c8a3e-7d4f-4e21-9a0b-5c6d7e8f9a0b"
UID_ = UID.replace("-", "_")

CONTAINERS = [
    # docker, systemd and cgroupfs drivers
    (f"/system.slice/docker-{H}.scope", Container(H, "docker")),
    (f"/docker/{H}", Container(H, "docker")),
    (f"/docker/{H}/init.scope", Container(H, "docker")),  # a sub-cgroup of its own
    (f"/system.slice/docker-{H}.scope/init.scope", Container(H, "docker")),
    # rootless podman/docker live in a user's delegated subtree
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{H}.scope",
     Container(H, "podman")),
    (f"/machine.slice/libpod-{H}.scope/container", Container(H, "podman")),
    (f"/libpod_parent/libpod-{H}", Container(H, "podman")),
    (f"/system.slice/crio-{H}.scope", Container(H, "cri-o")),
    (f"/system.slice/cri-containerd-{H}.scope", Container(H, "containerd")),
    # kubernetes, systemd driver: the pod uid with underscores in the slice name
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{H}.scope", Container(H, "containerd", UID)),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"crio-{H}.scope", Container(H, "cri-o", UID)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{H}.scope", Container(H, "docker", UID)),
    # kubernetes, cgroupfs driver: the runtime is not in the path
    (f"/kubepods/burstable/pod{UID}/{H}", Container(H, "kubernetes", UID)),
    (f"/kubepods/pod{UID}/{H}", Container(H, "kubernetes", UID)),
    # nested (kind: a node container holding pods): the innermost one
    (f"/system.slice/docker-{H2}.scope/kubelet.slice/kubepods.slice/"
     f"kubepods-pod{UID_}.slice/cri-containerd-{H}.scope", Container(H, "containerd", UID)),
]  # fmt: skip

NOT_CONTAINERS = [
    "/",
    "",
    "/system.slice/sshd.service",
    "/user.slice/user-1000.slice/session-3.scope",
    f"/system.slice/crio-conmon-{H}.scope",  # cri-o's monitor
    f"/machine.slice/libpod-conmon-{H}.scope",  # podman's monitor
    f"/system.slice/docker-{H[:-1]}.scope",  # 63 digits
    f"/system.slice/docker-{H}0.scope",  # 65
    f"/system.slice/docker-{H.upper()}.scope",  # upper case
    f"/system.slice/docker-{H}.scope.evil",
    f"/system.slice/xdocker-{H}.scope",
    f"/system.slice/docker-{H}.scope\n",
    f"/system.slice/docker-{H}.slice",
    f"/system.slice/docker-{H[:-1]}\u0660.scope",  # an Arabic-Indic digit
    f"/system.slice/docker-{H[:-1]}\udcff.scope",  # a raw byte (surrogate escape)
    f"/{H}",  # a bare id with no runtime parent
    f"/notdocker/{H}",
    f"/pod{UID}/{H}",  # a pod-looking parent outside any kubepods hierarchy
    f"/kubepods/burstable/pod{UID}",  # the pod's own cgroup: no container
    f"/kubepods/burstable/pod{UID.upper()}/{H}",
    "/docker/../docker",
    "docker-" + H + ".scope",  # not a path from the root
]


@pytest.mark.parametrize(("path", "expected"), CONTAINERS)
def test_container_paths(path: str, expected: Container) -> None:
    assert parse_container(path) == expected


@pytest.mark.parametrize("path", NOT_CONTAINERS)
def test_not_containers(path: str) -> None:
    assert parse_container(path) is None


def test_pod_outside_kubepods_is_not_a_pod() -> None:
    found = parse_container(f"/pods/pod{UID}/docker-{H}.scope")
    assert found == Container(H, "docker", None)


def test_deep_hostile_path_is_bounded() -> None:
    # A container far above thousands of sub-cgroups is beyond the look-up
    # bound: not found (and found quickly), never an error.
    deep = f"/docker-{H}.scope" + "/x" * 5000
    assert parse_container(deep) is None
    near = f"/docker-{H}.scope" + "/x" * (MAX_COMPONENTS - 1)
    assert parse_container(near) == Container(H, "docker")
