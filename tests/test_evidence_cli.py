"""`tracehound evidence` end to end: a real sealed log from `profile --evidence`,
then stream, export and verify as subprocesses, tampered with through the files.

The unit-level tamper matrix lives in tests/evidence/test_verify.py; here every
check goes through the CLI (exit status, report text, stderr) on a log the
kernel capture really wrote.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from agent.evidence.canonical import canonical
from agent.evidence.chain import ChainWriter
from tests.conftest import REPO, TRACEHOUND, require_kernel

CE_PREFIX = "dev.tracehound."
ANCHOR = CE_PREFIX + "capture.anchor.v1"
START = CE_PREFIX + "capture.start.v1"
DEGRADED = CE_PREFIX + "capture.degraded.v1"
STOP = CE_PREFIX + "capture.stop.v1"
LOSS = CE_PREFIX + "capture.loss.v1"
EXEC = CE_PREFIX + "process.exec.v1"
OPEN = CE_PREFIX + "file.open.v1"
UNLINK = CE_PREFIX + "file.unlink.v1"
HEX64 = re.compile(r"[0-9a-f]{64}")
BROKEN = re.compile(r"^BROKEN at seq (\S+)", re.MULTILINE)
OK_HEAD = re.compile(r"^OK: \d+ records, head (\d+):([0-9a-f]{64})\b", re.MULTILINE)


def cli(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*TRACEHOUND, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def verify(target: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("evidence", "verify", str(target), *extra)


def broken_at(out: subprocess.CompletedProcess[str]) -> str:
    """The seq of `BROKEN at seq N`, as printed; fails if the report has none."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    match = BROKEN.search(out.stdout)
    assert match, out.stdout
    return match.group(1)


def one_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    err = out.stderr.strip()
    assert err.startswith("tracehound:") and "\n" not in err, out.stderr
    return err


def stream_records(state: Path, *extra: str) -> list[dict[str, Any]]:
    out = cli("evidence", "stream", "--state-dir", str(state), *extra)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")
    return [json.loads(line) for line in out.stdout.splitlines()]


def keygen(state: Path) -> str:
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert re.fullmatch(r"thk1-[0-9a-f]{64}-[0-9a-f]{8}", key), out.stdout
    return key


