"""The README's quick start on a fresh host: `evidence keygen`, `run` with no
configuration at all, `tail`, `evidence verify`, each with its defaults.

The defaults are the host's real places (/var/lib/tracehound/evidence,
/run/tracehound/api.sock, 127.0.0.1:9464), which a test must not take from
the machine: the evidence directory is moved by TRACEHOUND_EVIDENCE_DIR
(which only moves the default), and the daemon runs in a mount namespace of
its own with a fresh tmpfs on /run and a network namespace of its own, so
its socket and port are its own. Nothing else is given: no ``--config``,
no ``--evidence``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

from agent.config.schema import EVIDENCE_DIR_ENV
from tests.conftest import TRACEHOUND
from tests.harness import records, wait_until

# In its own namespaces: /run is a fresh tmpfs (the default API socket's
# directory is made there), and the network is its own (the metrics port).
_ISOLATED = ["unshare", "--mount", "--net", "--", "/bin/sh", "-c",
             'mount -t tmpfs tmpfs /run && exec "$@"', "sh"]  # fmt: skip


def test_run_with_no_configuration_writes_a_sealed_log_that_verifies(
    kernel: None, tmp_path: Path
) -> None:
    state = tmp_path / "fresh" / "var-lib-tracehound" / "evidence"  # parents missing, as fresh
    env = {**os.environ, EVIDENCE_DIR_ENV: str(state)}
    assert not Path("/etc/tracehound/tracehound.toml").exists(), "this host has a config"
    keygen = subprocess.run(
        [*TRACEHOUND, "evidence", "keygen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert keygen.returncode == 0, keygen.stderr
    key = keygen.stdout.strip()
    assert key.startswith("thk1-") and (state / "keys").is_dir()

    ready = tmp_path / "ready"
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as err:
        daemon = subprocess.Popen(
            [*_ISOLATED, *TRACEHOUND, "run", "--ready-file", str(ready)], env=env, stderr=err
        )
    try:
        wait_until(lambda: ready.exists() or daemon.poll() is not None, "the daemon", 90)
        assert daemon.poll() is None, stderr.read_text()
        start = next(r["body"] for r in records(state) if "id" in r["body"])
        assert start["type"].endswith("capture.anchor.v1")
        # An exec whose pid is known before it runs: sh waits, then execs.
        token = f"quickstart-{uuid.uuid4().hex[:12]}"
        marker = subprocess.Popen(
            ["/bin/sh", "-c", f"read line; exec /bin/echo {token}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert marker.stdin is not None
        marker.stdin.write(b"go\n")
        marker.stdin.close()
        assert marker.wait(30) == 0
        # `tail` in the daemon's namespaces, on its default socket; from the
        # log first (after capture.start), so no race with the exec.
        tail = subprocess.run(
            ["nsenter", f"--target={daemon.pid}", "--mount", "--net", *TRACEHOUND, "tail",
             "--type", "process.exec", "--pid", str(marker.pid), "--count", "1",
             "--last-event-id", start["id"]],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert tail.returncode == 0, (tail.stderr, stderr.read_text())
        assert token in tail.stdout and str(marker.pid) in tail.stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, stderr.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log = stderr.read_text()
    assert "Traceback" not in log and "no sealing key" not in log, log
    assert "api: cannot serve" not in log, log

    # The default log: the exec is in it, it ends with a stop record, and
    # every record up to the stop is sealed with the key made first.
    bodies = [r["body"] for r in records(state) if "id" in r["body"]]
    execs = [b for b in bodies if b["type"].endswith("process.exec.v1")]
    assert any(b["data"]["pid"] == marker.pid and token in b["data"]["argv"] for b in execs)
    assert bodies[-1]["type"].endswith("capture.stop.v1")
    verify = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", "--key", key],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith(f"OK: {len(list(records(state)))} records"), verify.stdout
    assert "seals: " in verify.stdout and "NOT" not in verify.stdout, verify.stdout
    # The same log with a key that is not its own: a break, so the check can fail.
    other = tmp_path / "other"
    wrong = subprocess.run(
        [*TRACEHOUND, "evidence", "keygen", "--state-dir", str(other)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 0, wrong.stderr
    refused = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", "--key", wrong.stdout.strip()],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
