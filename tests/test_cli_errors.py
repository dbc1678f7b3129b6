"""Bad input: one line that says what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TRACEHOUND


def run_cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [*TRACEHOUND, *args]
    if user is not None:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root"
        command = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tracehound: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_profile_without_command() -> None:
    result = run_cli("profile")
    assert_one_line_error(result, "no command given", "tracehound profile")
    assert result.returncode == 2


def test_profile_with_only_separator() -> None:
    assert_one_line_error(run_cli("profile", "--"), "no command given")


def test_profile_command_not_found() -> None:
    result = run_cli("profile", "--", "tracehound-no-such-command-xyz")
    assert_one_line_error(result, "command not found", "tracehound-no-such-command-xyz")
    assert result.returncode == 127  # as a shell says it


def test_profile_without_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    result = run_cli("profile", "--", "true", user="65534")
    assert_one_line_error(result, "needs root", "sudo")


def test_run_without_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    assert_one_line_error(run_cli("run", user="65534"), "needs root")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("profile", "--format", "xml", "--", "true"), "--format"),
        (("profile", "--ringbuf-pages", "3", "--", "true"), "--ringbuf-pages"),
        (("profile", "--argv-max", "0", "--", "true"), "--argv-max"),
        (("profile", "--disable-probe", "nope", "--", "true"), "unknown probe 'nope'"),
        (("profile", "--probe-tracepoint", "file.open", "--", "true"), "NAME=CATEGORY:EVENT"),
        (("profile", "--output", "/nonexistent-dir/x.json", "--", "true"), "does not exist"),
        (("run", "--stats-file", "/nonexistent-dir/s.json"), "--stats-file"),
        (("run", "--stream-capacity", "0"), "--stream-capacity"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args)
    assert_one_line_error(result, needle)
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("profile", "--output", "/tmp", "--", "true"), "is a directory"),
        (("run", "--duration", "-1"), "--duration"),
        (("run", "--duration", "0"), "--duration"),
        (("run", "--events", "/tmp"), "is a directory"),
    ],
)
def test_bad_output_and_duration(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args)
    assert_one_line_error(result, needle)
    assert result.returncode == 2


def test_run_survives_an_events_file_that_fails(kernel: None) -> None:
    """/dev/full fails every write: the stream's consumer ends, every event
    it had taken is counted as lost (events:write), later ones as dropped,
    and the capture goes on to a clean exit."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stats = f"{tmp}/stats.json"
        # Activity for as long as the daemon runs, however long it takes to
        # start on a loaded machine (a fixed loop could be over before).
        activity = subprocess.Popen(
            ["/bin/sh", "-c", "while :; do cat /etc/hostname >/dev/null; sleep 0.02; done"]
        )
        try:
            result = run_cli(
                "run", "--duration", "2", "--stats-interval", "0", "--no-seed",
                "--events", "/dev/full", "--stats-file", stats,
            )  # fmt: skip
        finally:
            activity.kill()
            activity.wait(timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "--events /dev/full: write failed" in result.stderr
        books = json.loads(Path(stats).read_text())
    assert books["balanced"] is True
    dropped = sum(
        k["sinks"]["events"]["dropped"] for k in books["kinds"].values() if "events" in k["sinks"]
    )
    assert dropped > 0
    # Nothing reached /dev/full: whatever the writer took from its sink is
    # counted where it was lost, none silently.
    for kind, account in books["kinds"].items():
        taken = account["sinks"].get("events", {}).get("delivered", 0)
        lost = books["downstream"].get(kind, {})
        if kind != "syscall":
            assert taken == lost.get("events:write", 0) + lost.get("events:encode", 0), kind


# --- every numeric option and every input file: refused at once, in one line ---------

_DIGEST = "ab" * 32
_BAD_INPUT = [
    # The ones found reproducibly on main: tracebacks, a hang, a BPF compile failure.
    (("run", "--stats-interval", "nan"), "--stats-interval", "expected 0 to 86400 seconds"),
    (("run", "--evidence-retain-mb", "inf"), "--evidence-retain-mb", "at most 1048576 MiB"),
    (("config", "check", "/dev/zero"), "/dev/zero", "not a regular file (a character device)"),
    (("run", "--ringbuf-pages", "1073741824"), "--ringbuf-pages", "power of two from 1 to 262144"),
    (("run", "--stream-capacity", "99999999999999999999"), "--stream-capacity", "1 to 16777216"),
    (("evidence", "stream", "--from", "-5"), "--from", "sequence number from 0 to"),
    (("evidence", "export", "-o", "{dir}/b.tar", "--from", "-1"), "--from", "sequence number"),
    # run
    (("run", "--stats-interval", "-1"), "--stats-interval", "0 to 86400"),
    (("run", "--stats-interval", "86401"), "--stats-interval", "0 to 86400"),
    (("run", "--stats-interval", "five"), "--stats-interval", "0 to 86400"),
    (("run", "--stream-capacity", "0"), "--stream-capacity", "1 to 16777216"),
    (("run", "--stream-capacity", "16777217"), "--stream-capacity", "1 to 16777216"),
    (("run", "--stream-capacity", "1.5"), "--stream-capacity", "an integer"),
    (("run", "--duration", "0"), "--duration", "more than 0 and at most 31622400 seconds"),
    (("run", "--duration", "-1"), "--duration", "more than 0"),
    (("run", "--duration", "nan"), "--duration", "more than 0"),
    (("run", "--duration", "1e999"), "--duration", "at most 31622400"),
    (("run", "--duration", "31622401"), "--duration", "at most 31622400"),
    # capture options, on run and profile
    (("run", "--ringbuf-pages", "3"), "--ringbuf-pages", "a power of two"),
    (("run", "--ringbuf-pages", "0"), "--ringbuf-pages", "a power of two"),
    (("run", "--ringbuf-pages", "524288"), "--ringbuf-pages", "from 1 to 262144"),
    (("profile", "--ringbuf-pages", "-4", "--", "true"), "--ringbuf-pages", "a power of two"),
    (("run", "--argv-max", "0"), "--argv-max", "an integer from 1 to 64"),
    (("profile", "--argv-max", "65", "--", "true"), "--argv-max", "an integer from 1 to 64"),
    # evidence options, on run and profile
    (("run", "--evidence-segment-mb", "0"), "--evidence-segment-mb", "at most 1024 MiB"),
    (("run", "--evidence-segment-mb", "nan"), "--evidence-segment-mb", "more than 0"),
    (("profile", "--evidence-segment-mb", "2048", "--", "true"), "--evidence-segment-mb", "1024"),
    (("run", "--evidence-segment-hours", "inf"), "--evidence-segment-hours", "at most 8784 hours"),
    (("run", "--evidence-segment-hours", "-1"), "--evidence-segment-hours", "more than 0"),
    (("run", "--evidence-retain-mb", "0"), "--evidence-retain-mb", "more than 0"),
    (("profile", "--evidence-retain-mb", "-inf", "--", "true"), "--evidence-retain-mb", "expected one argument"),
    (("run", "--evidence-retain-mb", "32", "--evidence-segment-mb", "64"), "--evidence-retain-mb",
     "at least --evidence-segment-mb (64), got 32"),
    (("run", "--evidence-checkpoint-every", "-1"), "--evidence-checkpoint-every", "0 to 1048576"),
    (("run", "--evidence-checkpoint-every", "1048577"), "--evidence-checkpoint-every", "0 to 1048576"),
    (("profile", "--evidence-checkpoint-every", "nan", "--", "true"), "--evidence-checkpoint-every", "an integer"),
    # evidence
    (("evidence", "stream", "--from", "9007199254740992"), "--from", "0 to 9007199254740991"),
    (("evidence", "stream", "--from", "x"), "--from", "a sequence number"),
    (("evidence", "export", "-o", "{dir}/b.tar", "--to", "-3"), "--to", "a sequence number"),
    (("evidence", "export", "-o", "{dir}/b.tar", "--from", "5", "--to", "3"), "--to",
     "at least --from (5), got 3"),
    (("evidence", "verify", "{dir}", "--expect-head", f"\u00b2:{_DIGEST}"), "--expect-head",
     "expected SEQ:HASH"),
    (("evidence", "verify", "{dir}", "--expect-head", f"9007199254740992:{_DIGEST}"),
     "--expect-head", "0 to 9007199254740991"),
    # the daemon's clients
    (("tail", "--last-event-id", "x\n" * 100), "--last-event-id", "32 lower-case hex digits"),
    (("tail", "--count", "0"), "--count", "an integer from 1 to"),
    (("tail", "--count", "-1"), "--count", "an integer from 1 to"),
    (("tail", "--pid", "0"), "--pid", "a pid from 1 to 4194303"),
    (("tail", "--pid", "4194304"), "--pid", "a pid from 1 to 4194303"),
    (("snapshot", "--pid", "-1"), "--pid", "a pid from 1 to 4194303"),
    (("snapshot", "--pid", "nan"), "--pid", "a pid"),
    (("snapshot", "--cgroup", "0"), "--cgroup", "a cgroup id from 1 to 18446744073709551615"),
    (("snapshot", "--cgroup", str(2**64)), "--cgroup", "a cgroup id from 1 to 18446744073709551615"),
    # files given as input: not regular, too large, missing
    (("config", "check", "{fifo}"), "{fifo}", "not a regular file (a FIFO)"),
    (("config", "check", "{big}"), "{big}", "larger than 1 MiB"),
    (("config", "check", "{dir}"), "{dir}", "not a regular file (a directory)"),
    (("config", "check", "{dir}/missing.toml"), "missing.toml", "no such file"),
    (("config", "show", "--config", "{fifo}"), "{fifo}", "not a regular file (a FIFO)"),
    (("config", "show", "--config", "/dev/zero"), "/dev/zero", "not a regular file"),
    (("run", "--config", "{fifo}"), "{fifo}", "not a regular file (a FIFO)"),
    (("run", "--config", "/dev/zero"), "/dev/zero", "not a regular file"),
    (("run", "--config", "{big}"), "{big}", "larger than 1 MiB"),
    (("stats", "--config", "{fifo}"), "{fifo}", "not a regular file (a FIFO)"),
    (("snapshot", "--config", "/dev/zero"), "/dev/zero", "not a regular file"),
    (("tail", "--config", "{big}"), "{big}", "larger than 1 MiB"),
    (("run", "--redact-rules", "{fifo}"), "--redact-rules {fifo}", "not a regular file (a FIFO)"),
    (("run", "--redact-rules", "/dev/zero"), "--redact-rules /dev/zero", "not a regular file"),
    (("profile", "--redact-rules", "{big}", "--", "true"), "--redact-rules {big}", "larger than 1 MiB"),
    (("profile", "--redact-rules", "{dir}", "--", "true"), "--redact-rules", "(a directory)"),
    (("evidence", "verify", "{dir}", "--key", "{fifo}"), "--key", "not a regular file (a FIFO)"),
    (("evidence", "verify", "{dir}", "--key", "/dev/zero"), "--key", "not a regular file"),
    (("evidence", "verify", "{dir}", "--key", "{big}"), "--key", "larger than 1 MiB"),
    (("evidence", "verify", "{fifo}"), "{fifo}", "expected a state directory"),
    (("profile", "diff", "{fifo}", "{fifo}"), "profile diff: {fifo}", "not a regular file (a FIFO)"),
    (("profile", "diff", "/dev/zero", "/dev/zero"), "profile diff: /dev/zero", "not a regular file"),
]  # fmt: skip


@pytest.fixture(scope="module")
def inputs() -> Iterator[dict[str, str]]:
    """A FIFO with no writer, a sparse 2 MiB file and a directory, in a
    directory the unprivileged user of :func:`test_bad_input` can reach."""
    top = Path(tempfile.mkdtemp(prefix="tracehound-bad-input-"))
    try:
        top.chmod(0o755)
        fifo = top / "fifo.toml"
        os.mkfifo(fifo, 0o644)
        big = top / "big.toml"
        with open(big, "wb") as f:
            f.truncate(2 << 20)
        big.chmod(0o644)
        yield {"fifo": str(fifo), "big": str(big), "dir": str(top)}
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize(
    ("args", "names", "expected"), _BAD_INPUT, ids=[" ".join(a) for a, _, _ in _BAD_INPUT]
)
def test_bad_input(
    inputs: dict[str, str], args: tuple[str, ...], names: str, expected: str
) -> None:
    """Exit 2 with one line naming the option or file and what was wanted,
    at once: parsing and reading inputs happen before any BPF is loaded.

    Run as nobody when the test runs as root: an input that slipped through
    would then end in "needs root" (and this test fail) instead of a
    capture starting; the kernel is never touched either way.
    """
    argv = [a.format(**inputs) for a in args]
    command = [*TRACEHOUND, *argv]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=20, cwd=REPO, stdin=subprocess.DEVNULL
    )
    elapsed = time.monotonic() - started
    assert_one_line_error(result, names.format(**inputs), expected)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_run_names_a_bad_config_key_but_never_its_value(tmp_path: Path) -> None:
    """The daemon's stderr is the journal: a value pasted into the wrong key
    (a token) must not end up there; ``config check`` shows it to whoever
    runs it."""
    secret = "ghp_PastedIntoTheWrongKey0123456789abcdef"
    config = tmp_path / "tracehound.toml"
    config.write_text(f'[evidence]\nfsync = "{secret}"\n')
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "evidence.fsync" in result.stderr and "config check" in result.stderr
    assert secret not in result.stderr
    checked = run_cli("config", "check", str(config))
    assert checked.returncode == 2 and secret in checked.stderr  # the operator's own tool
