"""AggregatingSink: events folded into a deterministic per-process Profile."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from agent.capture import kinds
from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
    kind_of,
)
from agent.sinks import aggregating as agg
from agent.sinks.aggregating import AggregatingSink, display_path, errno_name, open_access
from agent.sinks.profile import ProcessProfile, Profile, decode_profile, encode_profile, render_text

REPO = Path(__file__).resolve().parent.parent
AT_FDCWD = -100
AT_REMOVEDIR = 0x200


# -- event factories ---------------------------------------------------------


def _hdr(pid: int, ts: int, comm: str, uid: int = 1000) -> dict[str, Any]:
    return {"pid": pid, "tid": pid, "ts_ns": ts, "uid": uid, "gid": uid + 1, "cgroup_id": 77,
            "comm": comm}  # fmt: skip


def seen(pid: int, ppid: int, comm: str = "bash", cmdline: tuple[str, ...] = ("bash",),
         uid: int = 1000, preexisting: bool = False) -> ProcessSeen:  # fmt: skip
    return ProcessSeen(
        pid=pid, ppid=ppid, comm=comm, exe=f"/bin/{comm}", cmdline=cmdline, uid=uid,
        user="u", start_time=0.0, preexisting=preexisting,
    )  # fmt: skip


def fork(parent: int, child: int, ts: int, comm: str = "bash") -> ForkEvent:
    return ForkEvent(**_hdr(parent, ts, comm), child_pid=child, clone_flags=0x11)


def execve(pid: int, ts: int, filename: str, argv: tuple[str, ...], ret: int = 0,
           comm: str | None = None, truncated: bool = False) -> ExecEvent:  # fmt: skip
    return ExecEvent(
        **_hdr(pid, ts, comm or os.path.basename(filename)[:15]),
        ret=ret, filename=filename, argv=argv, argv_truncated=truncated, at=False,
    )  # fmt: skip


def exit_(pid: int, ts: int, code: int = 0, sig: int = 0, have_code: bool = True,
          have_signal: bool = False, comm: str = "x") -> ExitEvent:  # fmt: skip
    return ExitEvent(
        **_hdr(pid, ts, comm), exit_code=code, signal=sig, have_code=have_code,
        have_signal=have_signal,
    )  # fmt: skip


def file_(pid: int, ts: int, path: str, op: str = "open", ret: int = 3, flags: int = os.O_RDONLY,
          mode: int = 0, dfd: int = AT_FDCWD, path2: str = "", dfd2: int = AT_FDCWD,
          comm: str = "cc") -> FileEvent:  # fmt: skip
    return FileEvent(
        **_hdr(pid, ts, comm), op=op, syscall="openat", ret=ret, dfd=dfd, path=path, dfd2=dfd2,
        path2=path2, flags=flags, mode=mode,
    )  # fmt: skip


def net(pid: int, ts: int, op: str, endpoint: Endpoint | None, fd: int = 5, ret: int = 0,
        backlog: int = 0, comm: str = "cc") -> NetEvent:  # fmt: skip
    return NetEvent(**_hdr(pid, ts, comm), op=op, ret=ret, fd=fd, endpoint=endpoint,
                    backlog=backlog)  # fmt: skip


def counts(pid: int, final: bool = True, **c: int) -> SyscallCounts:
    return SyscallCounts(pid=pid, counts=dict(c), final=final)


def feed(events: list[Event], **caps: int) -> AggregatingSink:
    sink = AggregatingSink(**caps)
    for event in events:
        sink.apply(event)
    return sink


def by_pid(profile: Profile) -> dict[int, ProcessProfile]:
    out = {p.pid: p for p in profile.processes}
    assert len(out) == len(profile.processes), "pids not unique in this scenario"
    return out


HTTPS = Endpoint("ipv4", "10.0.0.1", 443)
REFUSED = Endpoint("ipv4", "10.0.0.2", 80)
SOCK = Endpoint("unix", "/run/app.sock")


def synthetic_events() -> list[Event]:
    """A small build: bash runs make, which runs a compiler and a killed helper."""
    return [
        seen(100, 1, "bash", ("bash", "-c", "make all")),
        execve(100, 10, "/usr/bin/make", ("make", "all")),
        fork(100, 101, 20, comm="make"),
        execve(101, 30, "/usr/local/bin/cc", ("cc", "-c", "x.c"), ret=-errno.ENOENT, comm="make"),
        execve(101, 31, "/usr/bin/cc", ("cc", "-c", "x.c")),
        file_(101, 40, "/src/x.c"),
        file_(101, 41, "/src/x.c", ret=4),
        file_(101, 42, "x.o", flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644),
        file_(101, 43, "x.o", flags=os.O_RDONLY),
        file_(101, 44, "/etc/secret", ret=-errno.EACCES),
        file_(101, 45, "tmp", op="rename", ret=0, dfd=7, path2="x.final", dfd2=7),
        file_(101, 46, "/tmp/d", op="unlink", ret=0, flags=AT_REMOVEDIR),
        file_(101, 47, "/tmp/f", op="unlink", ret=0),
        file_(101, 48, "/tmp/script", op="chmod", ret=0, mode=0o755),
        file_(101, 49, "/tmp/newdir", op="mkdir", ret=0, mode=0o700),
        net(101, 50, "connect", HTTPS, ret=-errno.EINPROGRESS),
        net(101, 51, "connect", REFUSED, ret=-errno.ECONNREFUSED),
        net(101, 52, "bind", SOCK, fd=6),
        net(101, 53, "listen", None, fd=6, backlog=16),
        net(101, 54, "listen", None, fd=9, backlog=16),
        counts(101, final=False, read=3),
        exit_(101, 60, code=0),
        counts(101, read=10, openat=5),
        fork(100, 102, 70, comm="make"),
        exit_(102, 80, sig=9, have_code=False, have_signal=True),
        exit_(100, 90, code=2),
    ]


# -- determinism -------------------------------------------------------------


def test_same_events_give_identical_bytes() -> None:
    a = encode_profile(feed(synthetic_events()).finish())
    b = encode_profile(feed(synthetic_events()).finish())
    assert a == b
    assert decode_profile(a) == feed(synthetic_events()).finish()
    assert encode_profile(decode_profile(a)) == a


def test_identical_bytes_across_hash_seeds() -> None:
    """Set/dict iteration order changes with the hash seed; the profile must not."""
    code = (
        "import sys\n"
        "from tests.test_aggregating import feed, synthetic_events\n"
        "from agent.sinks.profile import encode_profile\n"
        "sys.stdout.buffer.write(encode_profile(feed(synthetic_events()).finish()))\n"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert outputs.pop() == encode_profile(feed(synthetic_events()).finish())


def test_snapshot_equals_finish() -> None:
    sink = feed(synthetic_events())
    snap = encode_profile(sink.snapshot())
    assert snap == encode_profile(sink.finish())


# -- the synthetic scenario --------------------------------------------------


@pytest.fixture
def profile() -> Profile:
    sink = feed(synthetic_events())
    sink.note("probe file.openat2 missing: tracepoint not found")
    return sink.finish()


def test_process_tree(profile: Profile) -> None:
    procs = by_pid(profile)
    assert set(procs) == {100, 101, 102}
    assert procs[100].ppid == 1
    assert procs[101].ppid == 100
    assert procs[102].ppid == 100
    assert procs[101].started_ns == 20
    assert procs[102].started_ns == 70
    # Ordered by start time (the root's is unknown: first).
    assert [p.pid for p in profile.processes] == [100, 101, 102]


def test_fork_inherits_the_parent_image_until_exec(profile: Profile) -> None:
    procs = by_pid(profile)
    assert procs[102].exe == "/usr/bin/make"
    assert procs[102].argv == ["make", "all"]
    assert procs[102].execs == []
    assert procs[102].comm == "make"


def test_exec_records(profile: Profile) -> None:
    p = by_pid(profile)[101]
    assert [(e.filename, e.error) for e in p.execs] == [
        ("/usr/local/bin/cc", "ENOENT"),
        ("/usr/bin/cc", ""),
    ]
    assert p.execs[1].argv == ["cc", "-c", "x.c"]
    assert p.execs[0].ts_ns == 30
    assert p.exe == "/usr/bin/cc"
    assert p.argv == ["cc", "-c", "x.c"]
    assert p.comm == "cc"


def test_failed_exec_leaves_image_alone() -> None:
    prof = feed(
        [seen(5, 1, "sh", ("sh",)), execve(5, 1, "/nope", ("nope",), ret=-errno.EACCES)]
    ).finish()
    p = by_pid(prof)[5]
    assert p.exe == "/bin/sh"
    assert p.argv == ["sh"]
    assert p.comm == "sh"
    assert p.execs[0].error == "EACCES"


def test_exit_code_and_signal(profile: Profile) -> None:
    procs = by_pid(profile)
    assert (procs[100].exit_code, procs[100].exit_signal, procs[100].exited_ns) == (2, None, 90)
    assert (procs[101].exit_code, procs[101].exit_signal) == (0, None)
    assert (procs[102].exit_code, procs[102].exit_signal) == (None, 9)


@pytest.mark.parametrize(
    ("have_code", "have_signal", "expect"),
    [(True, False, (7, None)), (False, True, (None, 15)), (True, True, (None, 15)),
     (False, False, (None, None))],
)  # fmt: skip
def test_exit_flags(have_code: bool, have_signal: bool, expect: tuple[Any, Any]) -> None:
    prof = feed(
        [seen(8, 1), exit_(8, 5, code=7, sig=15, have_code=have_code, have_signal=have_signal)]
    ).finish()
    p = by_pid(prof)[8]
    assert (p.exit_code, p.exit_signal) == expect
    assert p.exited_ns == 5


def test_files_merged_and_failures_apart(profile: Profile) -> None:
    p = by_pid(profile)[101]
    files = {(f.path, f.op): f for f in p.files}
    assert files[("/src/x.c", "open")].count == 2
    assert files[("/src/x.c", "open")].access == ["read"]
    assert files[("/src/x.c", "open")].first_ns == 40
    xo = files[("x.o", "open")]
    assert xo.count == 2
    assert xo.access == ["create", "read", "truncate", "write"]
    assert xo.mode == 0o644
    assert files[("fd:7/tmp", "rename")].target == "fd:7/x.final"
    assert ("/tmp/d", "rmdir") in files
    assert ("/tmp/f", "unlink") in files
    assert files[("/tmp/script", "chmod")].mode == 0o755
    assert files[("/tmp/newdir", "mkdir")].mode == 0o700
    assert all(f.error == "" for f in p.files)
    assert [(f.path, f.op, f.error) for f in p.failed_files] == [("/etc/secret", "open", "EACCES")]
    # Records are sorted by path.
    assert [f.path for f in p.files] == sorted(f.path for f in p.files)


def test_same_path_success_and_failure_are_two_records() -> None:
    prof = feed(
        [
            file_(3, 1, "/etc/x", ret=-errno.ENOENT),
            file_(3, 2, "/etc/x", ret=3),
            file_(3, 3, "/etc/x", ret=-errno.ENOENT),
            file_(3, 4, "/etc/x", ret=-errno.EACCES),
        ]
    ).finish()
    p = by_pid(prof)[3]
    assert [(f.count, f.error) for f in p.files] == [(1, "")]
    assert sorted((f.error, f.count) for f in p.failed_files) == [("EACCES", 1), ("ENOENT", 2)]


def test_network(profile: Profile) -> None:
    p = by_pid(profile)[101]
    ok = {(n.op, n.endpoint): n for n in p.network}
    assert ok[("connect", HTTPS)].result == "in-progress"
    assert ok[("connect", HTTPS)].error == ""
    assert ok[("bind", SOCK)].result == "ok"
    # listen names the address bound earlier on the same fd...
    assert ("listen", SOCK) in ok
    # ...and None when nothing was bound on that fd.
    assert ("listen", None) in ok
    assert [(n.op, n.endpoint, n.error) for n in p.failed_network] == [
        ("connect", REFUSED, "ECONNREFUSED")
    ]


def test_listen_uses_the_bind_of_its_own_fd_only() -> None:
    other = Endpoint("ipv4", "0.0.0.0", 8080)
    prof = feed(
        [
            net(4, 1, "bind", SOCK, fd=3),
            net(4, 2, "bind", other, fd=4, ret=-errno.EADDRINUSE),  # failed: not remembered
            net(4, 3, "listen", None, fd=4),
            net(4, 4, "listen", None, fd=3),
            net(4, 5, "listen", Endpoint("ipv4", "127.0.0.1", 9), fd=3),  # kernel-named
        ]
    ).finish()
    p = by_pid(prof)[4]
    listens = sorted((n.endpoint is not None, n.endpoint) for n in p.network if n.op == "listen")
    assert listens == [(False, None), (True, Endpoint("ipv4", "127.0.0.1", 9)), (True, SOCK)]
    assert [(n.op, n.error) for n in p.failed_network] == [("bind", "EADDRINUSE")]


def test_repeated_connects_merge() -> None:
    prof = feed([net(4, t, "connect", HTTPS) for t in (5, 6, 7)]).finish()
    [rec] = by_pid(prof)[4].network
    assert (rec.count, rec.first_ns, rec.result) == (3, 5, "ok")


def _netx(pid: int, ts: int, op: str, endpoint: Endpoint | None, *, ret: int = 0, count: int = 1,
          messages: int = 0, proto: str = "", outcome: str = "") -> NetEvent:  # fmt: skip
    return NetEvent(**_hdr(pid, ts, "cc"), op=op, ret=ret, fd=5, endpoint=endpoint, backlog=0,
                    count=count, messages=messages, proto=proto, outcome=outcome)  # fmt: skip


DNS = Endpoint("ipv4", "127.0.0.53", 53)
DNS6 = Endpoint("ipv6", "::1", 53)


def test_udp_sends_aggregate_per_peer_in_datagrams() -> None:
    prof = feed(
        [
            _netx(4, 10, "sendto", DNS, ret=40, messages=1, proto="udp"),
            _netx(4, 11, "sendmmsg", DNS, ret=2, messages=2, proto="udp"),
            _netx(4, 12, "sendmsg", DNS, ret=40, messages=1, count=3, proto="udp"),  # folded
            _netx(4, 13, "sendto", DNS6, ret=40, messages=1, proto="udp"),
            _netx(4, 14, "sendto", DNS6, ret=-errno.ENETUNREACH, messages=1, proto="udp"),
        ]
    ).finish()
    p = by_pid(prof)[4]
    lines = {(n.op, n.endpoint): (n.count, n.first_ns, n.proto, n.result) for n in p.network}
    assert lines == {("send", DNS): (6, 10, "udp", "ok"), ("send", DNS6): (1, 13, "udp", "ok")}
    assert [(n.op, n.endpoint, n.count, n.error) for n in p.failed_network] == [
        ("send", DNS6, 1, "ENETUNREACH")
    ]
    text = render_text(prof)
    assert "net send 127.0.0.53:53 (udp, 6 datagrams)" in text
    assert "net send FAILED [::1]:53: ENETUNREACH" in text


@pytest.mark.parametrize("result_first", [False, True])
def test_a_non_blocking_connect_says_how_it_ended(result_first: bool) -> None:
    """Established and refused, whichever of the connect and its result
    the drain delivers first (the fold holds repeats back)."""
    up, down = Endpoint("ipv4", "127.0.0.1", 8080), Endpoint("ipv4", "127.0.0.1", 8081)
    connects = [
        _netx(4, 10, "connect", up, ret=-errno.EINPROGRESS, count=2),
        _netx(4, 20, "connect", down, ret=-errno.EINPROGRESS),
    ]
    results = [
        _netx(4, 11, "connect_result", up, proto="tcp", outcome="established", count=2),
        _netx(
            4, 21, "connect_result", down, ret=-errno.ECONNREFUSED, proto="tcp", outcome="refused"
        ),
    ]
    prof = feed(results + connects if result_first else connects + results).finish()
    p = by_pid(prof)[4]
    assert [(n.op, n.endpoint, n.count, n.result, n.proto) for n in p.network] == [
        ("connect", up, 2, "established", "tcp")
    ]
    assert [(n.op, n.endpoint, n.count, n.result, n.error) for n in p.failed_network] == [
        ("connect", down, 1, "refused", "ECONNREFUSED")
    ]
    text = render_text(prof)
    assert "net connect 127.0.0.1:8080 (tcp, established)" in text
    assert "net connect FAILED 127.0.0.1:8081: ECONNREFUSED (refused)" in text


def test_a_connect_without_its_result_stays_in_progress() -> None:
    up = Endpoint("ipv4", "127.0.0.1", 8080)
    prof = feed(
        [
            _netx(4, 10, "connect", up, ret=-errno.EINPROGRESS, count=3),
            _netx(4, 11, "connect_result", up, outcome="established"),
            _netx(4, 12, "connect_result", up, outcome="failed"),  # error not known
        ]
    ).finish()
    p = by_pid(prof)[4]
    assert [(n.count, n.result) for n in p.network] == [(2, "in-progress")]
    assert [(n.count, n.result, n.error) for n in p.failed_network] == [(1, "failed", "unknown")]


def test_syscall_counts_after_exit_attach_to_the_exited_process(profile: Profile) -> None:
    p = by_pid(profile)[101]
    # The final reading replaced the earlier one.
    assert p.syscalls == {"openat": 5, "read": 10}
    assert list(p.syscalls) == ["openat", "read"]
    assert p.exited_ns == 60
    assert len(profile.processes) == 3


def test_syscall_counts_go_to_the_live_process_after_pid_reuse() -> None:
    prof = feed(
        [
            fork(1, 50, 1),
            exit_(50, 2),
            counts(50, read=1),
            fork(1, 50, 3),
            counts(50, final=False, write=2),
        ]
    ).finish()
    procs = [p for p in prof.processes if p.pid == 50]
    assert [(p.started_ns, p.exited_ns, p.syscalls) for p in procs] == [
        (1, 2, {"read": 1}),
        (3, None, {"write": 2}),
    ]


def test_syscall_counts_alone_never_make_a_process() -> None:
    """A phantom made from counts would never see its exit and would hold a
    process slot forever."""
    prof = feed([counts(9, final=False, read=1), counts(9, final=True, read=2)]).finish()
    assert 9 not in by_pid(prof)


def test_final_counts_retire_a_process_whose_exit_was_lost() -> None:
    sink = feed([fork(1, 20, 1), counts(20, final=True, read=4)], max_processes=4)
    prof = sink.finish()
    assert by_pid(prof)[20].syscalls == {"read": 4}
    # Retired, so it is evicted like any exited process to make room; had it
    # stayed live, the third child would have been refused.
    for child in (21, 22, 23):
        sink.apply(fork(1, child, child))
    pids = {p.pid for p in sink.finish().processes}
    assert pids == {1, 21, 22, 23}
    assert sink.evictions["processes"] == 1


def test_total_caps_bound_the_whole_profile() -> None:
    events: list[Event] = []
    for pid in range(10, 14):
        events.append(fork(1, pid, pid))
        events += [file_(pid, 100 + i, f"/p{pid}/{i}") for i in range(5)]
    sink = feed(events, max_files=100, max_total_files=12)
    prof = sink.finish()
    kept = sum(len(p.files) for p in prof.processes)
    assert kept == 12
    assert prof.evictions["files"] == 20 - 12
    assert sum(p.evicted.get("files", 0) for p in prof.processes) == 8


def test_accounting_counts_every_event_by_kind() -> None:
    events = synthetic_events()
    sink = feed(events)
    expected = Counter(kind_of(e) for e in events)
    assert sink.accounting() == {"aggregating": {k: (n, 0) for k, n in expected.items()}}
    assert AggregatingSink(name="agg2").accounting() == {"agg2": {}}


async def test_record_is_apply() -> None:
    sink = AggregatingSink()
    for event in synthetic_events():
        await sink.record(event)
    assert encode_profile(sink.finish()) == encode_profile(feed(synthetic_events()).finish())


# -- caps --------------------------------------------------------------------


def test_max_files() -> None:
    events: list[Event] = [file_(7, i, f"/f{i}") for i in range(5)]
    events += [file_(7, 10, "/f0"), file_(7, 11, "/f1", ret=-errno.ENOENT)]
    prof = feed(events, max_files=2).finish()
    p = by_pid(prof)[7]
    assert [(f.path, f.count) for f in p.files] == [("/f0", 2), ("/f1", 1)]
    assert p.failed_files == []
    assert p.evicted == {"files": 4}
    assert prof.evictions["files"] == 4
    assert set(prof.evictions) == {"processes", "files", "endpoints", "execs", "calls", "notes"}


def test_max_endpoints() -> None:
    eps = [Endpoint("ipv4", f"10.0.0.{i}", 80) for i in range(4)]
    events: list[Event] = [net(7, i, "connect", ep) for i, ep in enumerate(eps)]
    events.append(net(7, 9, "connect", eps[0]))
    prof = feed(events, max_endpoints=1).finish()
    p = by_pid(prof)[7]
    assert [(n.endpoint, n.count) for n in p.network] == [(eps[0], 2)]
    assert p.evicted == {"endpoints": 3}
    assert prof.evictions["endpoints"] == 3


def test_max_execs_still_tracks_the_image() -> None:
    events: list[Event] = [execve(7, i, f"/bin/p{i}", (f"p{i}",)) for i in range(4)]
    prof = feed(events, max_execs=2).finish()
    p = by_pid(prof)[7]
    assert [e.filename for e in p.execs] == ["/bin/p0", "/bin/p1"]
    assert p.exe == "/bin/p3"
    assert p.argv == ["p3"]
    assert p.evicted == {"execs": 2}
    assert prof.evictions["execs"] == 2


def test_max_processes_evicts_oldest_exited() -> None:
    events: list[Event] = [
        fork(1, 10, 1), fork(1, 11, 2), exit_(11, 3), exit_(10, 4),
        fork(1, 12, 5),  # full (1, 10, 11): 11 exited first, so it goes
        fork(1, 13, 6),  # full (1, 10, 12): 10 goes
    ]  # fmt: skip
    prof = feed(events, max_processes=3).finish()
    assert sorted(p.pid for p in prof.processes) == [1, 12, 13]
    assert prof.evictions["processes"] == 2


def test_max_processes_refuses_when_none_exited() -> None:
    events: list[Event] = [
        fork(1, 10, 1),
        fork(1, 11, 2),  # refused: 1 and 10 are live
        file_(11, 3, "/x"),  # refused again
        exit_(11, 4),  # refused again
        file_(10, 5, "/y"),
    ]
    prof = feed(events, max_processes=2).finish()
    assert sorted(p.pid for p in prof.processes) == [1, 10]
    assert prof.evictions["processes"] == 3
    assert [f.path for f in by_pid(prof)[10].files] == ["/y"]
    assert len(prof.processes) <= 2


def test_max_notes() -> None:
    sink = AggregatingSink(max_notes=2)
    for i in range(5):
        sink.note(f"note {i}")
    prof = sink.finish()
    assert prof.notes == ["note 0", "note 1"]
    assert prof.evictions["notes"] == 3


def test_no_evictions_by_default(profile: Profile) -> None:
    assert not any(profile.evictions.values())
    assert all(p.evicted == {} for p in profile.processes)


def expected_bytes(prof: Profile) -> int:
    """What the budget should say the profile holds, recomputed from the
    profile alone with the published cost model."""
    total = 0
    for p in prof.processes:
        total += agg.PROCESS_BYTES + agg.text_bytes(p.exe, *p.argv) + 8 * len(p.argv)
        total += agg.paths_bytes(p.cwd, p.exe_path)
        for e in p.execs:
            total += agg.EXEC_BYTES + agg.text_bytes(e.filename, *e.argv) + 8 * len(e.argv)
            total += agg.paths_bytes(e.cwd, e.exe_path)
        for f in (*p.files, *p.failed_files):
            total += agg.FILE_BYTES + agg.text_bytes(f.path)
            total += agg.text_bytes(f.target) if f.target else 0
        for n in (*p.network, *p.failed_network):
            total += agg.ENDPOINT_BYTES + (agg.text_bytes(n.endpoint.address) if n.endpoint else 0)
        total += agg.SYSCALL_BYTES * len(p.syscalls)
    return total


def test_status_is_what_the_profile_holds() -> None:
    sink = feed(synthetic_events(), max_processes=100, max_bytes=1 << 20)
    prof = sink.snapshot()
    status = sink.status()
    assert status.held == {
        "processes": len(prof.processes),
        "live": sum(1 for p in prof.processes if p.exited_ns is None),
        "files": sum(len(p.files) + len(p.failed_files) for p in prof.processes),
        "endpoints": sum(len(p.network) + len(p.failed_network) for p in prof.processes),
        "execs": sum(len(p.execs) for p in prof.processes),
        "calls": sum(len(p.calls) for p in prof.processes),
        "bytes": expected_bytes(prof),
    }
    assert status.held["files"] == 8 and status.held["processes"] == 3
    assert status.caps == {"processes": 100, "files": 1 << 18, "endpoints": 1 << 16,
                           "execs": 1 << 16, "calls": 1 << 16, "bytes": 1 << 20}  # fmt: skip
    assert status.evictions == {k: 0 for k in agg.EVICTION_KINDS}


def test_text_bytes_counts_characters_and_their_width() -> None:
    assert agg.text_bytes() == 0
    assert agg.text_bytes("abc", "") == 2 * agg.STR_BYTES + 3
    assert agg.text_bytes("é" * 10) == agg.STR_BYTES + 40  # not ASCII: 4 per character


def test_total_cap_makes_room_by_evicting_the_oldest_exited() -> None:
    """The snapshot keeps what ran last: a full total evicts the oldest exited
    process (counted) rather than refusing every new process's records."""
    events: list[Event] = []
    for pid in (10, 11, 12):
        events.append(fork(1, pid, pid))
        events += [file_(pid, 100 * pid + i, f"/p{pid}/{i}") for i in range(3)]
        events.append(exit_(pid, 100 * pid + 9))
    sink = feed(events, max_total_files=6)
    prof = sink.finish()
    assert sorted(p.pid for p in prof.processes) == [1, 11, 12]
    assert prof.evictions["processes"] == 1
    assert prof.evictions["files"] == 0
    assert sink.status().held["files"] == 6
    assert sink.status().held["bytes"] == expected_bytes(prof)


