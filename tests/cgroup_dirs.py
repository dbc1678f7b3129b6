"""Cgroups made for a test under this host's cgroup2 mount, removed after.

:func:`make_cgroups` creates the given paths under a parent of the test's
own (``tracehound-test-<pid>.slice``) and yields the mount's directory
objects; on the way out every process still in them is moved back to the
root cgroup and the directories are removed, deepest first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.cgroups import cgroup2_mount

H = "0123456789abcdef" * 4  # container ids: 64 hex digits
H2 = "fedcba9876543210" * 4
H3 = "00112233445566778899aabbccddeeff" * 2


def mount_point() -> Path:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        found = cgroup2_mount(f.read())
    if found is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup2 mount")
    return Path(found[0])


@contextlib.contextmanager
def make_cgroups(*relative: str) -> Iterator[tuple[Path, str, list[Path]]]:
    """``(mount, parent path from the root, [each cgroup's directory])``."""
    mount = mount_point()
    parent = f"tracehound-test-{os.getpid()}.slice"
    made: list[Path] = []
    try:
        for rel in relative:
            path = mount / parent / rel
            steps = [*reversed(path.relative_to(mount).parents)][1:]
            for step in [*steps, path.relative_to(mount)]:
                directory = mount / step
                if not directory.exists():
                    directory.mkdir()
                    made.append(directory)
        yield mount, "/" + parent, [mount / parent / rel for rel in relative]
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (mount / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                directory.rmdir()
