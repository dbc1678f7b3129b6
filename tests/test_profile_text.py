"""The text profile: activity in time order, PATH searches as one line, the
process tree by parent links (pure; the kernel's side is in test_profile_cli)."""

from __future__ import annotations

import errno
import os

from agent.capture.events import Endpoint
from agent.sinks.profile import (
    ExecRecord,
    Profile,
    activity,
    path_searches,
    render_text,
    signal_name,
    subtree_indexes,
)
from tests.test_aggregating import by_pid, execve, exit_, feed, file_, fork, net, seen

OFFSET = 1_714_564_800 * 10**9  # boot time 0 is 2024-05-01T12:00:00Z


def _profile(*events: object) -> Profile:
    sink = feed([seen(1, 0), *events])  # type: ignore[list-item]
    sink.boot_offset_ns = OFFSET
    return sink.finish()


def test_activity_is_in_time_order_across_kinds() -> None:
    ms = 1_000_000
    prof = _profile(
        fork(1, 2, 1 * ms),
        file_(2, 2 * ms, "/etc/before-exec"),
        net(2, 3 * ms, "connect", Endpoint("ipv4", "10.0.0.1", 443)),
        execve(2, 4 * ms, "/usr/bin/tool", ("tool",)),
        file_(2, 5 * ms, "/etc/a"),
        file_(2, 9 * ms, "/etc/a"),  # folded into the first: at 5 ms, 2 times
        file_(2, 6 * ms, "/etc/b", ret=-errno.EACCES),
        execve(2, 7 * ms, "/usr/bin/other", ("other", "x")),
        exit_(2, 10 * ms),
    )
    lines = [line for _, line, _ in activity(by_pid(prof)[2])]
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["file", "open(read)"], ["net", "connect"], ["exec", "?"],
        ["file", "open(read)"], ["file", "open"], ["exec", "?"],
    ]  # fmt: skip
    assert "/etc/before-exec" in lines[0] and "(as /usr/bin/tool)" in lines[2]
    assert "/etc/b: EACCES" in lines[4] and "(as /usr/bin/other)" in lines[5]
    text = render_text(prof).splitlines()
    assert "      2024-05-01T12:00:00.005Z  file open(read) /etc/a  2 times" in text
    assert "      2024-05-01T12:00:00.006Z  file open FAILED /etc/b: EACCES" in text
    order = [text.index(next(t for t in text if needle in t))
             for needle in ("/etc/before-exec", "10.0.0.1:443", "/usr/bin/tool", "/etc/a",
                            "/etc/b:", "/usr/bin/other")]  # fmt: skip
    assert order == sorted(order)


def _ex(filename: str, error: str = "", ts: int = 0) -> ExecRecord:
    return ExecRecord(ts_ns=ts, filename=filename, argv=["x"], argv_truncated=False, error=error)


def test_path_searches_grouped() -> None:
    found = [_ex("/a/cmd", "ENOENT"), _ex("/b/cmd", "EACCES"), _ex("/c/cmd", "ENOENT"),
             _ex("/d/cmd")]  # fmt: skip
    assert [(len(run), search) for run, search in path_searches(found)] == [(3, True), (1, False)]
    # All failed: one search, nothing found.
    missed = [_ex("/a/cmd", "ENOENT"), _ex("/b/cmd", "ENOENT")]
    assert [(len(r), s) for r, s in path_searches(missed)] == [(2, True)]
    # One miss then the found one: a search; one miss alone, or then another
    # name, or the same directory again: not.
    assert [s for _, s in path_searches([_ex("/a/cmd", "ENOENT"), _ex("/b/cmd")])] == [True, False]
    assert [s for _, s in path_searches([_ex("/a/cmd", "ENOENT")])] == [False]
    assert [s for _, s in path_searches([_ex("/a/cmd", "ENOENT"), _ex("/b/other")])] == [
        False,
        False,
    ]
    again = [_ex("/a/cmd", "ENOENT"), _ex("/a/cmd", "ENOENT")]
    assert [(len(r), s) for r, s in path_searches(again)] == [(1, False), (1, False)]
    # Not a lookup: a bare name, or an error a search would stop at.
    assert [s for _, s in path_searches([_ex("cmd", "ENOENT"), _ex("/b/cmd")])] == [False, False]
    assert [s for _, s in path_searches([_ex("/a/cmd", "E2BIG"), _ex("/b/cmd")])] == [False, False]


def test_path_search_is_one_line() -> None:
    prof = _profile(
        fork(1, 2, 10),
        execve(2, 11, "/usr/local/sbin/cmd", ("cmd",), ret=-errno.ENOENT),
        execve(2, 12, "/usr/local/bin/cmd", ("cmd",), ret=-errno.EACCES),
        execve(2, 13, "/usr/bin/cmd", ("cmd",)),
        fork(1, 3, 20),
        execve(3, 21, "/x/gone", ("gone",), ret=-errno.ENOENT),
        execve(3, 22, "/y/gone", ("gone",), ret=-errno.ENOENT),
    )
    text = render_text(prof)
    assert (
        "exec FAILED cmd (PATH search) in /usr/local/sbin: ENOENT, /usr/local/bin: EACCES" in text
    )
    assert "exec FAILED gone (PATH search) in /x, /y: ENOENT" in text
    assert text.count("exec FAILED") == 2
    assert "(as /usr/bin/cmd)" in text


def test_signal_names() -> None:
    assert signal_name(11) == "SIGSEGV" and signal_name(9) == "SIGKILL"
    assert signal_name(200) == "signal 200"
    prof = _profile(fork(1, 2, 10), exit_(2, 20, sig=11, have_code=False, have_signal=True))
    assert by_pid(prof)[2].exit_signal_name == "SIGSEGV"
    assert "(killed by SIGSEGV)" in render_text(prof)


def test_subtree_by_parent_links_under_pid_reuse() -> None:
    prof = _profile(
        fork(1, 2, 10), fork(2, 3, 11), fork(3, 4, 12), fork(1, 5, 13),
        exit_(3, 14), fork(5, 3, 15),  # pid 3 reused, now a child of 5
        fork(3, 6, 16),
    )  # fmt: skip
    pids = [p.pid for p in prof.processes]

    def tree(pid: int) -> list[int]:
        return sorted(pids[i] for i in subtree_indexes(prof.processes, pid))

    assert tree(2) == [2, 3, 4]  # the first 3, not the reused one's child 6
    assert tree(5) == [3, 5, 6]
    assert tree(3) == [3, 3, 4, 6]  # both processes that had pid 3
    assert tree(4) == [4] and tree(99) == []
    assert os.getpid() not in pids