def test_max_bytes_evicts_exited_then_refuses_and_counts() -> None:
    long = "/" + "é" * 200  # 850 estimated bytes of path
    one = agg.FILE_BYTES + agg.text_bytes(long)
    budget = 3 * agg.PROCESS_BYTES + 2 * one + 100
    sink = AggregatingSink(max_bytes=budget)
    for pid in range(10, 20):  # each exits holding one long path
        for event in (fork(1, pid, pid), file_(pid, pid, long + str(pid)), exit_(pid, pid)):
            sink.apply(event)
            assert sink.status().held["bytes"] <= budget
    prof = sink.snapshot()
    kept = sorted(p.pid for p in prof.processes)
    assert kept[0] == 1 and kept[1:] == list(range(20 - len(kept) + 1, 20))  # the newest
    assert prof.evictions["processes"] == 10 - (len(kept) - 1)
    assert prof.evictions["files"] == 0
    # A live process with nothing exited left to evict: its records are refused.
    sink.apply(fork(1, 30, 30))
    for i in range(5):
        sink.apply(file_(30, 31 + i, f"{long}/{i}"))
        assert sink.status().held["bytes"] <= budget
    prof = sink.snapshot()
    p30 = by_pid(prof)[30]
    assert [p.pid for p in prof.processes if p.exited_ns is not None] == []
    assert len(p30.files) >= 1 and p30.evicted["files"] >= 1
    assert len(p30.files) + p30.evicted["files"] == 5
    assert prof.evictions["processes"] == 10
    assert prof.evictions["files"] == p30.evicted["files"]
    assert sink.status().held["bytes"] == expected_bytes(prof)


