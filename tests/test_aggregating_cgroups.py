"""The aggregate's cgroups: folding only notes new ids (no I/O), the snapshot
resolves what is left, the text tree says where a process's cgroup changes,
and the profile's redaction covers cgroup paths."""

from __future__ import annotations

import os

from agent.capture.cgroups import CgroupResolver
from agent.capture.container_id import Container
from agent.capture.events import ExecEvent, ForkEvent
from agent.redact import Redactor
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import render_text
from agent.sinks.redacted_profile import redact_profile
from tests.cgroup_dirs import H, make_cgroups

TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"


def fork(pid: int, child: int, cgroup_id: int, ts: int) -> ForkEvent:
    return ForkEvent(pid=pid, tid=pid, ts_ns=ts, uid=0, gid=0, cgroup_id=cgroup_id,
                     comm="sh", child_pid=child, clone_flags=0)  # fmt: skip


def exec_(pid: int, cgroup_id: int, ts: int) -> ExecEvent:
    return ExecEvent(pid=pid, tid=pid, ts_ns=ts, uid=0, gid=0, cgroup_id=cgroup_id, comm="sh",
                     ret=0, filename="/bin/true", argv=("true",), argv_truncated=False,
                     at=False)  # fmt: skip


def test_fold_notes_snapshot_resolves_text_shows_changes() -> None:
    with make_cgroups(f"docker-{H}.scope", f"{TOKEN}.scope") as (_, parent, dirs):
        docker, secret = (os.stat(d).st_ino for d in dirs)
        resolver = CgroupResolver()
        sink = AggregatingSink(cgroups=resolver)
        sink.apply(fork(1, 2, 1, 10))  # the root cgroup
        sink.apply(fork(2, 3, 1, 20))
        sink.apply(exec_(3, docker, 30))  # moved into the container, then exec'd
        sink.apply(fork(2, 4, secret, 40))
        assert resolver.stats().misses == 0  # folding did no look-up
        assert set(resolver.pending()) == {1, docker, secret}
        profile = sink.snapshot()
        assert resolver.pending() == []
        by_pid = {p.pid: p for p in profile.processes}
        assert by_pid[3].cgroup == f"{parent}/docker-{H}.scope"
        assert by_pid[3].container == Container(H, "docker")
        assert (by_pid[2].cgroup, by_pid[2].container) == ("/", None)
        text = render_text(profile)
        assert text.count(f"container docker {H}") == 1
        assert text.count("cgroup /\n") == 1  # said at the root, not for the child in it too
        shown = redact_profile(profile, Redactor.builtin())
        assert TOKEN not in {p.pid: p for p in shown.processes}[4].cgroup  # type: ignore[operator]
        assert TOKEN in by_pid[4].cgroup  # type: ignore[operator]


def test_without_a_resolver_cgroups_stay_unknown() -> None:
    sink = AggregatingSink()
    sink.apply(fork(1, 2, 77, 10))
    (_, child) = sink.snapshot().processes
    assert (child.cgroup_id, child.cgroup, child.container) == (77, None, None)
    assert "cgroup 77 (unresolved)" in render_text(sink.snapshot())
