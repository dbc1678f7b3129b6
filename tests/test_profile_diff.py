"""`tracehound profile diff A B`: drift between runs, with a CI exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.capture.events import Endpoint, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import Profile, encode_profile
from agent.sinks.profile_diff import Drift, FileChange, FileUse, diff, render_drift
from agent.sinks.profile_names import normalize_path
from tests.concurrent_cli import run_all
from tests.conftest import TRACEHOUND

H = {"tid": 0, "uid": 0, "gid": 0, "cgroup_id": 1}
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC


def build(
    *opens: tuple[str, int],
    connect_port: int = 443,
    accept_port: int = 50000,
    exit_code: int = 0,
    signal: int = 0,
    tool: str = "/usr/bin/cc",
    tool_opens: tuple[tuple[str, int], ...] = (),
) -> Profile:
    """sh (pid 10) forks 11, which execs ``tool``; sh opens ``opens``,
    the tool ``tool_opens`` and connects; the tool exits as told."""
    sink = AggregatingSink()
    sink.apply(ForkEvent(pid=1, ts_ns=1, comm="init", child_pid=10, clone_flags=0, **H))
    sink.apply(ExecEvent(pid=10, ts_ns=2, comm="sh", ret=0, filename="/bin/sh",
                         argv=("sh",), argv_truncated=False, at=False, exe="/bin/sh", **H))  # fmt: skip
    ts = 3
    for path, flags in (("/src/x.c", 0), *opens):
        sink.apply(FileEvent(pid=10, ts_ns=ts, comm="sh", op="open", syscall="openat", ret=3,
                             dfd=-100, path=path, dfd2=-100, path2="", flags=flags, mode=0,
                             abs_path=path, **H))  # fmt: skip
        ts += 1
    sink.apply(ForkEvent(pid=10, ts_ns=100, comm="sh", child_pid=11, clone_flags=0, **H))
    sink.apply(ExecEvent(pid=11, ts_ns=101, comm="cc", ret=0, filename=tool,
                         argv=(tool, "x.c"), argv_truncated=False, at=False, exe=tool, **H))  # fmt: skip
    ts = 102
    for path, flags in tool_opens:
        sink.apply(FileEvent(pid=11, ts_ns=ts, comm="cc", op="open", syscall="openat", ret=3,
                             dfd=-100, path=path, dfd2=-100, path2="", flags=flags, mode=0,
                             abs_path=path, **H))  # fmt: skip
        ts += 1
    for op, ep in (("connect", Endpoint("ipv4", "10.0.0.1", connect_port)),
                   ("accept", Endpoint("ipv4", "127.0.0.1", accept_port)),
                   ("bind", Endpoint("ipv4", "127.0.0.1", 0))):  # fmt: skip
        sink.apply(NetEvent(pid=11, ts_ns=200, comm="cc", op=op, ret=0, fd=3, endpoint=ep,
                            backlog=0, **H))  # fmt: skip
    sink.apply(ExitEvent(pid=11, ts_ns=300, comm="cc", exit_code=exit_code, signal=signal,
                         have_code=not signal, have_signal=bool(signal), **H))  # fmt: skip
    sink.apply(ExitEvent(pid=10, ts_ns=301, comm="sh", exit_code=0, signal=0,
                         have_code=True, have_signal=False, **H))  # fmt: skip
    return sink.finish()


def test_same_behaviour_is_no_drift_even_with_other_ephemeral_ports() -> None:
    drift = diff(build(), build(accept_port=51234))
    assert not drift.any
    assert render_drift(drift) == "no drift\n"


def test_read_then_write_is_drift() -> None:
    a, b = build(("/etc/app.conf", 0)), build(("/etc/app.conf", O_RDWR | O_TRUNC))
    drift = diff(a, b)
    assert drift.files == [
        FileChange(
            program="/bin/sh", op="open", path="/etc/app.conf", target="", change="changed",
            before=FileUse(access=["read"], results=["ok"]),
            after=FileUse(access=["read", "truncate", "write"], results=["ok"]),
        )
    ]  # fmt: skip
    assert not (drift.programs or drift.exits or drift.network)
    assert "~ file /bin/sh: open /etc/app.conf: (read) -> (read,truncate,write)" in render_drift(
        drift
    )


def test_the_program_that_did_it_is_the_one_it_ran_then() -> None:
    # The same open by the exec'd tool instead of the shell is other drift:
    # removed from the shell, added to the tool.
    a = build(("/etc/app.conf", 0))
    b = build(tool_opens=(("/etc/app.conf", 0),))
    drift = diff(a, b)
    assert [(f.program, f.change) for f in drift.files] == [
        ("/bin/sh", "removed"),
        ("/usr/bin/cc", "added"),
    ]


def test_exit_code_and_signal_changes() -> None:
    drift = diff(build(), build(exit_code=1))
    assert [(e.program, e.before, e.after) for e in drift.exits] == [
        ("/usr/bin/cc", ["exit 0"], ["exit 1"])
    ]
    signalled = diff(build(), build(signal=11))
    assert [(e.program, e.after) for e in signalled.exits] == [("/usr/bin/cc", ["SIGSEGV"])]
    assert "~ exit /usr/bin/cc: exit 0 -> SIGSEGV" in render_drift(signalled)


def test_new_and_vanished_programs_and_what_they_did() -> None:
    a = build()
    b = build(tool="/usr/bin/clang", tool_opens=(("/tmp/out", O_WRONLY | O_CREAT),))
    drift = diff(a, b)
    changes = {(p.program, p.change): p for p in drift.programs}
    added = changes[("/usr/bin/clang", "added")]
    assert added.run_by_after == ["/bin/sh"] and added.exits_after == ["exit 0"]
    assert added.run_by_before is None
    assert changes[("/usr/bin/cc", "removed")].run_by_before == ["/bin/sh"]
    assert len(changes) == 2
    # What the new program did is named with it; the vanished one's endpoints go.
    assert [(f.program, f.op, f.path, f.change) for f in drift.files] == [
        ("/usr/bin/clang", "open", "/tmp/out", "added")
    ]
    assert {(n.program, n.change) for n in drift.network} == {
        ("/usr/bin/cc", "removed"),
        ("/usr/bin/clang", "added"),
    }
    text = render_drift(drift)
    assert "+ program /usr/bin/clang (run by /bin/sh; exit 0)" in text
    assert "- program /usr/bin/cc (run by /bin/sh; exit 0)" in text
    assert "+ file /usr/bin/clang: open(create,write) /tmp/out" in text
    assert text.endswith(f"drift: {len(text.splitlines()) - 1} changes\n")


def test_new_file_and_endpoint_are_drift_both_ways() -> None:
    a, b = build(), build(("/etc/shadow", 0), connect_port=8080)
    drift = diff(a, b)
    assert [(f.path, f.change) for f in drift.files] == [("/etc/shadow", "added")]
    assert [(n.endpoint, n.change) for n in drift.network] == [
        ("10.0.0.1:443", "removed"),
        ("10.0.0.1:8080", "added"),
    ]
    assert [(f.path, f.change) for f in diff(b, a).files] == [("/etc/shadow", "removed")]
    text = render_drift(drift)
    assert "+ file /bin/sh: open(read) /etc/shadow" in text
    assert "- net /usr/bin/cc: connect 10.0.0.1:443" in text


def test_temporary_names_are_not_drift() -> None:
    def run(asm: str, py: str, pid: int) -> Profile:
        return build(
            tool_opens=(
                (f"/tmp/{asm}.s", O_WRONLY | O_CREAT | O_TRUNC),
                (f"/tmp/{py}/build.log", O_WRONLY | O_CREAT),
                (f"/proc/{pid}/status", 0),
                (f"/srv/out/job.{pid}.lock", O_WRONLY | O_CREAT),
            )
        )

    a, b = run("ccA1b2C3", "tmpk3j_2x9a", 4242), run("cczz9QQ0", "tmp0ab_cdef", 977)
    drift = diff(a, b)
    assert not drift.any, render_drift(drift)
    # A name that is not temporary still counts.
    c = build(tool_opens=(("/tmp/payload.s", O_WRONLY | O_CREAT | O_TRUNC),))
    assert diff(a, c).any


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/tmp/ccA1b2C3.s", "/tmp/ccXXXXXX.s"),
        ("/tmp/ccA1b2C3.res", "/tmp/ccXXXXXX.res"),
        ("/tmp/tmpk3j_2x9a", "/tmp/tmpXXXXXX"),
        ("/var/tmp/tmp.AbCdEf1234/x", "/var/tmp/tmp.XXXXXX/x"),
        ("/dev/shm/sem-a1b2c3d4", "/dev/shm/sem-XXXXXX"),
        ("/home/u/build/tmp/ccQ9w8E7.o", "/home/u/build/tmp/ccXXXXXX.o"),
        ("/proc/4242/task/4243/stat", "/proc/<N>/task/<N>/stat"),
        ("/srv/conftest.12345", "/srv/conftest.<N>"),
        ("/srv/out-0042.o", "/srv/out-<N>.o"),
        # Not temporary, not a run's choice: kept.
        ("/tmp/payload.s", "/tmp/payload.s"),
        ("/usr/bin/ccache", "/usr/bin/ccache"),
        ("/srv/ccA1b2C3.s", "/srv/ccA1b2C3.s"),
        ("/usr/lib/python3.11/os.py", "/usr/lib/python3.11/os.py"),
        ("/usr/lib/libfoo.so.1.2.345", "/usr/lib/libfoo.so.1.2.345"),
        ("/proc/self/maps", "/proc/self/maps"),
        ("/etc/hostname", "/etc/hostname"),
    ],
)
def test_normalisation_rules(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


def test_ignore_globs() -> None:
    a = build()
    b = build(("/var/cache/app/index", O_WRONLY | O_CREAT), ("/etc/shadow", 0))
    assert {f.path for f in diff(a, b).files} == {"/var/cache/app/index", "/etc/shadow"}
    drift = diff(a, b, ignore=["/var/cache/*"])
    assert [f.path for f in drift.files] == ["/etc/shadow"]
    assert not diff(a, b, ignore=["/var/cache/*", "/etc/sha*"]).any
    # A program's executable: the program and all it did.
    c = build(tool="/usr/bin/clang", tool_opens=(("/etc/shadow", 0),))
    assert not diff(a, c, ignore=["/usr/bin/c*"]).any
    assert diff(a, c, ignore=["/usr/bin/clang"]).programs[0].program == "/usr/bin/cc"


def write(path: Path, profile: Profile) -> str:
    path.write_bytes(encode_profile(profile))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRACEHOUND, "profile", *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", build())
    b = write(tmp_path / "b.json", build(("/etc/passwd", O_WRONLY), exit_code=3))
    same = run("diff", a, a)
    assert same.returncode == 0 and same.stdout == "no drift\n"
    drift = run("--format", "json", "diff", a, b)
    assert drift.returncode == 1, drift.stderr
    got = json.loads(drift.stdout)
    assert [(f["path"], f["after"]["access"]) for f in got["files"]] == [("/etc/passwd", ["write"])]
    assert got["exits"] == [{"program": "/usr/bin/cc", "before": ["exit 0"], "after": ["exit 3"]}]
    # The JSON is the Drift structure itself.
    import msgspec

    assert msgspec.json.decode(drift.stdout, type=Drift).files[0].change == "added"


@pytest.mark.parametrize(
    "order",
    [
        ("diff", "--format", "json", "--ignore", "/etc/*", "A", "B"),
        ("diff", "A", "--ignore", "/etc/*", "B", "--format", "json"),
        ("diff", "A", "B", "--ignore=/etc/*", "--format=json"),
        ("--format", "json", "diff", "A", "B", "--ignore", "/etc/*"),
        ("--ignore", "/etc/*", "--format", "json", "diff", "A", "B"),
    ],
)
def test_cli_options_anywhere(tmp_path: Path, order: tuple[str, ...]) -> None:
    a = write(tmp_path / "a.json", build())
    b = write(tmp_path / "b.json", build(("/etc/passwd", O_WRONLY), connect_port=80))
    result = run(*(a if w == "A" else b if w == "B" else w for w in order))
    assert result.returncode == 1, result.stderr
    got = json.loads(result.stdout)
    assert got["files"] == []  # ignored, wherever --ignore was
    assert [n["endpoint"] for n in got["network"]] == ["10.0.0.1:443", "10.0.0.1:80"]


def test_cli_help_documents_exit_codes() -> None:
    result = run("diff", "--help")
    assert result.returncode == 0
    assert "0 no drift, 1 drift, 2 bad input" in result.stdout
    assert "--ignore GLOB" in result.stdout


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{not json", "not JSON"), (b'{"version": 1}', "not a tracehound profile")],
)
def test_cli_bad_input(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    good = write(tmp_path / "a.json", build())
    cases = (
        ((good,), "expected two profile files"),
        ((good, good, good), "expected two profile files"),
        ((good, good, "--format", "xml"), "--format"),
        ((good, good, "--frobnicate"), "--frobnicate"),
        ((good, str(tmp_path / "missing.json")), "missing.json"),
    )
    # A real process per case (its exit status and stderr are the point), a few at once.
    first, *finished = run_all(
        [[*TRACEHOUND, "profile", "diff", good, str(bad)]]
        + [[*TRACEHOUND, "profile", "diff", *args] for args, _ in cases]
    )
    for result in (first.result,):
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    for (args, needle), done in zip(cases, finished, strict=True):
        result = done.result
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tracehound: profile diff: "), lines
        assert needle in lines[0]


def test_real_runs_drift_when_the_script_changes(kernel: None, tmp_path: Path) -> None:
    # One after the other: two loads at once contend in the kernel (attaching
    # and detaching tracepoints) and took twice as long as two in a row.
    outs = []
    for name, script, status in (("a", "cat /etc/hostname >/dev/null", 0),
                                 ("b", "cat /etc/hostname >/dev/null; ls / >/dev/null; exit 4",
                                  4)):  # fmt: skip
        out = tmp_path / f"{name}.json"
        made = subprocess.run([*TRACEHOUND, "profile", "-o", str(out), "--", "/bin/sh", "-c",
                               script], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert made.returncode == status, made.stderr  # the script's own status
        outs.append(str(out))
    result = run("--format", "json", "diff", *outs)
    assert result.returncode == 1, result.stderr
    drift = json.loads(result.stdout)
    added = [p for p in drift["programs"] if p["change"] == "added"]
    assert [p["program"].rsplit("/", 1)[-1] for p in added] == ["ls"]
    assert added[0]["run_by_after"] == [os.path.realpath("/bin/sh")]
    assert [p for p in drift["programs"] if p["change"] == "removed"] == []
    exits = {e["program"].rsplit("/", 1)[-1]: e for e in drift["exits"]}
    assert exits[Path(os.path.realpath("/bin/sh")).name]["after"] == ["exit 4"]


C_SOURCE = "int main(void) { return 0; }\n"


def test_two_identical_builds_do_not_drift(kernel: None, tmp_path: Path) -> None:
    """gcc's random /tmp/ccXXXXXX.s names differ between the runs; the
    diff does not see them."""
    (tmp_path / "x.c").write_text(C_SOURCE)
    outs = []
    for name in ("a", "b"):
        (tmp_path / "x").unlink(missing_ok=True)  # else ld's unlink of it is (real) drift
        out = tmp_path / f"{name}.json"
        made = subprocess.run(
            [*TRACEHOUND, "profile", "-o", str(out), "--", "gcc", "-o", str(tmp_path / "x"),
             str(tmp_path / "x.c")],
            capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        outs.append(out)
    raw = [
        {f["path"] for p in json.loads(o.read_text())["processes"] for f in p["files"]}
        for o in outs
    ]
    temps = [{p for p in paths if p.startswith("/tmp/cc")} for paths in raw]
    assert temps[0] and temps[1] and temps[0] != temps[1], temps  # really random
    result = run("diff", *map(str, outs))
    assert result.returncode == 0, result.stdout
    assert result.stdout == "no drift\n"


def test_hostile_names_cannot_forge_a_drift_line() -> None:
    evil = "/srv/x\n+ file /bin/sh: open(read) /etc/forged\x1b[31m\udcff"
    drift = diff(build(), build((evil, O_WRONLY), tool="/tmp/\x1b]0;t\a"))
    text = render_drift(drift)
    assert "\x1b" not in text and "\udcff" not in text
    assert not any(
        line.startswith("+ file /bin/sh: open(read) /etc/forged") for line in text.splitlines()
    )
    assert [f.path for f in drift.files if f.program == "/bin/sh"] == [
        "/srv/x\\n+\\ file\\ /bin/sh:\\ open(read)\\ /etc/forged\\033[31m\\377"
    ]
    # --ignore matches the name as captured.
    assert not [f for f in diff(build(), build((evil, O_WRONLY)), ignore=["/srv/x\n*"]).files]