def test_syscall_readings_are_charged_and_replaced() -> None:
    sink = feed([fork(1, 10, 1), counts(10, final=False, read=1, write=2)])
    before = sink.status().held["bytes"]
    sink.apply(counts(10, final=False, read=5, write=6, openat=7))
    assert sink.status().held["bytes"] == before + agg.SYSCALL_BYTES
    sink.apply(counts(10, final=True, read=9))
    prof = sink.finish()
    assert by_pid(prof)[10].syscalls == {"read": 9}
    assert sink.status().held["bytes"] == expected_bytes(prof)


def test_reap_retires_processes_whose_exit_was_lost() -> None:
    sink = feed([fork(1, 10, 5), fork(1, 11, 6), file_(10, 7, "/x")], max_processes=3)
    assert sorted(sink.running()) == [(1, None), (10, 5), (11, 6)]
    sink.apply(fork(1, 12, 8))  # full of running processes: refused
    assert sink.evictions["processes"] == 1
    # A pair that is not the held one (pid reused, or unknown) is left alone.
    assert sink.reap([(10, 99), (42, None)], now_ns=100) == 0
    assert sink.reap([(10, 5), (11, 6)], now_ns=100) == 2
    assert sink.status().reaped == 2 and sink.status().held["live"] == 1
    sink.apply(fork(1, 12, 101))  # room made by evicting a reaped one
    prof = sink.snapshot()
    assert sorted(p.pid for p in prof.processes) == [1, 11, 12]
    assert by_pid(prof)[11].exited_ns == 100 and by_pid(prof)[11].exit_code is None
    # Its exit record was only late: it fills in the same process.
    sink.apply(exit_(11, 90, code=3))
    prof = sink.snapshot()
    assert [(p.exited_ns, p.exit_code) for p in prof.processes if p.pid == 11] == [(90, 3)]
    assert sink.status().held["bytes"] == expected_bytes(prof)


