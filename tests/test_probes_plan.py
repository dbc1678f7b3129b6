"""The probe table and the loader's pure planning: no bcc, no kernel."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent.capture.loader import (
    BPF_DIR,
    CaptureError,
    LoadOptions,
    ProbeStatus,
    compile_flags,
    plan_probes,
    program_text,
    tracepoint_exists,
)
from agent.capture.probes import (
    DISPATCH_SOURCE,
    LIBRARY_SOURCES,
    PROBES,
    SELFCHECK_SOURCE,
    SOURCES,
    Probe,
    probe_named,
    with_tracepoint_overrides,
)

ALL_TRACEPOINTS = frozenset(tp for p in PROBES for tp, _ in p.attach)
BOGUS = "syscalls:sys_enter_tracehound_does_not_exist"
DISPATCHERS = frozenset({"raw_syscalls:sys_enter", "raw_syscalls:sys_exit"})


def exists_except(*absent: str):  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def exists(tp: str) -> bool:
        seen.append(tp)
        # The syscall dispatchers' raw tracepoints exist wherever the rest do.
        return (tp in ALL_TRACEPOINTS or tp in DISPATCHERS) and tp not in absent

    exists.seen = seen  # type: ignore[attr-defined]
    return exists


# -- the table -------------------------------------------------------------------


def test_names_and_macros_are_unique() -> None:
    names = [p.name for p in PROBES]
    assert len(set(names)) == len(names)
    macros = [p.macro for p in PROBES]
    assert len(set(macros)) == len(macros)


@pytest.mark.parametrize(
    ("name", "macro", "concern"),
    [
        ("file.openat", "TH_PROBE_FILE_OPENAT", "file"),
        ("net.listen_addr", "TH_PROBE_NET_LISTEN_ADDR", "net"),
        ("exec.fork", "TH_PROBE_EXEC_FORK", "exec"),
        ("syscalls.count", "TH_PROBE_SYSCALLS_COUNT", "syscalls"),
    ],
)
def test_macro_and_concern(name: str, macro: str, concern: str) -> None:
    probe = probe_named(name)
    assert probe.macro == macro
    assert probe.concern == concern


def test_macro_is_derived_from_any_name() -> None:
    assert Probe("a.b_c", "file", ()).macro == "TH_PROBE_A_B_C"
    assert Probe("a.b_c", "file", ()).concern == "a"


def test_syscall_probes_pair_enter_and_exit() -> None:
    probe = probe_named("file.openat2")
    assert probe.kind == "file"
    assert probe.attach == (
        ("syscalls:sys_enter_openat2", "th_enter_openat2"),
        ("syscalls:sys_exit_openat2", "th_exit_openat2"),
    )


def test_every_concern_has_a_source_and_every_macro_is_used() -> None:
    for probe in PROBES:
        assert probe.concern in SOURCES, probe.name
        source = (BPF_DIR / SOURCES[probe.concern]).read_text()
        assert re.search(rf"\b{probe.macro}\b", source), f"{probe.macro} not in {SOURCES}"
    # And every TH_PROBE_* the sources test is one the table can define.
    macros = {p.macro for p in PROBES}
    for source in SOURCES.values():
        used = set(re.findall(r"\bTH_PROBE_\w+", (BPF_DIR / source).read_text()))
        assert used <= macros, f"{source}: {used - macros}"


def test_kinds_are_ledger_kinds() -> None:
    from agent.capture.events import KINDS

    assert {p.kind for p in PROBES} <= set(KINDS)


def test_probe_named_unknown() -> None:
    with pytest.raises(KeyError):
        probe_named("file.nope")


# -- overrides -------------------------------------------------------------------


def test_override_renames_only_the_first_tracepoint() -> None:
    probes = with_tracepoint_overrides({"file.mkdir": BOGUS})
    assert len(probes) == len(PROBES)
    original = probe_named("file.mkdir")
    [renamed] = [p for p in probes if p.name == "file.mkdir"]
    assert renamed.attach[0] == (BOGUS, original.attach[0][1])
    assert renamed.attach[1:] == original.attach[1:]
    assert (renamed.kind, renamed.macro) == (original.kind, original.macro)
    # Position and every other probe unchanged; the table itself untouched.
    assert [p.name for p in probes] == [p.name for p in PROBES]
    assert [p for p in probes if p.name != "file.mkdir"] == [
        p for p in PROBES if p.name != "file.mkdir"
    ]
    assert probe_named("file.mkdir").attach[0][0] == "syscalls:sys_enter_mkdir"


def test_several_overrides() -> None:
    probes = with_tracepoint_overrides({"exec.fork": "task:other", "net.bind": "x:y"})
    firsts = {p.name: p.attach[0][0] for p in probes}
    assert firsts["exec.fork"] == "task:other"
    assert firsts["net.bind"] == "x:y"
    assert firsts["net.connect"] == "syscalls:sys_enter_connect"


def test_override_unknown_probe() -> None:
    with pytest.raises(KeyError):
        with_tracepoint_overrides({"file.nope": BOGUS})


def test_no_overrides_is_the_table() -> None:
    assert with_tracepoint_overrides({}) == PROBES


# -- plan_probes -----------------------------------------------------------------


def test_plan_all_present() -> None:
    exists = exists_except()
    present, missing = plan_probes(PROBES, exists)
    assert present == list(PROBES)
    assert missing == []
    # A probe that may do without its syscall's events is not even asked about them.
    unasked = {tp for p in PROBES if p.absent_ok for tp, _ in p.attach}
    seen = set(exists.seen)  # type: ignore[attr-defined]
    assert unasked
    assert seen == (ALL_TRACEPOINTS - unasked) | DISPATCHERS


def test_plan_keeps_a_syscall_compiled_out_of_the_kernel() -> None:
    """init_module without CONFIG_MODULES: no tracefs events, but its calls
    still enter the raw dispatch (and fail with ENOSYS): planned. Any other
    probe without its events is missing."""
    module = [tp for name in ("init_module", "finit_module", "delete_module")
              for tp in (f"syscalls:sys_enter_{name}", f"syscalls:sys_exit_{name}")]  # fmt: skip
    present, missing = plan_probes(PROBES, exists_except(*module, "syscalls:sys_enter_capset"))
    assert {"call.init_module", "call.finit_module", "call.delete_module"} <= {
        p.name for p in present
    }
    assert [(m.name, m.attached) for m in missing] == [("call.capset", False)]


def test_plan_one_missing() -> None:
    present, missing = plan_probes(PROBES, exists_except("syscalls:sys_exit_openat2"))
    assert missing == [
        ProbeStatus("file.openat2", "file", False,
                    "tracepoint not found: syscalls:sys_exit_openat2")
    ]  # fmt: skip
    assert [p.name for p in present] == [p.name for p in PROBES if p.name != "file.openat2"]


def test_plan_reason_lists_every_absent_tracepoint() -> None:
    absent = ("sched:sched_process_exit", "signal:signal_deliver")
    _, missing = plan_probes(PROBES, exists_except(*absent))
    [status] = missing
    assert status.name == "exec.exit"
    assert status.kind == "exit"
    assert status.attached is False
    assert status.reason == "tracepoint not found: " + ", ".join(absent)


def test_plan_with_override() -> None:
    probes = with_tracepoint_overrides({"file.mkdir": BOGUS})
    present, missing = plan_probes(probes, exists_except())
    assert [s.name for s in missing] == ["file.mkdir"]
    assert BOGUS in missing[0].reason
    assert len(present) == len(PROBES) - 1


def test_plan_nothing_present() -> None:
    present, missing = plan_probes(PROBES, lambda tp: False)
    assert present == []
    assert [s.name for s in missing] == [p.name for p in PROBES]
    assert not any(s.attached for s in missing)


def test_plan_keeps_order_of_input() -> None:
    probes = list(reversed(PROBES))
    present, _ = plan_probes(probes, exists_except("syscalls:sys_enter_bind"))
    assert present == [p for p in probes if p.name != "net.bind"]


# -- tracepoint_exists -----------------------------------------------------------


@pytest.fixture
def tracefs(tmp_path: Path) -> Path:
    for rel in ("events/syscalls/sys_enter_openat/format", "events/sched/sched_process_exit/format",
                # traps: files a path-traversing name would find
                "escape/format", "events/sneaky/format", "events/a/b/c/format"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("name: x\n")
    (tmp_path / "events/syscalls/sys_enter_noformat").mkdir(parents=True)
    return tmp_path


def test_tracepoint_exists(tracefs: Path) -> None:
    assert tracepoint_exists("syscalls:sys_enter_openat", tracefs)
    assert tracepoint_exists("sched:sched_process_exit", tracefs)
    assert not tracepoint_exists("syscalls:sys_enter_mkdir", tracefs)
    assert not tracepoint_exists("syscalls:sys_enter_noformat", tracefs)  # dir, no format


@pytest.mark.parametrize(
    "name",
    [
        "syscalls:../../escape",  # -> tracefs/escape/format exists
        "..:sneaky",  # -> tracefs/events/../sneaky... and events/sneaky
        "events:..",
        "a/b:c",  # -> tracefs/events/a/b/c/format exists
        "a:b/c",
        "syscalls",
        ":sys_enter_openat",
        "syscalls:",
        "",
    ],
)
def test_tracepoint_exists_rejects_bad_names(tracefs: Path, name: str) -> None:
    assert not tracepoint_exists(name, tracefs)


def test_traps_are_reachable_by_plain_paths(tracefs: Path) -> None:
    # Guard for the test above: the trap files do exist where traversal leads.
    assert (tracefs / "events" / "syscalls" / ".." / ".." / "escape" / "format").exists()
    assert (tracefs / "events" / "a/b" / "c" / "format").exists()


# -- program text and flags ------------------------------------------------------


def concerns_in(text: str) -> list[str]:
    return re.findall(r'^#line 1 "([^"]+)"$', text, flags=re.M)


def test_program_text_only_needed_concerns() -> None:
    text = program_text([probe_named("file.openat"), probe_named("file.mkdir")])
    assert concerns_in(text) == [
        "tracehound.h",
        *LIBRARY_SOURCES,
        "file.bpf.c",
        SELFCHECK_SOURCE,
        DISPATCH_SOURCE,
    ]
    assert (BPF_DIR / "file.bpf.c").read_text() in text
    assert "th_exec_enter" not in text


def test_program_text_all_concerns_sorted_once() -> None:
    text = program_text(reversed(PROBES))
    assert concerns_in(text) == [
        "tracehound.h",
        *LIBRARY_SOURCES,
        *(SOURCES[c] for c in sorted(SOURCES)),
        SELFCHECK_SOURCE,
        DISPATCH_SOURCE,
    ]


def test_program_text_pastes_files_verbatim(tmp_path: Path) -> None:
    (tmp_path / "tracehound.h").write_text("HEADER")
    for concern, name in SOURCES.items():
        (tmp_path / name).write_text(f"BODY {concern}")
    (tmp_path / DISPATCH_SOURCE).write_text("DISPATCH")
    (tmp_path / "path.bpf.c").write_text("PATHS")
    (tmp_path / SELFCHECK_SOURCE).write_text("CHECK")
    text = program_text([probe_named("syscalls.count"), probe_named("net.bind")], tmp_path)
    assert text == (
        '#line 1 "tracehound.h"\nHEADER\n'
        '#line 1 "path.bpf.c"\nPATHS\n'
        '#line 1 "net.bpf.c"\nBODY net\n'
        '#line 1 "syscalls.bpf.c"\nBODY syscalls\n'
        '#line 1 "layout.bpf.c"\nCHECK\n'
        '#line 1 "dispatch.bpf.c"\nDISPATCH\n'
    )


def test_compile_flags() -> None:
    probes = [probe_named("file.openat"), probe_named("net.listen_addr")]
    opts = LoadOptions(argv_max=8, arg_len=64, ringbuf_pages=256, pending_max=100,
                       scope_max=10, syscall_keys_max=20)  # fmt: skip
    flags = compile_flags(opts, probes)
    assert f"-I{BPF_DIR}" in flags
    assert "-DTH_BCC" in flags
    for flag in ("-DTH_ARGV_MAX=8", "-DTH_ARG_LEN=64", "-DTH_RINGBUF_PAGES=256",
                 "-DTH_PENDING_MAX=100", "-DTH_SCOPE_MAX=10", "-DTH_SYSCALL_KEYS_MAX=20"):  # fmt: skip
        assert flag in flags
    probe_flags = [f for f in flags if f.startswith("-DTH_PROBE_")]
    assert probe_flags == ["-DTH_PROBE_FILE_OPENAT", "-DTH_PROBE_NET_LISTEN_ADDR"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("ringbuf_pages", 0), ("ringbuf_pages", 3), ("ringbuf_pages", 1000), ("argv_max", 0),
     ("argv_max", 65), ("arg_len", 15), ("arg_len", 4097)],
)  # fmt: skip
def test_load_options_validate_rejects(field: str, value: int) -> None:
    with pytest.raises(CaptureError, match=field):
        LoadOptions(**{field: value}).validate()  # type: ignore[arg-type]


def test_load_options_validate_accepts_bounds() -> None:
    LoadOptions().validate()
    LoadOptions(ringbuf_pages=1, argv_max=1, arg_len=16).validate()
    LoadOptions(ringbuf_pages=4096, argv_max=64, arg_len=4096).validate()


# -- the compiled program defines what the plan attaches ----------------------------

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def defined_functions(probes: Iterable[Probe]) -> set[str]:
    """Functions the preprocessed program defines (gcc -E: macros expanded)."""
    probes = list(probes)
    result = subprocess.run(
        ["gcc", "-E", "-P", "-x", "c", "-", *compile_flags(LoadOptions(), probes)],
        input=program_text(probes),
        capture_output=True,
        text=True,
        check=True,
    )
    return set(re.findall(r"\bint\s+(th_\w+)\s*\(", result.stdout))


@needs_gcc
def test_every_attach_function_is_defined_with_all_probes() -> None:
    defined = defined_functions(PROBES)
    wanted = {fn for p in PROBES for _, fn in p.attach}
    assert wanted <= defined, sorted(wanted - defined)


@needs_gcc
def test_missing_probe_code_is_left_out() -> None:
    present, _ = plan_probes(PROBES, exists_except("syscalls:sys_enter_mkdirat"))
    defined = defined_functions(present)
    assert "th_enter_mkdirat" not in defined
    assert "th_exit_mkdirat" not in defined
    assert {"th_enter_mkdir", "th_exit_mkdir"} <= defined


@needs_gcc
def test_every_planned_probe_has_its_functions() -> None:
    present, missing = plan_probes(PROBES, exists_except("syscalls:sys_enter_listen"))
    assert "net.listen_addr" not in [p.name for p in present]
    reasons = {m.name: m.reason for m in missing}
    assert reasons["net.listen_addr"] == "needs probe net.listen"
    defined = defined_functions(present)
    for probe in present:
        for _, fn in probe.attach:
            assert fn in defined, f"{probe.name} planned but {fn} is not compiled"


def test_override_keeps_the_raw_flag() -> None:
    assert probe_named("syscalls.count").raw
    assert not probe_named("file.openat").raw
    probes = with_tracepoint_overrides(
        {"syscalls.count": "raw_syscalls:other", "file.openat": BOGUS}
    )
    by_name = {p.name: p for p in probes}
    assert by_name["syscalls.count"].raw
    assert by_name["syscalls.count"].attach[0][0] == "raw_syscalls:other"
    assert not by_name["file.openat"].raw


def test_every_probe_is_named_once() -> None:
    """Two probes of one name would fight for the same dispatch slot: the
    second is reported missing, its events silently the first's."""
    names = [p.name for p in PROBES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
