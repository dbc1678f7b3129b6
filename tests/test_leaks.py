"""No secret of the corpus reaches any output (real kernel, real daemon).

Every case of the redaction corpus (tests/redact/test_redact_corpus.py) is
made to happen for real: an exec with that argv, an open of that path, a
connect to that UNIX address, and a program named after a key so that its
comm is a cut token. Then every output is collected and grepped for every
secret: the profile (JSON and text, with --evidence too), /v1/snapshot and
``tracehound snapshot`` (JSON and --text), ``run --profile-file``,
``run --events``, the evidence log, the live tail over SSE and
``tracehound tail``, OCSF, a bundle, and the ``capture.config`` records of
a reload (a configured rule's pattern and a refused value must not appear).
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TRACEHOUND
from tests.harness import Daemon, evidence, own_daemon, wait_until
from tests.redact.test_redact_corpus import CORPUS

ARG_LEN = 128  # bytes per argv entry the capture keeps, NUL included
PATH_LEN = 256
SUN_PATH = 107
ARGV_MAX = 64
# A configured rule whose pattern is itself sensitive, and a refused value.
PATTERN_SECRET = "leaktest-pattern-literal"
REFUSED_VALUE = "ghp_RefusedValueMustNotBeLogged0123456789"
APPLIED_PATTERN_SECRET = "leaktest-applied-literal"
STRIPE_NAME = "sk_live_51QwErTyUiOpAsDfGhJkL"  # its comm is sk_live_51QwErT

WORKLOAD = r"""
import json, os, socket, sys
cases = json.load(open(sys.argv[1]))
for argv in cases["argv"]:
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/true", argv)
    os.waitpid(pid, 0)
for path in cases["path"]:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        pass
for address in cases["address"]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("\0" + address[1:] if address.startswith("@") else address)
    except OSError:
        pass
    s.close()
pid = os.fork()
if pid == 0:
    os.execv(cases["stripe"], [cases["stripe"]])