def test_an_exit_after_the_reap_is_another_process() -> None:
    sink = feed([fork(1, 10, 5)])
    sink.reap([(10, 5)], now_ns=50)
    sink.apply(exit_(10, 60, code=1))  # pid 10 again, its fork lost
    procs = [(p.exited_ns, p.exit_code) for p in sink.finish().processes if p.pid == 10]
    assert sorted(procs) == [(50, None), (60, 1)]
    assert sink.status().reaped == 1


def test_the_estimate_follows_real_memory() -> None:
    """The budget is in estimated bytes: they must be close to what the
    sink really allocates (tracemalloc), for a workload like the soak's."""
    import gc
    import tracemalloc

    names = tuple(f"sys_{n}" for n in range(60))

    def events(n: int) -> Iterator[Event]:
        for i in range(n):
            pid = 1000 + i
            yield fork(1, pid, 2 * i)
            yield execve(pid, 2 * i, "/usr/bin/true", ("true", f"storm-{i}", "x" * (i % 50)))
            for j in range(6):
                yield file_(
                    pid, 2 * i, f"/tmp/tracehound-soak-x/tree/procs-{i}/d{j}/file-{i}-{j}.tmp"
                )
            yield net(pid, 2 * i, "connect", Endpoint("ipv4", "127.0.0.1", 20000 + i))
            yield exit_(pid, 2 * i + 1)
            yield SyscallCounts(pid=pid, counts={k: 1000 + i for k in names[: 20 + i % 40]},
                                final=True)  # fmt: skip

    sink = AggregatingSink(max_bytes=1 << 30)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for event in events(3000):
            sink.apply(event)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    estimated = sink.status().held["bytes"]
    assert sink.status().held["processes"] == 3001
    assert 0.8 <= estimated / used <= 1.5, (estimated, used)


