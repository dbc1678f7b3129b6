"""Which container a cgroup path names, if any: a pure parser, no I/O.

Container runtimes put each container in a cgroup of its own, and name it
after the container's id. The forms recognised (the cgroup v2 path, as
``/proc/PID/cgroup`` shows it after ``0::``):

==========================================================  ============
path (its last components)                                  runtime
==========================================================  ============
``.../docker-<64hex>.scope`` (systemd driver)               docker
``.../docker/<64hex>`` (cgroupfs driver)                    docker
``.../cri-containerd-<64hex>.scope``                        containerd
``.../crio-<64hex>.scope`` (never ``crio-conmon-``)         cri-o
``.../libpod-<64hex>.scope``, ``.../libpod-<64hex>``        podman
(never ``libpod-conmon-``)
``.../kubepods/<qos>/pod<uid>/<64hex>`` (cgroupfs driver)   kubernetes
==========================================================  ============

Under a Kubernetes pod cgroup (``pod<uid>`` in the cgroupfs form,
``kubepods-<qos>-pod<uid_with_underscores>.slice`` in the systemd form) the
container also carries the pod's uid. For the cgroupfs form the path does
not name the runtime, so it is ``kubernetes``.

The nearest component naming a container, from the leaf up, is the one
taken: a container's processes may sit in sub-cgroups of their own
(``docker-<id>.scope/init.scope`` for systemd in a container).

Whoever can create a cgroup picks its name: root, and any user a subtree is
delegated to (``user@1000.service`` under systemd, which is also where
rootless podman and docker put their containers). So a name is a claim, not
a proof: the path is always reported beside the id, and a reader can see
whose subtree it is in. The parser is strict so that near misses are never
taken for containers: ids are exactly 64 lower-case hex digits (ASCII only),
a pod uid is a lower-case UUID, and the name must match in full (no prefix
or suffix, no ``.scope.evil``). Conmon (the cri-o and podman monitor
process) cgroups are not containers.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "CONTAINER_PREFIX",
    "CONTAINER_PREFIX_EXPECTED",
    "Container",
    "Runtime",
    "matches_container",
    "parse_container",
]

Runtime: TypeAlias = Literal["docker", "containerd", "cri-o", "podman", "kubernetes"]


class Container(msgspec.Struct, frozen=True, gc=False):
    """A container named by a cgroup path: its id, runtime and, under a
    Kubernetes pod cgroup, the pod's uid (None otherwise).

    The one definition: the profile, the snapshot and the evidence payloads
    all hold this type.
    """

    id: str
    runtime: Runtime
    pod: str | None = None


_HEX64: Final = "[0-9a-f]{64}"
# Full-match patterns of one path component, each to its runtime. re.ASCII:
# no Unicode digits or letters sneak in through a character class.
_SCOPES: Final[tuple[tuple[re.Pattern[str], Runtime], ...]] = (
    (re.compile(rf"docker-({_HEX64})\.scope", re.ASCII), "docker"),
    (re.compile(rf"cri-containerd-({_HEX64})\.scope", re.ASCII), "containerd"),
    (re.compile(rf"crio-({_HEX64})\.scope", re.ASCII), "cri-o"),
    (re.compile(rf"libpod-({_HEX64})(?:\.scope)?", re.ASCII), "podman"),
)
_BARE_ID: Final = re.compile(_HEX64, re.ASCII)
_UUID: Final = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_UNDERSCORED: Final = "[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
# The pod's cgroup: cgroupfs ``pod<uid>``, systemd ``kubepods[-<qos>]-pod<uid_>.slice``.
_POD_CGROUPFS: Final = re.compile(rf"pod({_UUID})", re.ASCII)
_POD_SYSTEMD: Final = re.compile(
    rf"kubepods(?:-(?:besteffort|burstable))?-pod({_UUID_UNDERSCORED})\.slice", re.ASCII
)
_KUBEPODS: Final = frozenset({"kubepods", "kubepods.slice"})
#: Components looked at, from the leaf up: a container's own sub-cgroups
#: are few levels deep, and a hostile path of thousands of components
#: costs no more than this.
MAX_COMPONENTS: Final = 8


def _pod_uid(component: str) -> str | None:
    """The pod uid a pod cgroup's name holds, or None."""
    match = _POD_CGROUPFS.fullmatch(component)
    if match is not None:
        return match.group(1)
    match = _POD_SYSTEMD.fullmatch(component)
    if match is not None:
        return match.group(1).replace("_", "-")
    return None


def _named(parts: list[str], at: int) -> tuple[str, Runtime] | None:
    """The container id and runtime component ``parts[at]`` names, or None."""
    component = parts[at]
    for pattern, runtime in _SCOPES:
        match = pattern.fullmatch(component)
        if match is not None:
            return match.group(1), runtime
    if at > 0 and _BARE_ID.fullmatch(component) is not None:
        parent = parts[at - 1]
        if parent == "docker":
            return component, "docker"
        if _POD_CGROUPFS.fullmatch(parent) is not None and _KUBEPODS & set(parts[:at]):
            return component, "kubernetes"
    return None


def parse_container(path: str) -> Container | None:
    """The container the cgroup ``path`` names (see the module), or None.

    ``path`` is a cgroup v2 path from the hierarchy's root (``/a/b``).
    Never raises for any str: anything that does not match in full is no
    container.
    """
    parts = path.split("/")
    if len(parts) < 2:
        return None
    lowest = max(1, len(parts) - MAX_COMPONENTS)
    for at in range(len(parts) - 1, lowest - 1, -1):
        named = _named(parts, at)
        if named is None:
            continue
        container_id, runtime = named
        pod = None
        for above in range(at - 1, 0, -1):  # the nearest pod cgroup above it, if any
            pod = _pod_uid(parts[above])
            if pod is not None:
                break
        if pod is not None and not (_KUBEPODS & set(parts[1:at]) or _kube_slice(parts[1:at])):
            pod = None  # "pod<uid>" outside any kubepods hierarchy: not a pod
        return Container(id=container_id, runtime=runtime, pod=pod)
    return None


def _kube_slice(parts: list[str]) -> bool:
    """Is any component a systemd kubepods slice (``kubepods-burstable.slice``...)?"""
    return any(p.startswith("kubepods") and p.endswith(".slice") for p in parts)


#: What a container filter accepts (``snapshot --container``,
#: ``/v1/snapshot?container=``): a prefix of an id, at least 12 hex digits
#: as ``docker ps`` shows them, at most the whole 64.
CONTAINER_PREFIX: Final = re.compile(r"[0-9a-f]{12,64}", re.ASCII)
CONTAINER_PREFIX_EXPECTED: Final = (
    "a container id or a prefix of it: 12 to 64 lower-case hex digits"
)


def matches_container(container: Container | None, prefix: str) -> bool:
    """Does ``container``'s id start with ``prefix`` (a checked :data:`CONTAINER_PREFIX`)?"""
    return container is not None and container.id.startswith(prefix)