os.waitpid(pid, 0)
"""


def captured_secrets() -> tuple[dict[str, list[object]], set[str]]:
    """The corpus as the workload's input, and the secrets the capture can
    see whole (a secret past what a field keeps never reaches any output)."""
    work: dict[str, list[object]] = {"argv": [], "path": [], "address": []}
    secrets: set[str] = set()
    for case in CORPUS:
        if case.kind == "argv":
            assert isinstance(case.given, tuple)
            kept = [entry.encode()[: ARG_LEN - 1].decode("utf-8", "ignore") for entry in case.given]
            work["argv"].append(list(case.given[:ARGV_MAX]))
        else:
            assert isinstance(case.given, str)
            limit = PATH_LEN - 1 if case.kind == "path" else SUN_PATH
            kept = [case.given.encode()[:limit].decode("utf-8", "ignore")]
            work[case.kind].append(case.given)
        secrets |= {s for s in case.secrets if any(s in entry for entry in kept)}
    return work, secrets


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with own_daemon(tmp_path) as d:
        yield d


def test_no_secret_reaches_any_output(kernel: None, daemon: Daemon, system_python: str) -> None:
    tmp = daemon.root
    work, secrets = captured_secrets()
    assert len(secrets) > 100, "the corpus should be broad"
    play = Path(tempfile.mkdtemp(prefix="leaks-", dir="/tmp"))
    stripe = play / STRIPE_NAME
    stripe.write_bytes(Path("/bin/true").read_bytes())
    stripe.chmod(0o755)
    cases_file = play / "cases.json"
    cases_file.write_text(json.dumps({**work, "stripe": str(stripe)}))
    workload = play / "workload.py"
    workload.write_text(WORKLOAD)
    secrets |= {STRIPE_NAME[:15], PATTERN_SECRET, APPLIED_PATTERN_SECRET, REFUSED_VALUE}

    rule = (
        f'redact_rules = [{{name = "leaktest", privacy = "forbidden",'
        f' pattern = "{PATTERN_SECRET}"}}]\n'
    )
    config = daemon.config_text(extra=rule).replace(
        "[capture]", f"[capture]\nargv_max = {ARGV_MAX}"
    )
    events_file, profile_file = tmp / "events.ndjson", tmp / "run-profile.json"
    daemon.start("--events", str(events_file), "--profile-file", str(profile_file), config=config)
    outputs: dict[str, Path] = {"events": events_file, "run-profile": profile_file}
    sse_out, tail_out = tmp / "sse.txt", tmp / "tail.txt"
    with open(sse_out, "wb") as sse_file, open(tail_out, "wb") as tail_file:
        sse = subprocess.Popen(
            ["curl", "-sSN", "--unix-socket", str(daemon.sock), "http://localhost/v1/stream"],
            stdout=sse_file,
        )
        tail = subprocess.Popen(
            [*TRACEHOUND, "tail", "--socket", str(daemon.sock)], stdout=tail_file
        )
        try:
            subprocess.run([system_python, str(workload), str(cases_file)], check=True, timeout=120)
            # A reload with a value that is refused: it must not be echoed anywhere.
            daemon.config.write_text(
                config.replace("[evidence]", f'[evidence]\nfsync = "{REFUSED_VALUE}"')
            )
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload refused" in daemon.log(), "the refused reload")
            # And one that applies, with a second rule: its pattern must not appear either.
            two_rules = (
                f'redact_rules = [{{name = "leaktest", privacy = "forbidden",'
                f' pattern = "{PATTERN_SECRET}"}}, {{name = "leaktest2",'
                f' privacy = "forbidden", pattern = "{APPLIED_PATTERN_SECRET}"}}]\n'
            )
            daemon.config.write_text(config.replace(rule, two_rules))
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "configuration reloaded" in daemon.log(), "the applied reload")
            wait_until(lambda: b"/bin/true" in sse_out.read_bytes(), "the live tail")
            for name, path in (("snapshot-api", "/v1/snapshot"), ("stats-api", "/v1/stats")):
                result = daemon.curl(path)
                (tmp / name).write_text(result.stdout)
                outputs[name] = tmp / name
            for name, extra in (("snapshot-cli", []), ("snapshot-text", ["--text"])):
                result = subprocess.run(
                    [*TRACEHOUND, "snapshot", "--socket", str(daemon.sock), *extra],
                    capture_output=True, timeout=60,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr
                (tmp / name).write_bytes(result.stdout)
                outputs[name] = tmp / name
        finally:
            tail.terminate()
            sse.terminate()
            tail.wait(10)
            sse.wait(10)
    assert daemon.stop() == 0, daemon.log()
    outputs |= {"sse": sse_out, "tail": tail_out, "stderr": daemon.stderr}
    for segment in (daemon.state / "segments").glob("*.ndjson"):
        outputs[f"log {segment.name}"] = segment
    bundle = tmp / "bundle.tar"
    ocsf = tmp / "ocsf.ndjson"
    for name, args, out in (
        ("bundle", ["export", "-o", str(bundle)], None),
        ("ocsf", ["stream", "--format", "ocsf", "-o", str(ocsf)], None),
    ):
        done = subprocess.run(
            [*TRACEHOUND, "evidence", *args, "--state-dir", str(daemon.state)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, (name, done.stderr, out)
    outputs |= {"bundle": bundle, "ocsf": ocsf}
    configs = [r["data"]["config"] for r in evidence(daemon.state, "capture.config.v1")]
    assert [c["reload"] for c in configs] == ["refused", "applied"]
    names = [r["name"] for r in configs[-1]["redaction"]["configured"]]
    assert names == ["leaktest", "leaktest2"]  # on record by name and digest

    # The profile command, JSON and text, with its own evidence log.
    state = tmp / "profile-evidence"
    keygen = subprocess.run(
        [*TRACEHOUND, "evidence", "keygen", "--state-dir", str(state)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert keygen.returncode == 0, keygen.stderr
    for name, fmt in (("profile-json", "json"), ("profile-text", "text")):
        out = tmp / name
        done = subprocess.run(
            [*TRACEHOUND, "profile", "--evidence", str(state), "--argv-max", str(ARGV_MAX),
             "--format", fmt, "-o", str(out), "--", system_python, str(workload), str(cases_file)],
            capture_output=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[name] = out
    for segment in (state / "segments").glob("*.ndjson"):
        outputs[f"profile log {segment.name}"] = segment

    seen_workload = json.loads(outputs["profile-json"].read_text())
    assert any(p["argv"][:1] == ["mysql"] for p in seen_workload["processes"])  # it ran
    leaks = [
        (secret, name)
        for name, path in outputs.items()
        for secret in secrets
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks, leaks[:20]