# -- known gaps ----------------------------------------------------------------


def test_process_first_seen_by_a_file_event_takes_its_identity_from_the_event() -> None:
    prof = feed([file_(77, 1, "/x", comm="worker")]).finish()
    p = by_pid(prof)[77]
    assert (p.comm, p.uid, p.gid) == ("worker", 1000, 1001)


@pytest.mark.parametrize("shape", ["duplicate", "cycle"])
def test_render_text_lists_each_process_once_under_pid_reuse(shape: str) -> None:
    if shape == "duplicate":
        events: list[Event] = [
            seen(1, 0), fork(1, 30, 1), fork(30, 31, 2), exit_(31, 3), exit_(30, 4),
            fork(1, 30, 5),
        ]  # fmt: skip
    else:
        events = [seen(20, 1), fork(20, 10, 1), exit_(20, 2), fork(10, 20, 3)]
    prof = feed(events).finish()
    text = render_text(prof)
    tree = [line for line in text.splitlines() if line.lstrip().startswith("- [")]
    assert len(tree) == len(prof.processes)


# -- helpers -----------------------------------------------------------------


def test_open_access_words() -> None:
    assert open_access(os.O_RDONLY) == ["read"]
    assert open_access(os.O_WRONLY) == ["write"]
    assert open_access(os.O_RDWR) == ["read", "write"]
    assert open_access(os.O_WRONLY | os.O_CREAT) == ["write", "create"]
    assert open_access(os.O_WRONLY | os.O_CREAT | os.O_EXCL) == ["write", "exclusive-create"]
    assert open_access(os.O_WRONLY | os.O_TRUNC) == ["write", "truncate"]
    # O_TRUNC with O_RDONLY truncates nothing the caller can see as a write.
    assert open_access(os.O_RDONLY | os.O_TRUNC) == ["read"]
    assert open_access(os.O_WRONLY | os.O_APPEND) == ["write", "append"]
    assert open_access(os.O_RDONLY | os.O_DIRECTORY) == ["read", "directory"]
    assert open_access(os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK) == ["read"]


