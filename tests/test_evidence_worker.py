"""The evidence worker (a process of its own) with the real daemon and kernel.

- It is the daemon's one lasting child, and it writes the log: a marker
  exec reaches the log and the live tail.
- A signal to the whole process group (Ctrl-C, or a supervisor that signals
  every process) stops the daemon, and the worker still writes everything
  the daemon drains, then the stop record, then exits: the log verifies.
- The worker killed mid-run: capture goes on, /readyz says why (503), what
  the log missed is counted by kind at ``evidence:worker``, ``run`` exits 3,
  and the next start records the unclean end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import TRACEHOUND
from tests.harness import Daemon, evidence, own_daemon, records, wait_until

EXIT_EVIDENCE_LOST = 3
WORKER_COMM = "th-evidence"


def worker_pid(daemon_pid: int) -> int:
    """The daemon's evidence worker (its only lasting child)."""
    children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split()
    found = [
        int(pid) for pid in children if Path(f"/proc/{pid}/comm").read_text().strip() == WORKER_COMM
    ]
    assert len(found) == 1, (children, found)
    return found[0]


def tail_subscribed(daemon: Daemon) -> bool:
    """A live-tail client holds a buffer (the ``sse_clients`` queue's
    capacity is the sum of the clients' buffers)."""
    queues = daemon.get_json("/v1/stats")["queues"]
    return any(q["queue"] == "sse_clients" and q["capacity"] > 0 for q in queues)


def marker_exec(name: str) -> None:
    subprocess.run(["/bin/echo", name], check=True, stdout=subprocess.DEVNULL)


def logged_argv(state: Path) -> list[list[str]]:
    return [r["data"]["argv"] for r in evidence(state, "process.exec.v1")]


def verify(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(state)], capture_output=True, text=True, timeout=120
    )


def test_the_worker_writes_the_log_and_feeds_the_live_tail(kernel: None, tmp_path: Path) -> None:
    with own_daemon(tmp_path) as daemon:
        daemon.start()
        assert daemon.proc is not None
        worker = worker_pid(daemon.proc.pid)
        # Its own process (a thread would share the GIL): its own thread group.
        assert f"Tgid:\t{worker}\n" in Path(f"/proc/{worker}/status").read_text()
        tail = subprocess.Popen(
            ["curl", "-sSN", "--max-time", "20", "--unix-socket", str(daemon.sock),
             "http://localhost/v1/stream"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        received = bytearray()
        reader = threading.Thread(target=lambda: [received.extend(b) for b in tail.stdout])
        reader.start()
        try:
            wait_until(lambda: tail_subscribed(daemon), "the tail client to subscribe")
            marker_exec("th-worker-marker")
            wait_until(lambda: ["/bin/echo", "th-worker-marker"] in logged_argv(daemon.state),
                       "the marker in the log")  # fmt: skip
            wait_until(lambda: b"th-worker-marker" in received, "the marker on the live tail")
        finally:
            tail.terminate()
            tail.wait(timeout=30)
            reader.join(timeout=30)
        assert daemon.stop() == 0, daemon.log()
        types = [r["type"] for r in records(daemon.state)]
        assert types[-1] == "dev.tracehound.capture.stop.v1", types[-4:]
        result = verify(daemon.state)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_signal_to_the_process_group_loses_nothing(kernel: None, tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the group: the worker must not stop
    before the daemon has handed it everything it drained."""
    daemon = Daemon(tmp_path)
    daemon.config.write_text(daemon.config_text())
    ready = tmp_path / "ready"
    with open(daemon.stderr, "ab") as err:
        proc = subprocess.Popen(
            [*TRACEHOUND, "run", "--config", str(daemon.config), "--ready-file", str(ready),
             "--no-seed"],
            stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, "the daemon", 90)
        assert proc.poll() is None, daemon.log()
        worker = worker_pid(proc.pid)
        for i in range(200):
            marker_exec(f"th-group-{i}")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0, daemon.log()
        wait_until(lambda: not Path(f"/proc/{worker}").exists(), "the worker to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        daemon.close()
    seen = {argv[1] for argv in logged_argv(daemon.state) if argv[:1] == ["/bin/echo"]}
    assert {f"th-group-{i}" for i in range(200)} <= seen
    assert [r["type"] for r in records(daemon.state)][-1] == "dev.tracehound.capture.stop.v1"
    result = verify(daemon.state)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_dead_worker_is_reported_counted_and_on_record(kernel: None, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    with own_daemon(tmp_path) as daemon:
        daemon.start("--stats-file", str(stats_file))
        assert daemon.proc is not None
        assert daemon.status("/readyz")[0] == 200
        marker_exec("th-before-the-kill")
        wait_until(lambda: ["/bin/echo", "th-before-the-kill"] in logged_argv(daemon.state),
                   "the first marker in the log")  # fmt: skip
        os.kill(worker_pid(daemon.proc.pid), signal.SIGKILL)
        wait_until(lambda: daemon.status("/readyz")[0] == 503, "/readyz 503")
        _, body = daemon.status("/readyz")
        assert "evidence worker" in body, body
        for i in range(20):
            marker_exec(f"th-after-the-kill-{i}")

        def counted() -> int:
            downstream = daemon.get_json("/v1/stats")["capture"]["downstream"]
            return int(downstream.get("exec", {}).get("evidence:worker", 0))

        wait_until(lambda: counted() >= 20, "the execs counted at evidence:worker")
        assert daemon.proc.poll() is None, "capture goes on"
        assert daemon.stop() == EXIT_EVIDENCE_LOST, daemon.log()
        assert "evidence worker" in daemon.log() and "Traceback" not in daemon.log()
        final = json.loads(stats_file.read_text())["downstream"]
        assert final["exec"]["evidence:worker"] >= 20
        assert not any(a[1:2] == ["th-after-the-kill-0"] for a in logged_argv(daemon.state))
        # The next start finds the log's unclean end and says so.
        daemon.start()
        assert daemon.stop() == 0, daemon.log()
        assert len(evidence(daemon.state, "capture.recovered.v1")) == 1
        result = verify(daemon.state)
        assert result.returncode == 0, result.stdout + result.stderr