class Log:
    """The module's sealed log: two profile runs into one state directory."""

    def __init__(self, state: Path, key: str, profile: dict[str, Any], created: Path) -> None:
        self.state = state
        self.key = key
        self.profile = profile
        self.created = created
        self.segment = state / "segments" / "0000000000000000.ndjson"
        self.lines = self.segment.read_bytes().splitlines(keepends=True)
        self.records = [json.loads(line) for line in self.lines]
        self.head = (self.records[-1]["seq"], self.records[-1]["hash"])

    def seq_of(self, type_: str, pred: Any = lambda body: True) -> int:
        for record in self.records:
            if record["type"] == type_ and pred(record["body"]):
                return int(record["seq"])
        raise AssertionError(f"no {type_} record matching")

    def copy(self, tmp_path: Path) -> tuple[Path, Path]:
        """A copy of the state directory to tamper with, and its segment file."""
        target = tmp_path / "copy"
        shutil.copytree(self.state, target)
        return target, target / "segments" / self.segment.name


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    """keygen, then `profile --evidence` twice: a trivial run, then file ops.

    Two runs give two seals, so a rewrite of the second run is localised
    after the first seal.
    """
    require_kernel()
    tmp = tmp_path_factory.mktemp("evidence-cli")
    state = tmp / "state"
    key = keygen(state)
    assert (state / "keys" / "seal.key").is_file()
    first = cli("profile", "--evidence", str(state), "--output", str(tmp / "p0.json"),
                "--", "/bin/true", timeout=120)  # fmt: skip
    assert first.returncode == 0, first.stderr
    created = tmp / "created.txt"
    script = f"echo hello > {created}; cat {created} > /dev/null; rm {created}"
    out = cli("profile", "--evidence", str(state), "--output", str(tmp / "p1.json"),
              "--", "/bin/sh", "-c", script, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    segments = sorted((state / "segments").iterdir())
    assert [p.name for p in segments] == ["0000000000000000.ndjson"], segments
    profile = json.loads((tmp / "p1.json").read_text())
    return Log(state, key, profile, created)


# --- a real sealed log -------------------------------------------------------------


def test_sealed_log_verifies_with_key(kernel: None, log: Log) -> None:
    out = verify(log.state, "--key", log.key)
    assert out.returncode == 0, out.stdout + out.stderr
    seals = re.search(r"^seals: (\d+) checked$", out.stdout, re.MULTILINE)
    assert seals, out.stdout
    checkpoints = sum(r["type"] == "checkpoint" for r in log.records)
    assert int(seals.group(1)) == checkpoints >= 2  # one per profile run
    head = OK_HEAD.search(out.stdout)
    assert head and (int(head.group(1)), head.group(2)) == log.head
    # the key file is also accepted from a file
    key_file = log.state.parent / "verification.key"
    key_file.write_text(log.key + "\n")
    assert verify(log.state, "--key", str(key_file)).returncode == 0


def test_without_key_says_seals_were_not_checked(kernel: None, log: Log) -> None:
    out = verify(log.state)
    assert out.returncode == 0, out.stdout
    assert "seals NOT checked" in out.stdout
    assert not re.search(r"^seals: \d+ checked", out.stdout, re.MULTILINE)


def test_log_holds_the_runs_facts(kernel: None, log: Log) -> None:
    records = stream_records(log.state)
    assert [json.dumps(r, sort_keys=True) for r in records] == [
        json.dumps(r, sort_keys=True) for r in log.records
    ]
    assert [r["seq"] for r in records] == list(range(len(records)))
    events = [r for r in records if r["type"].startswith(CE_PREFIX)]
    types = [r["type"] for r in events]
    assert types[0] == ANCHOR and types[-1] == STOP
    assert types.count(ANCHOR) == types.count(START) == types.count(STOP) == 2
    # the second run, from its anchor on
    second = events[len(types) - 1 - types[::-1].index(ANCHOR) :]
    second_types = [r["type"] for r in second]
    assert second_types[:3] == [ANCHOR, START, DEGRADED]
    assert second_types[-1] == STOP

    root = log.profile["root_pid"]
    execs = [r["body"]["data"] for r in second if r["type"] == EXEC]
    assert any(e["pid"] == root and e["argv"][:2] == ["/bin/sh", "-c"] for e in execs), execs
    created = str(log.created)
    opens = [r["body"]["data"] for r in second if r["type"] == OPEN]
    made = [o for o in opens if o["path"] == created and o["flags"] & os.O_CREAT]
    assert made and made[0]["ret"] >= 0 and made[0]["pid"] == root, opens
    assert any(r["body"]["data"]["path"] == created for r in second if r["type"] == UNLINK)


def test_cloudevent_envelopes(kernel: None, log: Log) -> None:
    runs: list[list[dict[str, Any]]] = []
    for record in log.records:
        if not record["type"].startswith(CE_PREFIX):
            continue
        body = record["body"]
        if record["type"] == ANCHOR:
            runs.append([])
        runs[-1].append(body)
        assert body["specversion"] == "1.0"
        assert body["type"] == record["type"]
        assert re.fullmatch(r"[0-9a-f]{32}", body["id"]), body["id"]
        assert body["source"].startswith("tracehound://")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["time"])
        assert isinstance(body["thseq"], int)
        assert HEX64.fullmatch(body["thhash"])
        assert body["thhash"] == blake3.blake3(canonical(body["data"])).hexdigest()
    assert len(runs) == 2
    for run in runs:
        assert [b["thseq"] for b in run] == list(range(len(run)))
        assert len({b["id"] for b in run}) == len(run)
    assert runs[0][0]["id"] != runs[1][0]["id"]  # the anchors differ (wall clock)