def test_errno_name() -> None:
    assert errno_name(-errno.ENOENT) == "ENOENT"
    assert errno_name(-errno.EACCES) == "EACCES"
    assert errno_name(-9999) == "E9999"


def test_display_path() -> None:
    assert display_path("/abs", 5) == "/abs"
    assert display_path("rel", AT_FDCWD) == "rel"
    assert display_path("rel", 5) == "fd:5/rel"


# -- render_text ---------------------------------------------------------------


def test_render_text_mentions_key_facts(profile: Profile) -> None:
    text = render_text(profile)
    lines = text.splitlines()
    assert "processes: 3" in lines
    root = next(line for line in lines if "[100]" in line)
    child = next(line for line in lines if "[101]" in line)
    killed = next(line for line in lines if "[102]" in line)
    assert root.startswith("- [100] make all") and "(exit 2)" in root
    assert child.startswith("  - [101] cc -c x.c") and "(exit 0)" in child
    assert "(killed by SIGKILL)" in killed
    # The miss before the found one is a PATH search, said as one.
    assert "exec FAILED cc (PATH search) in /usr/local/bin: ENOENT" in text
    assert "file open(create,read,truncate,write) x.o" in text
    assert "file rename fd:7/tmp -> fd:7/x.final" in text
    assert "file open FAILED /etc/secret: EACCES" in text
    assert "net connect 10.0.0.1:443 (in-progress)" in text
    assert "net connect FAILED 10.0.0.2:80: ECONNREFUSED" in text
    assert "net listen unix:/run/app.sock" in text
    assert "syscalls: read=10, openat=5" in text
    assert "note: probe file.openat2 missing: tracepoint not found" in text
    assert lines[-1] == "complete: no"


def test_render_text_running_exited_and_evictions() -> None:
    prof = feed(
        [seen(1, 0, "init", ("init",)), fork(1, 2, 1, comm="init"),
         exit_(2, 2, have_code=False), file_(1, 3, "/a"), file_(1, 4, "/b")],
        max_files=1,
    ).finish()  # fmt: skip
    text = render_text(prof)
    assert "- [1] init  (running)" in text
    assert "  - [2] init  (exited)" in text
    assert "evicted files: 1" in text
    assert "evicted processes" not in text


# -- random sequences ------------------------------------------------------------

PIDS = st.integers(1, 6)
ENDPOINTS = st.sampled_from([None, HTTPS, REFUSED, SOCK, Endpoint("ipv6", "::1", 22)])
PATHS = st.sampled_from(["/a", "/b", "rel", "/etc/passwd", ""])
FLAGS = st.sampled_from([os.O_RDONLY, os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_TRUNC,
                         os.O_WRONLY | os.O_APPEND, AT_REMOVEDIR, 0o200000])  # fmt: skip
