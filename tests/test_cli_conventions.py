"""The CLI's conventions, checked over every verb the parser has (issue 11, item 7).

The table is the parser itself (:func:`agent.cli.build_parser`), walked to
its leaves, so a verb added later is in it without anyone listing it:
every verb refuses a bad argument with exit 2 and exactly one line with
exactly one ``tracehound: `` prefix and no traceback; every ``evidence``
verb takes its log as STATE_DIR, ``--state-dir`` and ``--config`` alike,
and each way reaches the same directory. Then the other conventions: config
check's list of mistakes, config show's source line, stats and verify
formats, completion scripts, the metrics port in use, --events rotation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from agent.commands.state_dir_args import POSITIONAL_DEST
from agent.commands.stats_text import in_flight, render_stats_text
from agent.config.check import config_mistakes
from agent.output_rotation import Rotation, open_rotating_stream
from agent.output_target import check_output
from tests.conftest import REPO, TRACEHOUND
from tests.harness import own_daemon


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every verb that runs something: (its words, its parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


VERBS = sorted(words for words, _ in leaves(build_parser()))
EVIDENCE_VERBS = [words for words in VERBS if words[0] == "evidence"]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tracehound: "), lines[0]
    assert lines[0].count("tracehound:") == 1, lines[0]  # never doubled
    assert "Traceback" not in err
    return lines[0]


def test_the_table_has_every_verb() -> None:
    # The walk finds the verbs a person types (a check that the table is real).
    assert ("evidence", "verify") in VERBS and ("config", "check") in VERBS
    assert ("completion",) in VERBS and ("run",) in VERBS
    assert {w[1] for w in EVIDENCE_VERBS} >= {"keygen", "stream", "export", "verify"}


@pytest.mark.parametrize("words", VERBS, ids=" ".join)
def test_bad_arguments_are_one_line_exit_2(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_main(capsys, *words, "--no-such-option-xyz")
    assert status == 2 and out == ""
    line = assert_one_error(err)
    # Named, unless a required argument is missing first (argparse says which).
    assert "--no-such-option-xyz" in line or "are required" in line, line


@pytest.mark.parametrize("words", VERBS, ids=" ".join)
def test_every_bad_choice_is_one_line_exit_2(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = dict(leaves(build_parser()))[words]
    options = [a for a in parser._actions if a.choices and a.option_strings]
    for action in options:
        status, _, err = run_main(capsys, *words, action.option_strings[-1], "no-such-choice")
        assert status == 2, action.option_strings
        assert "invalid choice" in assert_one_error(err)


@pytest.mark.parametrize("words", EVIDENCE_VERBS, ids=" ".join)
def test_evidence_verbs_take_the_state_dir_every_way(
    words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = dict(leaves(build_parser()))[words]
    dests = {a.dest for a in parser._actions}
    assert {POSITIONAL_DEST, "state_dir", "config"} <= dests, words
    # A path that can never be a log directory (under a regular file): each
    # way of naming it ends in the same refusal, which names it.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    where = str(blocker / "log")
    config = tmp_path / "th.toml"
    config.write_text(f'[evidence]\nstate_dir = "{where}"\n')
    extra = ["--output", str(tmp_path / "out.tar")] if words[-1] == "export" else []
    lines = []
    for how in ([where], ["--state-dir", where], ["--config", str(config)]):
        status, _, err = run_main(capsys, *words, *how, *extra)
        assert status == 2, (how, err)
        line = assert_one_error(err)
        assert where in line, (how, line)
        lines.append(line)
    assert len(set(lines)) == 1, lines  # the same answer, whichever way
    status, _, err = run_main(capsys, *words, where, "--state-dir", where + "x", *extra)
    assert status == 2 and "disagree" in assert_one_error(err)
    status, _, err = run_main(capsys, *words, "--state-dir", "", *extra)
    assert status == 2 and "empty" in assert_one_error(err)


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    from agent.evidence.store import EvidenceStore

    state = tmp_path / "small"
    with EvidenceStore(state) as store:
        store.append_many([("test.v1", {"n": n}) for n in range(5)])
    return state


def test_verify_every_way_and_as_json(
    small_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "th.toml"
    config.write_text(f'[evidence]\nstate_dir = "{small_log}"\n')
    outs = set()
    for how in ([str(small_log)], ["--state-dir", str(small_log)], ["--config", str(config)]):
        status, out, err = run_main(capsys, "evidence", "verify", *how)
        assert (status, err) == (0, ""), how
        outs.add(out)
    assert len(outs) == 1 and next(iter(outs)).startswith("OK: ")
    status, out, _ = run_main(capsys, "evidence", "verify", str(small_log), "--format", "json")
    report = json.loads(out)
    assert status == 0 and report["ok"] is True and report["first_break"] is None
    # The records the store wrote, counted independently of the verifier.
    lines = sum(len(p.read_bytes().splitlines()) for p in (small_log / "segments").iterdir())
    assert report["records"] == lines and report["head"][0] == lines - 1
    status, out, _ = run_main(capsys, "evidence", "stream", "--config", str(config))
    assert status == 0 and len(out.splitlines()) == lines


def test_progress_bar_only_when_asked_and_counts_every_byte(small_log: Path) -> None:
    from agent.commands.progress import byte_progress, total_size
    from agent.evidence.verify import verify_store

    files = sorted((small_log / "segments").iterdir())
    with byte_progress(total_size(files), "verify") as feed:
        assert feed is None  # stderr is no terminal here, and the log is small
    seen: list[int] = []
    report = verify_store(small_log, progress=seen.append)
    assert report.ok and sum(seen) == total_size(files)
    with byte_progress(10, "x", force=True) as bar:
        assert bar is not None
        bar(10)


# --- config check and show ---------------------------------------------------------------

MISTAKES = """\
[capture]
ringbuf_pages = 1000
argv_max = "many"