def test_cloudevent_ids_are_unique_across_runs(kernel: None, log: Log) -> None:
    events = [r["body"] for r in log.records if r["type"].startswith(CE_PREFIX)]
    seen: dict[tuple[str, str], int] = {}
    for record in log.records:
        if record["type"].startswith(CE_PREFIX):
            key = (record["body"]["source"], record["body"]["id"])
            assert key not in seen, (record["seq"], seen[key], record["type"])
            seen[key] = record["seq"]
    assert len(seen) == len(events)


def test_stream_piped_into_verify(kernel: None, log: Log) -> None:
    def pipe(*stream_args: str, verify_args: tuple[str, ...] = ()) -> tuple[int, int, str]:
        producer = subprocess.Popen(
            [*TRACEHOUND, "evidence", "stream", "--state-dir", str(log.state), *stream_args],
            stdout=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        try:
            consumer = subprocess.run(
                [*TRACEHOUND, "evidence", "verify", "-", *verify_args],
                stdin=producer.stdout, capture_output=True, text=True, timeout=60, cwd=REPO,
            )  # fmt: skip
        finally:
            assert producer.stdout is not None
            producer.stdout.close()
            producer.wait(timeout=60)
        return producer.returncode, consumer.returncode, consumer.stdout + consumer.stderr

    rc_stream, rc_verify, report = pipe(verify_args=("--key", log.key))
    assert (rc_stream, rc_verify) == (0, 0), report
    head = OK_HEAD.search(report)
    assert head and (int(head.group(1)), head.group(2)) == log.head
    assert re.search(r"^seals: [1-9]\d* checked$", report, re.MULTILINE), report
    assert "history before" not in report

    rc_stream, rc_verify, report = pipe("--from", "5")
    assert (rc_stream, rc_verify) == (0, 0), report
    assert "history before seq 5 not checked" in report
    assert f"OK: {len(log.records) - 5} records" in report


def test_ocsf_projection(kernel: None, log: Log) -> None:
    events = stream_records(log.state, "--format", "ocsf")
    assert events
    classes = {e["class_uid"] for e in events}
    assert classes <= {1007, 1001, 4001}
    assert {1007, 1001} <= classes
    assert all(e["metadata"]["version"] == "1.3.0" for e in events)
    created = str(log.created)
    assert any(e["class_uid"] == 1001 and e["file"]["path"] == created for e in events)
    # one OCSF event per process/file/network record; seen, syscalls, capture.* have none
    types = [r["type"][len(CE_PREFIX) :] for r in log.records if r["type"].startswith(CE_PREFIX)]
    want = {
        1007: sum(
            t.split(".")[1] in ("exec", "fork", "exit") for t in types if t[:8] == "process."
        ),
        1001: sum(t.startswith("file.") for t in types),
        4001: sum(t.startswith("network.") for t in types),
    }
    got = {uid: sum(e["class_uid"] == uid for e in events) for uid in want}
    assert got == want
    launches = sum(t in ("process.exec.v1", "process.fork.v1") for t in types)
    assert sum(e["class_uid"] == 1007 and e["activity_id"] == 1 for e in events) == launches


# --- tampering through the CLI -------------------------------------------------------


def test_one_byte_changed_in_a_body(kernel: None, log: Log, tmp_path: Path) -> None:
    k = log.seq_of(OPEN, lambda b: b["data"]["path"] == str(log.created))
    state, segment = log.copy(tmp_path)
    lines = list(log.lines)
    old = lines[k]
    name = log.created.name.encode()
    lines[k] = old.replace(name, name.upper()[:1] + name[1:], 1)
    assert sum(a != b for a, b in zip(old, lines[k], strict=True)) == 1
    segment.write_bytes(b"".join(lines))
    assert broken_at(verify(state)) == str(k)
    out = verify(state, "--key", log.key)
    assert broken_at(out) == str(k)
    assert f"line {k + 1}" in out.stdout


def test_a_line_deleted(kernel: None, log: Log, tmp_path: Path) -> None:
    k = log.seq_of(EXEC)
    state, segment = log.copy(tmp_path)
    segment.write_bytes(b"".join(log.lines[:k] + log.lines[k + 1 :]))
    assert broken_at(verify(state, "--key", log.key)) == str(k)


def test_two_adjacent_lines_swapped(kernel: None, log: Log, tmp_path: Path) -> None:
    k = log.seq_of(OPEN)
    state, segment = log.copy(tmp_path)
    lines = list(log.lines)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    segment.write_bytes(b"".join(lines))
    assert broken_at(verify(state, "--key", log.key)) == str(k)


def test_tail_cut_is_caught_with_expect_head(kernel: None, log: Log, tmp_path: Path) -> None:
    original = verify(log.state)
    head = OK_HEAD.search(original.stdout)
    assert head, original.stdout
    expect = f"{head.group(1)}:{head.group(2)}"
    keep = log.seq_of(EXEC, lambda b: b["data"]["pid"] == log.profile["root_pid"]) + 3
    state, segment = log.copy(tmp_path)
    segment.write_bytes(b"".join(log.lines[: keep + 1]))
    # a shorter chain is still a chain: without a remembered head it passes
    assert verify(state).returncode == 0
    out = verify(state, "--expect-head", expect)
    assert broken_at(out) == str(keep + 1)
    assert "truncated" in out.stdout
    # the untouched log reaches the remembered head
    assert verify(log.state, "--expect-head", expect).returncode == 0


def rewrite(lines: list[bytes], k: int, edit: Any) -> bytes:
    """Re-emit every record with fresh hashes, ``edit`` applied to record k's body."""
    writer = ChainWriter()
    out: list[bytes] = []
    for raw in lines:
        record = json.loads(raw)
        body = edit(record["body"]) if record["seq"] == k else record["body"]
        _, line = writer.append(record["type"], body)
        out.append(line)
    return b"".join(out)


def test_chain_rewritten_without_the_key(kernel: None, log: Log, tmp_path: Path) -> None:
    checkpoints = [r["seq"] for r in log.records if r["type"] == "checkpoint"]
    k = log.seq_of(OPEN, lambda b: b["data"]["path"] == str(log.created))
    sealed_before = [c for c in checkpoints if c < k]
    assert sealed_before and any(c > k for c in checkpoints)

    def hide(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "data": {**body["data"], "path": "/tmp/innocent"}}

    state, segment = log.copy(tmp_path)
    forged = rewrite(log.lines, k, hide)
    assert forged != b"".join(log.lines)
    segment.write_bytes(forged)
    plain = verify(state)
    assert plain.returncode == 0, plain.stdout
    assert "seals NOT checked" in plain.stdout
    out = verify(state, "--key", log.key)
    # the last seal before k still holds; what it does not vouch for starts after it
    assert broken_at(out) == str(sealed_before[-1])
    assert "seal" in out.stdout

    # a rewrite early in the first run: the break is where the seals stop vouching
    first_open = log.seq_of(OPEN)
    prior = [c for c in checkpoints if c < first_open]
    segment.write_bytes(rewrite(log.lines, first_open, hide))
    assert verify(state).returncode == 0
    assert broken_at(verify(state, "--key", log.key)) == (str(prior[-1]) if prior else "0")


# --- bundles ----------------------------------------------------------------------------


def test_export_is_deterministic_and_verifies(kernel: None, log: Log, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    for target in (a, b):
        out = cli("evidence", "export", "--state-dir", str(log.state), "-o", str(target))
        assert out.returncode == 0, out.stderr
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes()) > sum(len(line) for line in log.lines)
    out = verify(a, "--key", log.key)
    assert out.returncode == 0, out.stdout
    head = OK_HEAD.search(out.stdout)
    assert head and (int(head.group(1)), head.group(2)) == log.head
    assert re.search(r"^seals: [1-9]\d* checked$", out.stdout, re.MULTILINE)


def test_truncated_bundle(kernel: None, log: Log, tmp_path: Path) -> None:
    bundle = tmp_path / "a.tar"
    out = cli("evidence", "export", "--state-dir", str(log.state), "-o", str(bundle))
    assert out.returncode == 0, out.stderr
    data = bundle.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    one_line_error(verify(cut, "--key", log.key))


# --- bad input ----------------------------------------------------------------------------


def test_garbage_line_mid_file_is_a_break(kernel: None, log: Log, tmp_path: Path) -> None:
    """A detected break (exit 1), not bad input: the log is a log, damaged at k + 1."""
    k = log.seq_of(EXEC)
    state, segment = log.copy(tmp_path)
    lines = list(log.lines)
    lines.insert(k + 1, b"\x00garbage{not json\n")
    segment.write_bytes(b"".join(lines))
    out = verify(state, "--key", log.key)
    assert broken_at(out) == str(k + 1)
    assert f"{segment.name} line {k + 2}" in out.stdout
    assert "malformed" in out.stdout


def test_wrong_key_is_a_seal_failure(kernel: None, log: Log, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other")
    assert other != log.key
    out = verify(log.state, "--key", other)
    assert broken_at(out) == "0"
    assert re.search(r"seal|mac", out.stdout, re.IGNORECASE), out.stdout
    assert other not in out.stdout + out.stderr


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sealed log written by the store directly: bad-input tests need no kernel.

    One for the module (a keygen and a verify, two real CLI runs, each time
    was most of these tests' time): the tests only read it, and the one
    that appends to it appends to a copy of its own."""
    from agent.evidence.store import EvidenceStore

    state = tmp_path_factory.mktemp("small-log") / "small"
    key = keygen(state)
    with EvidenceStore(state) as store:
        store.append_many([("test.v1", {"n": n}) for n in range(5)])
    assert verify(state, "--key", key).returncode == 0
    return state, key


def test_non_json_file_is_refused_without_traceback(tmp_path: Path) -> None:
    """Whatever the exit code (see the xfail below), a non-log file is not OK."""
    target = tmp_path / "hostname"
    shutil.copyfile("/etc/hostname", target)
    out = verify(target)
    assert out.returncode in (1, 2)
    assert not out.stdout.startswith("OK")
    assert "Traceback" not in out.stdout + out.stderr


def test_non_json_file_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "hostname"
    shutil.copyfile("/etc/hostname", target)
    one_line_error(verify(target))


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_nothing_to_verify_is_not_ok(tmp_path: Path, how: str) -> None:
    if how == "file":
        empty = tmp_path / "empty.ndjson"
        empty.write_bytes(b"")
        out = verify(empty)
    else:
        out = cli("evidence", "verify", "-", stdin=b"")
    assert out.returncode != 0, out.stdout


def test_stream_of_a_missing_log(tmp_path: Path) -> None:
    err = one_line_error(cli("evidence", "stream", "--state-dir", str(tmp_path / "none")))
    assert "no evidence log" in err


@pytest.mark.parametrize(
    "bad_key",
    [
        "thk1-zzzz-1234",
        "thk1-" + "ab" * 32 + "-00000000",  # checksum wrong
        "thk1-" + "ab" * 31 + "-00000000",  # too short
    ],
)
def test_malformed_key(small_log: tuple[Path, str], bad_key: str) -> None:
    state, _ = small_log
    out = verify(state, "--key", bad_key)
    err = one_line_error(out)
    assert "--key" in err and re.search(r"malformed|corrupt|not a", err), err
    assert bad_key not in out.stdout + out.stderr
    assert "ab" * 31 not in err


def test_bare_hex_key_is_not_echoed(small_log: tuple[Path, str]) -> None:
    state, key = small_log
    secret = key.split("-")[1]
    out = verify(state, "--key", secret)
    one_line_error(out)
    assert secret not in out.stderr + out.stdout


@pytest.mark.parametrize("head", ["12:abc", "x:" + "0" * 64, "0" * 64, "-1:" + "0" * 64, ""])
def test_malformed_expect_head(small_log: tuple[Path, str], head: str) -> None:
    state, _ = small_log
    err = one_line_error(verify(state, f"--expect-head={head}"))
    assert "--expect-head" in err


def test_verify_missing_path(tmp_path: Path) -> None:
    err = one_line_error(verify(tmp_path / "nowhere"))
    assert "no such file" in err


def test_keygen_twice_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = keygen(state)
    before = (state / "keys" / "seal.key").read_bytes()
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode != 0
    err = one_line_error(out, out.returncode)
    assert "refusing" in err
    assert out.stdout == "" and key not in err
    assert (state / "keys" / "seal.key").read_bytes() == before


# --- losses become evidence --------------------------------------------------------------

FLOOD = (
    "import os\n"
    "for i in range(20000):\n"
    "    try:\n"
    "        os.open('/nonexistent-%d' % i, os.O_RDONLY)\n"
    "    except OSError:\n"
    "        pass\n"
)


@pytest.fixture
def lossy(tmp_path: Path, system_python: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    state = tmp_path / "lossy"
    keygen(state)
    out = cli("profile", "--ringbuf-pages", "1", "--evidence", str(state),
              "--output", str(tmp_path / "p.json"), "--", system_python, "-c", FLOOD,
              timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr
    yield state, json.loads((tmp_path / "p.json").read_text())


def test_kernel_losses_are_recorded(kernel: None, lossy: tuple[Path, dict[str, Any]]) -> None:
    state, profile = lossy
    lost = {kind: books["lost_kernel"] for kind, books in profile["accounting"].items()}
    if lost["file"] == 0:
        message = "a 1-page ring buffer lost no file events under a 20000-open flood"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = verify(state)
    assert out.returncode == 0, out.stdout
    records = stream_records(state)
    losses = [r["body"]["data"] for r in records if r["type"] == LOSS]
    assert losses
    recorded: dict[str, int] = {}
    for data in losses:
        assert data["total"] == sum(
            n for stages in data["counts"].values() for n in stages.values()
        )
        assert int(data["window_start_ns"]) <= int(data["window_end_ns"])
        for kind, stages in data["counts"].items():
            recorded[kind] = recorded.get(kind, 0) + stages.get("kernel", 0)
    assert recorded.get("file", 0) == lost["file"]
    assert {k: n for k, n in recorded.items() if n} == {k: n for k, n in lost.items() if n}
    # the loss is evidence before the end of the run
    types = [r["type"] for r in records]
    assert types.index(LOSS) < len(types) - 1 - types[::-1].index(STOP)


def test_traceparent_from_the_environment_is_on_every_record(kernel: None, tmp_path: Path) -> None:
    import os as _os

    state = tmp_path / "traced"
    keygen(state)
    keygen(tmp_path / "bad")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    env = {**_os.environ, "TRACEPARENT": parent, "TRACESTATE": "vendor=1"}
    done = subprocess.run(
        [*TRACEHOUND, "profile", "--evidence", str(state), "--", "/bin/true"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bodies = [r["body"] for r in stream_records(state)]
    events = [b for b in bodies if isinstance(b, dict) and "specversion" in b]
    assert events and all(
        e["traceparent"] == parent and e["tracestate"] == "vendor=1" for e in events
    )
    bad = subprocess.run(
        [*TRACEHOUND, "profile", "--evidence", str(tmp_path / "bad"), "--", "/bin/true"],
        capture_output=True, text=True, timeout=120, env={**env, "TRACEPARENT": "nonsense"},
    )  # fmt: skip
    assert bad.returncode == 2 and "TRACEPARENT" in bad.stderr and "Traceback" not in bad.stderr


def test_profile_evidence_without_a_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    state = tmp_path / "unsealed"
    done = subprocess.run(
        [*TRACEHOUND, "profile", "--evidence", str(state), "--", "/bin/true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "evidence keygen --state-dir" in done.stderr
    assert not (state / "segments").exists()  # refused before anything was written


def test_stream_follow_prints_new_records_and_stops_cleanly(tmp_path: Path) -> None:
    import queue
    import signal as _signal
    import threading

    from agent.evidence.store import EvidenceStore
    from tests.harness import wait_until

    state = tmp_path / "follow"
    with EvidenceStore(state) as store:
        store.append("dev.tracehound.test.v1", {"n": 0})
        store.commit()
    follower = subprocess.Popen(
        [*TRACEHOUND, "evidence", "stream", "--follow", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follower.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True)
    reader.start()
    printed: list[str] = []

    def shown(body: dict[str, int]) -> bool:
        while not lines.empty():
            printed.append(lines.get())
        return any(json.loads(line)["body"] == body for line in printed)

    try:
        wait_until(lambda: shown({"n": 0}), "the follower to print the first record")
        with EvidenceStore(state) as store:
            store.append("dev.tracehound.test.v1", {"n": 1})
            store.commit()
        wait_until(lambda: shown({"n": 1}), "the follower to print the later record")
        follower.send_signal(_signal.SIGTERM)
        follower.wait(timeout=30)
        reader.join(timeout=30)  # stdout ended with the process
        shown({})  # what is left in the queue
        out = "".join(printed)
        assert follower.stderr is not None
        err = follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    bodies = [json.loads(line)["body"] for line in out.splitlines()]
    assert {"n": 1} in bodies and {"n": 0} in bodies  # the later one arrived while following


# --- what verify prints cannot be forged by the bundle's names -------------------

FORGED = "evil\nOK: 5 records, head 4:abcd  (SEQ:HASH, for --expect-head)\x1b[31m"


def _rebuilt(bundle: Path, out: Path, extra: bytes | None, manifest_key: str | None) -> Path:
    """``bundle`` with a member named :data:`FORGED` added, or its manifest
    given an unknown key, written to ``out``."""
    with tarfile.open(bundle) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    if manifest_key is not None:
        items = [
            (m, json.dumps({**json.loads(d), manifest_key: 1}).encode())
            if m.name == "manifest.json"
            else (m, d)
            for m, d in items
        ]
    if extra is not None:
        items.append((tarfile.TarInfo(FORGED), extra))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("how", ["member", "manifest-key"])
def test_verify_of_a_bundle_with_forged_names_prints_no_verdict(
    small_log: tuple[Path, str], tmp_path: Path, how: str
) -> None:
    state, key = small_log
    good = tmp_path / "good.tar"
    assert cli("evidence", "export", "--state-dir", str(state), "-o", str(good)).returncode == 0
    evil = _rebuilt(
        good,
        tmp_path / "evil.tar",
        b"x" if how == "member" else None,
        "x\nOK: forged\x1b[2J" if how == "manifest-key" else None,
    )
    out = verify(evil, "--key", key)
    err = one_line_error(out)
    assert out.stdout == "" and "\x1b" not in err and err.isprintable()
    assert err.startswith(f"tracehound: evidence verify: {evil}: ")


def test_stream_of_a_record_with_a_forged_key_is_one_escaped_line(
    small_log: tuple[Path, str], tmp_path: Path
) -> None:
    shared, _ = small_log
    state = tmp_path / "small"
    shutil.copytree(shared, state)  # appended to below: the module's log stays whole
    segment = sorted((state / "segments").iterdir())[-1]
    with open(segment, "ab") as f:
        f.write(b'{"seq":99,"x\\nOK: forged\\u001b[2J":1}\n')
    out = cli("evidence", "stream", "--state-dir", str(state))
    err = one_line_error(out, 1)
    assert "a record does not parse" in err and "\x1b" not in err and err.isprintable()