RETS = st.sampled_from([0, 3, -errno.ENOENT, -errno.EACCES, -errno.EINPROGRESS])
COMMS = st.sampled_from(["a", "b", "c"])

EVENT_SPECS = st.one_of(
    st.tuples(st.just("fork"), PIDS, PIDS, COMMS),
    st.tuples(st.just("exec"), PIDS, st.sampled_from(["/bin/a", "/bin/b"]), RETS),
    st.tuples(st.just("exit"), PIDS, st.integers(0, 3), st.booleans(), st.booleans()),
    st.tuples(
        st.just("file"),
        PIDS,
        PATHS,
        st.sampled_from(["open", "unlink", "rename", "chmod", "mkdir"]),
        RETS,
        FLAGS,
        st.integers(-101, 9),
    ),
    st.tuples(
        st.just("net"),
        PIDS,
        st.sampled_from(["connect", "accept", "bind", "listen"]),
        ENDPOINTS,
        st.integers(3, 5),
        RETS,
    ),
    st.tuples(
        st.just("counts"),
        PIDS,
        st.dictionaries(st.sampled_from(["read", "write"]), st.integers(0, 9)),
        st.booleans(),
    ),
    st.tuples(st.just("seen"), PIDS, PIDS, COMMS, st.booleans()),
)


def materialize(specs: list[tuple[Any, ...]]) -> list[Event]:
    out: list[Event] = []
    for ts, spec in enumerate(specs):
        kind, pid, *rest = spec
        if kind == "fork":
            out.append(fork(pid, rest[0], ts, comm=rest[1]))
        elif kind == "exec":
            out.append(execve(pid, ts, rest[0], (rest[0], "x"), ret=rest[1] if rest[1] <= 0 else 0))
        elif kind == "exit":
            out.append(exit_(pid, ts, code=rest[0], sig=9, have_code=rest[1], have_signal=rest[2]))
        elif kind == "file":
            path, op, ret, flags, dfd = rest
            out.append(file_(pid, ts, path, op=op, ret=ret, flags=flags, mode=0o600, dfd=dfd,
                             path2=path[::-1], dfd2=dfd))  # fmt: skip
        elif kind == "net":
            op, ep, fd, ret = rest
            out.append(net(pid, ts, op, ep, fd=fd, ret=ret))
        elif kind == "counts":
            out.append(SyscallCounts(pid=pid, counts=rest[0], final=rest[1]))
        else:
            out.append(seen(pid, rest[0], comm=rest[1], preexisting=rest[2]))
    return out


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT_SPECS, max_size=60))
def test_random_sequences_are_deterministic_and_lose_nothing(specs: list[tuple[Any, ...]]) -> None:
    events = materialize(specs)
    a, b = feed(events), feed(events)
    pa, pb = a.finish(), b.finish()
    data = encode_profile(pa)
    assert data == encode_profile(pb)
    assert encode_profile(decode_profile(data)) == data
    assert not any(pa.evictions.values())
    # With caps out of reach, every file/net/exec event is in some record.
    files = sum(f.count for p in pa.processes for f in (*p.files, *p.failed_files))
    nets = sum(n.count for p in pa.processes for n in (*p.network, *p.failed_network))
    execs = sum(len(p.execs) for p in pa.processes)
    kinds = Counter(kind_of(e) for e in events)
    assert files == kinds["file"]
    assert nets == kinds["net"]
    assert execs == kinds["exec"]
    assert a.accounting() == {"aggregating": {k: (n, 0) for k, n in kinds.items()}}
    # Every exit event ended exactly one process record.
    exited = Counter(p.pid for p in pa.processes if p.exited_ns is not None)
    assert sum(exited.values()) == kinds["exit"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT_SPECS, max_size=80))
def test_random_sequences_respect_caps(specs: list[tuple[Any, ...]]) -> None:
    caps = {"max_processes": 3, "max_files": 2, "max_endpoints": 2, "max_execs": 1}
    events = materialize(specs)
    prof = feed(events, **caps).finish()
    assert encode_profile(prof) == encode_profile(feed(events, **caps).finish())
    assert len(prof.processes) <= 3
    for p in prof.processes:
        assert len(p.files) + len(p.failed_files) <= 2
        assert len(p.network) + len(p.failed_network) <= 2
        assert len(p.execs) <= 1
    kinds = Counter(kind_of(e) for e in events)
    kept_files = sum(f.count for p in prof.processes for f in (*p.files, *p.failed_files))
    kept_execs = sum(len(p.execs) for p in prof.processes)
    for what, kept, total in (("files", kept_files, kinds["file"]),
                              ("execs", kept_execs, kinds["exec"])):  # fmt: skip
        per_process = sum(p.evicted.get(what, 0) for p in prof.processes)
        assert per_process <= prof.evictions[what]
        assert kept + prof.evictions[what] <= total
        if prof.evictions["processes"] == 0:
            assert kept + prof.evictions[what] == total
            assert per_process == prof.evictions[what]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT_SPECS, max_size=80), st.integers(0, 6000))
def test_random_sequences_keep_the_budget(specs: list[tuple[Any, ...]], budget: int) -> None:
    """Whatever comes, the sink's books are exactly what it holds, every cap
    holds, and it is over its byte budget only with nothing exited left."""
    caps = {"max_processes": 4, "max_total_files": 3, "max_total_endpoints": 3,
            "max_total_execs": 2, "max_bytes": budget}  # fmt: skip
    sink = AggregatingSink(**caps)
    for event in materialize(specs):
        sink.apply(event)
        held = sink.status().held
        assert held["processes"] <= 4
        assert held["files"] <= 3 and held["endpoints"] <= 3 and held["execs"] <= 2
        assert held["bytes"] <= budget or held["live"] == held["processes"]
    prof = sink.finish()
    assert sink.status().held["bytes"] == expected_bytes(prof)
    assert sink.status().held["files"] == sum(len(p.files) + len(p.failed_files)
                                              for p in prof.processes)  # fmt: skip


