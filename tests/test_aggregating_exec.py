"""What an exec record tells the profile: cwd, the executable's absolute
path, ppid, effective ids, login uid, fileless; in the JSON, the text and
through redaction. Pure: events built by hand (the kernel side is
tests/test_exec_records.py)."""

from __future__ import annotations

from typing import Any

from agent.capture.events import ExecEvent, ForkEvent
from agent.redact import Redactor
from agent.redact.events import redact_event
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import decode_profile, encode_profile, render_text
from agent.sinks.redacted_profile import redact_profile

TOKEN = "ghp_" + "R4nd0mFakeT0kenForTests0123456789abcd"[:36]


def _hdr(pid: int, ts: int, comm: str, uid: int = 1000) -> dict[str, Any]:
    return {"pid": pid, "tid": pid, "ts_ns": ts, "uid": uid, "gid": uid, "cgroup_id": 0,
            "comm": comm}  # fmt: skip


def enriched_exec(pid: int, ts: int, **over: Any) -> ExecEvent:
    fields: dict[str, Any] = {
        "ret": 0, "filename": "./bin/prog", "argv": ("prog", "-v"), "argv_truncated": False,
        "at": False, "ppid": 1, "euid": 0, "egid": 1000, "loginuid": 4294967295,
        "cwd": "/srv/app", "exe": "/srv/app/bin/prog",
    }  # fmt: skip
    fields.update(over)
    return ExecEvent(**_hdr(pid, ts, "prog"), **fields)


def test_the_process_takes_cwd_exe_and_ids_from_its_exec() -> None:
    sink = AggregatingSink()
    sink.apply(ForkEvent(**_hdr(10, 1, "sh"), child_pid=11, clone_flags=0x11))
    sink.apply(enriched_exec(11, 2, ppid=10))
    sink.apply(enriched_exec(12, 3, ppid=10))  # never seen forking: ppid from the exec
    by_pid = {p.pid: p for p in sink.snapshot().processes}
    child = by_pid[11]
    assert (child.cwd, child.exe_path, child.exe) == ("/srv/app", "/srv/app/bin/prog", "./bin/prog")
    assert (child.euid, child.egid, child.loginuid, child.fileless) == (0, 1000, 4294967295, False)
    (ex,) = child.execs
    assert (ex.ppid, ex.cwd, ex.exe_path, ex.cwd_flags, ex.unresolved) == (
        10, "/srv/app", "/srv/app/bin/prog", [], []
    )  # fmt: skip
    assert by_pid[12].ppid == 10
    # The JSON keeps it all.
    back = decode_profile(encode_profile(sink.snapshot()))
    assert {p.pid: p for p in back.processes}[11].execs[0] == ex


def test_a_fork_inherits_its_parents_image_facts_until_it_execs() -> None:
    sink = AggregatingSink()
    sink.apply(enriched_exec(10, 1, fileless=True, exe_memfd=True, exe="memfd:x", exe_flags=4))
    sink.apply(ForkEvent(**_hdr(10, 2, "prog"), child_pid=11, clone_flags=0x11))
    by_pid = {p.pid: p for p in sink.snapshot().processes}
    assert (by_pid[11].exe_path, by_pid[11].fileless, by_pid[11].cwd) == (
        "memfd:x", True, "/srv/app"
    )  # fmt: skip


def test_text_shows_each_exec_with_what_is_unresolved_or_fileless() -> None:
    sink = AggregatingSink()
    sink.apply(enriched_exec(10, 1))
    sink.apply(enriched_exec(11, 2, fileless=True, exe_memfd=True, exe="memfd:x", exe_flags=4,
                             filename="/proc/self/fd/3", loginuid=1000))  # fmt: skip
    sink.apply(enriched_exec(12, 3, ppid=None, euid=None, egid=None, loginuid=None, cwd="",
                             exe="", cwd_flags=8, exe_flags=8,
                             unresolved=("ids", "cwd", "exe")))  # fmt: skip
    text = render_text(sink.snapshot())
    assert (
        "exec /srv/app/bin/prog (as ./bin/prog) cwd /srv/app ppid 1 euid 0 egid 1000"
        " loginuid unset" in text
    )
    assert "exec memfd:x[unreachable] (as /proc/self/fd/3) cwd /srv/app" in text
    assert "loginuid 1000 FILELESS (memfd)" in text
    assert "exec ?[no_layout] (as ./bin/prog) cwd ?[no_layout] euid ? egid ? loginuid ?" in text
    assert "unresolved: ids,cwd,exe" in text


def test_cwd_and_exe_are_redacted_like_any_path() -> None:
    secret_dir = f"/srv/{TOKEN}"
    event = enriched_exec(10, 1, cwd=secret_dir, exe=f"{secret_dir}/prog")
    sink = AggregatingSink()
    sink.apply(event)
    shown = redact_profile(sink.snapshot(), Redactor.builtin())
    (proc,) = shown.processes
    assert TOKEN not in proc.cwd and TOKEN not in proc.exe_path
    assert TOKEN not in proc.execs[0].cwd and TOKEN not in proc.execs[0].exe_path
    redacted, fired = redact_event(Redactor.builtin(), event)
    assert isinstance(redacted, ExecEvent) and fired
    assert TOKEN not in redacted.cwd and TOKEN not in redacted.exe
