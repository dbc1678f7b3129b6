"""The cgroup resolver on the real cgroup2 tree: by handle, by the walk,
gone ids unresolved (and cached), the cache's bound, the pending queue."""

from __future__ import annotations

import os

from agent.capture import cgroups
from agent.capture.cgroups import UNRESOLVED, CgroupResolver, cgroup2_mount
from agent.capture.container_id import Container
from tests.cgroup_dirs import H2, H, make_cgroups

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_mountinfo_finds_cgroup2_not_v1() -> None:
    assert cgroup2_mount(HYBRID) == ("/sys/fs/cgroup/unified", "/")
    assert cgroup2_mount(HYBRID.replace("cgroup2 cgroup2", "cgroup cgroup")) is None
    assert cgroup2_mount("") is None
    assert cgroup2_mount("garbage without a separator\n") is None


def test_mountinfo_escapes_and_root_preference() -> None:
    text = (
        "50 1 0:40 /ns/inner /mnt/in\\040ns rw - cgroup2 cgroup2 rw\n"
        "51 1 0:40 / /mnt/cg\\134root rw - cgroup2 cgroup2 rw\n"
    )
    assert cgroup2_mount(text) == ("/mnt/cg\\root", "/")
    only_ns = text.splitlines()[0]
    assert cgroup2_mount(only_ns) == ("/mnt/in ns", "/ns/inner")


def test_resolves_by_handle_and_by_walk() -> None:
    with make_cgroups(f"docker-{H}.scope", f"crio-conmon-{H2}.scope", "plain") as (_, parent, dirs):
        ids = [os.stat(d).st_ino for d in dirs]
        for resolver in (CgroupResolver(), CgroupResolver(handles=False)):
            found = [resolver.resolve(i) for i in ids]
            assert [f.path for f in found] == [
                f"{parent}/docker-{H}.scope", f"{parent}/crio-conmon-{H2}.scope", f"{parent}/plain"
            ]  # fmt: skip
            assert [f.container for f in found] == [Container(H, "docker"), None, None]
            stats = resolver.stats()
            assert (stats.by_handle, stats.by_walk) == ((3, 0) if resolver._handles else (0, 3))
            # Asked again: from the cache, no look-up.
            assert resolver.resolve(ids[0]) is found[0]
            assert resolver.stats().hits == 1
            assert resolver.resolve(1).path == "/"


def test_gone_is_unresolved_and_stays_so() -> None:
    with make_cgroups("soon-gone") as (_, _, dirs):
        gone = os.stat(dirs[0]).st_ino
    for resolver in (CgroupResolver(), CgroupResolver(handles=False)):
        assert resolver.resolve(gone) is UNRESOLVED
        assert resolver.stats().unresolved == {"gone": 1}
        assert resolver.resolve(gone) is UNRESOLVED  # cached: ids are never reused
        assert resolver.stats().misses == 1


def test_no_mount_is_unresolved() -> None:
    resolver = CgroupResolver(mountinfo="")
    assert resolver.resolve(1) is UNRESOLVED
    assert resolver.stats().unresolved == {"no-cgroup2-mount": 1}
    assert resolver.stats().mount is None


def test_walk_bound_is_counted_not_cached(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with make_cgroups("a/b/c") as (_, _, dirs):
        deep = os.stat(dirs[0]).st_ino
        monkeypatch.setattr(cgroups, "WALK_MAX_DEPTH", 1)
        resolver = CgroupResolver(handles=False)
        assert resolver.resolve(deep) is UNRESOLVED
        assert resolver.stats().unresolved == {"walk-limit": 1}
        monkeypatch.setattr(cgroups, "WALK_MAX_DEPTH", 32)
        assert resolver.resolve(deep).path is not None  # not cached: tried again


def test_cache_is_bounded_and_counts_evictions() -> None:
    with make_cgroups("one", "two", "three") as (_, _, dirs):
        ids = [os.stat(d).st_ino for d in dirs]
        resolver = CgroupResolver(capacity=2)
        for i in ids:
            resolver.resolve(i)
        stats = resolver.stats()
        assert (stats.entries, stats.evictions) == (2, 1)
        assert resolver.cached(ids[0]) is None  # the oldest went first
        assert resolver.cached(ids[2]) is not None


def test_pending_is_resolved_later_and_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with make_cgroups(f"docker-{H}.scope") as (_, _, dirs):
        cid = os.stat(dirs[0]).st_ino
        resolver = CgroupResolver()
        assert resolver.cached(cid) is None
        resolver.note(cid)
        resolver.note(cid)  # once
        assert resolver.pending() == [cid]
        assert resolver.resolve_pending() == 1
        info = resolver.cached(cid)
        assert info is not None and info.container == Container(H, "docker")
        monkeypatch.setattr(cgroups, "PENDING_CAPACITY", 1)
        resolver.note(10**12)
        resolver.note(10**12 + 1)
        assert resolver.pending() == [10**12]
        assert resolver.stats().pending_dropped == 1