async def test_an_event_that_cannot_be_folded_is_counted_not_fatal() -> None:
    """A bug in folding (here: a profile record that cannot be built) costs
    that event, counted as dropped, never the drain that awaits the sink."""
    from agent.capture.events import ExecEvent

    sink = AggregatingSink()

    class Broken(list[object]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    bad = ExecEvent(7, 7, 1, 0, 0, 0, "x", ret=0, filename="/x", argv=Broken(),  # type: ignore[arg-type]
                    argv_truncated=False, at=False)  # fmt: skip
    await sink.record(bad)
    good = ExecEvent(8, 8, 2, 0, 0, 0, "y", ret=0, filename="/y", argv=("y",),
                     argv_truncated=False, at=False)  # fmt: skip
    await sink.record(good)
    books = sink.accounting()[sink.name]
    assert books["exec"] == (1, 1)
    assert 8 in {p.pid for p in sink.snapshot().processes}  # folding goes on


def test_access_bits_say_what_open_access_says_for_every_flag_word() -> None:
    """The memoised bits a file record keeps agree with the words, for
    every combination of the flags that matter and any other bits set."""
    from agent.sinks.aggregating import ACCESS_WORDS, access_bits, open_access

    for low in range(1 << 12):
        for extra in (0, 0o2000000, 0o40000000, 0xFFFF0000):
            flags = (low << 0) | extra
            words = [w for i, w in enumerate(ACCESS_WORDS) if access_bits(flags) >> i & 1]
            assert words == sorted(open_access(flags)), oct(flags)


def test_render_text_shows_wall_clock_times() -> None:
    """RFC 3339 UTC, to the ms, from the profile's boot offset; none without one."""
    offset = 1_714_564_800 * 10**9 - 10**9  # boot time 1 s is 2024-05-01T12:00:00Z
    events: list[Event] = [
        seen(1, 0),
        fork(1, 2, 1_500_000_000),
        execve(2, 1_600_000_000, "/nope", ("nope",), ret=-errno.ENOENT),
        file_(2, 2_000_000_000, "/a"),
        file_(2, 2_250_000_000, "/a"),
        file_(2, 2_300_000_000, "/x", ret=-errno.EACCES),
        net(2, 3_000_000_000, "connect", HTTPS),
        exit_(2, 4_000_000_999),
    ]
    sink = feed(events)
    sink.boot_offset_ns = offset
    prof = sink.finish()
    assert prof.boot_offset_ns == offset
    assert decode_profile(encode_profile(prof)).boot_offset_ns == offset
    lines = render_text(prof).splitlines()
    child = next(line for line in lines if "[2]" in line)
    assert child.endswith(
        "(exit 0)  started 2024-05-01T12:00:00.500Z  exited 2024-05-01T12:00:03.000Z"
    )
    # Each line of activity after its time, in time order; a record of
    # repeats at the first, with its count.
    at = lines.index(child) + 2  # after its cgroup
    assert lines[at : at + 4] == [
        "      2024-05-01T12:00:00.600Z  exec FAILED /nope: ENOENT",
        "      2024-05-01T12:00:01.000Z  file open(read) /a  2 times",
        "      2024-05-01T12:00:01.300Z  file open FAILED /x: EACCES",
        f"      2024-05-01T12:00:02.000Z  net connect {HTTPS.render()}",
    ]
    bare = render_text(msgspec.structs.replace(prof, boot_offset_ns=None))
    assert "2024-" not in bare and "started" not in bare


# -- absolute paths first ---------------------------------------------------------


def test_the_profile_shows_the_absolute_path_and_keeps_the_name_as_passed() -> None:
    opened = replace(file_(100, 1, "lib.so"), abs_path="/srv/app/lib.so", abs_flags=0)
    same = replace(file_(100, 2, "/srv/app/lib.so"), abs_path="/srv/app/lib.so", abs_flags=0)
    moved = replace(
        file_(100, 3, "a", op="rename", ret=0, path2="../b", dfd2=7),
        abs_path="/srv/app/a", abs_flags=kinds.PATH_JOINED,
        abs_path2="/srv/b", abs2_flags=kinds.PATH_JOINED,
    )  # fmt: skip
    lexical = replace(
        file_(100, 4, "l/../x", op="unlink", ret=-2),
        abs_path="/srv/app/l/../x", abs_flags=kinds.PATH_JOINED | kinds.PATH_LEXICAL,
    )  # fmt: skip
    cut = replace(file_(100, 5, "deep"), abs_path="/tail/deep", abs_flags=kinds.PATH_CUT)
    unresolved = replace(file_(100, 6, "rel", dfd=9), abs_flags=kinds.PATH_NO_LAYOUT)
    sink = feed([execve(100, 0, "/bin/app", ("app",)), opened, same, moved, lexical, cut,
                 unresolved])  # fmt: skip
    proc = by_pid(sink.snapshot())[100]
    files = {f.path: f for f in [*proc.files, *proc.failed_files]}
    # One record per file, whatever it was called: the first other name kept.
    assert (files["/srv/app/lib.so"].count, files["/srv/app/lib.so"].passed) == (2, "lib.so")
    rename = files["/srv/app/a"]
    assert (rename.passed, rename.target, rename.target_passed) == ("a", "/srv/b", "fd:7/../b")
    assert (rename.path_flags, rename.target_flags) == ([], [])
    assert files["/srv/app/l/../x"].path_flags == ["lexical"]
    assert (files["/tail/deep"].path_cut, files["/tail/deep"].path_flags) == (True, ["cut"])
    # Not resolved: the name as passed, and why.
    assert (files["fd:9/rel"].passed, files["fd:9/rel"].path_flags) == ("", ["no_layout"])
    text = render_text(sink.snapshot())
    assert "file open(read) /srv/app/lib.so (as lib.so)" in text
    assert "file rename /srv/app/a (as a) -> /srv/b (as fd:7/../b)" in text
    assert "file unlink FAILED /srv/app/l/../x (as l/../x) [lexical]: ENOENT" in text
    assert "file open(read) fd:9/rel [no_layout]" in text