[api]
max_clients = 0

[metric]
listen = "x"

[evidence]
segment_mb = 10
retain_mb = 5
"""


def test_config_check_lists_every_mistake(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MISTAKES)
    result = subprocess.run([*TRACEHOUND, "config", "check", str(path)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith(f"tracehound: {path}: ") for line in lines), lines
    keys = [line.split(": ")[2] for line in lines[:-1]]
    assert keys == [
        "capture.ringbuf_pages",
        "capture.argv_max",
        "api.max_clients",
        "metric",
        "evidence.retain_mb",
    ]
    assert "power of two" in lines[0] and "expected an integer" in lines[1]
    assert "evidence.segment_mb (10.0), got 5.0" in lines[4]  # the file's values, not defaults
    assert lines[-1] == f"tracehound: {path}: 5 mistakes"
    # The one the daemon's loader stops at is among them, word for word.
    from agent.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as first:
        parse_config(MISTAKES, "F")
    assert str(first.value) in config_mistakes(MISTAKES, "F")


def test_config_check_cross_key_and_ok(tmp_path: Path) -> None:
    both = "[evidence]\nsegment_mb = 100\nretain_mb = 90\n"
    assert config_mistakes(both, "F") == [
        "F: evidence.retain_mb: expected at least evidence.segment_mb (100.0), got 90.0"
    ]
    assert config_mistakes("[capture]\nargv_max = 8\n", "F") == []
    assert config_mistakes("[capture\n", "F")[0].startswith("F: line 1: not valid TOML")


def test_config_show_names_its_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "th.toml"
    path.write_text("[capture]\nargv_max = 8\n")
    status, out, _ = run_main(capsys, "config", "show", "--config", str(path))
    assert status == 0 and out.splitlines()[1] == f"# read from {path}"
    assert "argv_max = 8" in out
    from agent.config import parse_config

    assert parse_config(out, "shown").capture.argv_max == 8  # still a configuration
    if not Path("/etc/tracehound/tracehound.toml").exists():
        status, out, _ = run_main(capsys, "config", "show")
        assert status == 0 and "built-in defaults" in out.splitlines()[1]


# --- stats --------------------------------------------------------------------------------


def books(**counts: int) -> dict[str, object]:
    base = {"generated": 10, "lost_kernel": 0, "received": 10, "decode_errors": 0,
            "abandoned": 0, "delivered": 10, "dropped_sink": 0, "folding": 0, "balanced": True,
            "sinks": {"aggregate": {"delivered": 10, "dropped": 0}}}  # fmt: skip
    base.update(counts)
    return base


def test_stats_text_shows_in_flight_not_unbalanced() -> None:
    running = books(
        generated=20, received=17, folding=2, balanced=False,
        sinks={"aggregate": {"delivered": 14, "dropped": 0}, "evidence": {"delivered": 15, "dropped": 0}},
    )  # fmt: skip
    flight = in_flight(running)
    assert (flight.ring, flight.folding, flight.queued, flight.total) == (3, 2, 1, 6)
    text = render_stats_text(
        {"capture": {"kinds": {"exec": running, "file": books()}, "uptime_s": 3}}
    )
    assert (
        text.splitlines()[0] == "capture: up 3 s, healthy: every event accounted for, 6 in flight"
    )
    assert "UNBALANCED" not in text
    broken = books(received=12)  # more received than generated: no flight explains it
    text = render_stats_text({"capture": {"kinds": {"exec": broken}}})
    assert "UNBALANCED: exec" in text.splitlines()[0]
    hostile = render_stats_text({"capture": {"kinds": {"a\nb\x1b[31m": books()}}})
    assert "\x1b" not in hostile and "a\nb" not in hostile


# --- completion ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, script, _ = run_main(capsys, "completion", shell)
    assert status == 0
    for words in VERBS:  # every verb of the parser is in the script
        assert words[-1] in script, words
    path = tmp_path / f"tracehound.{shell}"
    path.write_text(script)
    if shell == "bash":
        assert subprocess.run(["bash", "-n", str(path)], timeout=30).returncode == 0
        # What TAB offers after "tracehound evidence ": every evidence verb.
        probe = (f'source {path}; COMP_WORDS=(tracehound evidence ""); COMP_CWORD=2;'
                 ' _shtab_tracehound; echo "${COMPREPLY[*]}"')  # fmt: skip
        offered = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                                 timeout=30).stdout.split()  # fmt: skip
        assert sorted(offered) == sorted(w[1] for w in EVIDENCE_VERBS)
    else:
        assert script.startswith("#compdef tracehound")
        zsh = subprocess.run(["sh", "-c", "command -v zsh"], capture_output=True, text=True)
        if zsh.returncode == 0:
            assert subprocess.run(["zsh", "-n", str(path)], timeout=30).returncode == 0


# --- --events rotation --------------------------------------------------------------------


def test_events_rotation_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    planted = tmp_path / "elsewhere"
    planted.write_text("keep me\n")
    os.symlink(planted, tmp_path / "events.ndjson.2")  # a planted link is replaced, not followed
    out = open_rotating_stream(check_output("--events", str(path)), Rotation(100, 2))
    lines = [f"{n:02d}".encode() * 30 + b"\n" for n in range(7)]  # 61 bytes each
    for line in lines:
        out.write(line)
    out.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["elsewhere", "events.ndjson", "events.ndjson.1", "events.ndjson.2"]
    assert planted.read_text() == "keep me\n"
    for name in names[1:]:
        st = os.lstat(tmp_path / name)
        assert oct(st.st_mode & 0o777) == "0o600" and not os.path.islink(tmp_path / name)
    # Newest in FILE, then FILE.1, FILE.2: one line per file at this size, none split.
    assert path.read_bytes() == lines[6]
    assert (tmp_path / "events.ndjson.1").read_bytes() == lines[5]
    assert (tmp_path / "events.ndjson.2").read_bytes() == lines[4]


@pytest.mark.kernel
def test_events_rotate_in_a_real_daemon(tmp_path: Path) -> None:
    with own_daemon(tmp_path) as daemon:
        events = tmp_path / "events.ndjson"
        daemon.start("--events", str(events), "--events-max-size-mb", "0.01",
                     "--events-max-backups", "3")  # fmt: skip
        for _ in range(30):
            subprocess.run(["/bin/true"], check=True)
            subprocess.run(["cat", "/etc/hostname"], capture_output=True, check=True)
        assert daemon.stop() == 0, daemon.log()
        rotated = sorted(p.name for p in tmp_path.glob("events.ndjson.*"))
        assert rotated == ["events.ndjson.1", "events.ndjson.2", "events.ndjson.3"], rotated
        for path in [events, *(tmp_path / n for n in rotated)]:
            data = path.read_bytes()
            assert data.endswith(b"\n") and len(data) <= int(0.01 * 2**20)
            assert all(json.loads(line) for line in data.splitlines())  # no line split


# --- metrics address in use ---------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("required", [True, False])
def test_metrics_port_in_use(tmp_path: Path, required: bool) -> None:
    with own_daemon(tmp_path) as daemon, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon.port = taken.getsockname()[1]
        config = daemon.config_text() + ("" if required else "required = false\n")
        if required:
            daemon.config.write_text(config)
            result = subprocess.run(
                [*TRACEHOUND, "run", "--config", str(daemon.config), "--no-seed", "--duration", "5"],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "TRACEHOUND_EVIDENCE_DIR": str(tmp_path / "d")},
            )  # fmt: skip
            assert result.returncode == 1
            line = assert_one_error(result.stderr)
            assert f"metrics.listen 127.0.0.1:{daemon.port}" in line and "required = false" in line
        else:
            daemon.start(config=config)
            assert daemon.get_json("/v1/stats")["capture"]["kinds"]  # it runs
            assert daemon.stop() == 0
            assert "going on without metrics" in daemon.log()


def test_the_program_name_is_said_once_without_root() -> None:
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *TRACEHOUND, "run"],
        capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    line = assert_one_error(result.stderr)
    assert result.returncode != 0 and line.count("tracehound") == 1, line
    assert "needs root" in line


@pytest.mark.kernel
def test_client_and_stats_text_against_a_real_daemon(tmp_path: Path) -> None:
    from agent.api.client import ApiError, fetch, stream

    with own_daemon(tmp_path) as daemon:
        daemon.start()
        sock = str(daemon.sock)
        response = fetch(sock, "/v1/stats")
        assert response.status == 200 and response.header("content-type") == "application/json"
        ours = json.loads(response.body)
        theirs = daemon.get_json("/v1/stats")  # the same page through real curl
        assert set(ours) == set(theirs) and set(ours["capture"]["kinds"]) == set(
            theirs["capture"]["kinds"]
        )
        missing = fetch(sock, "/v1/nope")
        assert missing.status == 404 and str(ApiError.from_response(missing)).startswith("404: ")
        # The live stream: a process run now arrives as its exec record.
        messages = stream(sock)
        marker = f"hound-marker-{os.getpid()}"
        first = None
        deadline = time.monotonic() + 30  # a busy host's records keep the loop turning
        try:
            subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
            for message in messages:
                if time.monotonic() > deadline:
                    break
                if marker in message.data:
                    first = json.loads(message.data)
                    break
        finally:
            messages.close()
        assert first is not None and first["type"].endswith("process.exec.v1")
        text = subprocess.run([*TRACEHOUND, "stats", "--format", "text", "--socket", sock],
                              capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
        assert text.returncode == 0, text.stderr
        head = text.stdout.splitlines()[0]
        assert head.startswith("capture: up ") and "healthy: every event accounted for" in head
        rows = {line.split()[0]: line.split() for line in text.stdout.splitlines()[2:]}
        assert "exec" in rows and int(rows["exec"][1]) >= 1  # generated, from the kernel
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def large_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log past the progress bar's threshold (written by the store: no kernel)."""
    from agent.commands.progress import LARGE_BYTES
    from agent.evidence.store import EvidenceStore

    state = tmp_path_factory.mktemp("large") / "state"
    with EvidenceStore(state) as store:
        while sum(p.stat().st_size for p in (state / "segments").iterdir()) < LARGE_BYTES:
            store.append_many([("test.v1", {"n": n, "pad": "x" * 300}) for n in range(4000)])
    return state


def on_a_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run tracehound with stderr on a pseudo-terminal: (status, stdout, what the terminal got)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*TRACEHOUND, *args], stdout=subprocess.PIPE, stderr=slave, cwd=REPO,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read() if proc.stdout else b""
    return proc.wait(60), out, bytes(seen)


def test_progress_on_a_terminal_never_in_a_pipe(large_log: Path, tmp_path: Path) -> None:
    status, out, terminal = on_a_terminal("evidence", "verify", str(large_log))
    assert status == 0 and out.startswith(b"OK: ")
    assert b"verify" in terminal and b"\r" in terminal and b"%" in terminal, terminal[:200]
    piped = subprocess.run([*TRACEHOUND, "evidence", "verify", str(large_log)],
                           capture_output=True, timeout=120, cwd=REPO)  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == b""  # no bar, no carriage returns
    bundle = tmp_path / "b.tar"
    status, _, terminal = on_a_terminal("evidence", "export", str(large_log), "-o", str(bundle))
    assert status == 0 and b"export" in terminal and b"\r" in terminal
    assert bundle.stat().st_size >= sum(
        p.stat().st_size for p in (large_log / "segments").iterdir()
    )
