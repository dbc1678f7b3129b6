"""A real ``tracehound run`` for end-to-end tests: temporary config, state
directory and API socket, asked with real curl.

Each test module that needs a daemon of its own (a state directory on a
tiny tmpfs, failpoints in its environment) makes one with :class:`Daemon`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from agent.config.schema import EVIDENCE_DIR_ENV
from tests.conftest import TRACEHOUND, require_kernel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    """One ``tracehound run``: :meth:`start`, ask it, :meth:`stop`."""

    def __init__(self, root: Path, *, state: Path | None = None) -> None:
        self.root = root
        # Under /run, not the 0700 pytest tree: unprivileged peers must be
        # able to reach the socket for its mode and group to be what decides.
        self.run_dir = Path(tempfile.mkdtemp(prefix="tracehound-test-", dir="/run"))
        self.run_dir.chmod(0o755)
        self.sock = self.run_dir / "api" / "api.sock"
        self.state = state if state is not None else root / "state"
        self.config = root / "tracehound.toml"
        self.port = free_port()
        self.stderr = root / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    #: The [api] settings besides the socket (a module may want others).
    api_settings = 'mode = "0666"\nidle_timeout_s = 5.0'

    def config_text(self, *, extra: str = "", extra_api: str = "") -> str:
        return f"""
[capture]
stats_interval = 0

[evidence]
enabled = true
state_dir = "{self.state}"
checkpoint_every = 50
{extra}
[api]
socket = "{self.sock}"
{self.api_settings}
{extra_api}
[metrics]
listen = "127.0.0.1:{self.port}"
"""

    def start(
        self,
        *args: str,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 90,
    ) -> None:
        self.config.write_text(config if config is not None else self.config_text())
        ready = self.root / "ready"
        ready.unlink(missing_ok=True)
        # A config without [evidence] must not reach /var/lib/tracehound.
        environ = {
            **os.environ,
            EVIDENCE_DIR_ENV: str(self.root / "default-evidence"),
            **(env or {}),
        }
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [*TRACEHOUND, "run", "--config", str(self.config), "--ready-file", str(ready),
                 "--no-seed", *args],
                stderr=err, env=environ,
            )  # fmt: skip
        proc = self.proc
        wait_until(lambda: ready.exists() or proc.poll() is not None, "the daemon", timeout)
        assert proc.poll() is None, self.log()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def curl(
        self, path: str, *args: str, user: tuple[int, int, int] | None = None, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """curl over the API socket; ``user`` (uid, gid, supplementary group)
        runs it as that peer."""
        command = ["curl", "-sS", "--unix-socket", str(self.sock), *args, f"http://localhost{path}"]
        if user is not None:
            uid, gid, group = user
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={group}",
                       *command]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def status(self, path: str) -> tuple[int, str]:
        """HTTP status and body of a GET."""
        result = self.curl(path, "-w", "\n%{http_code}")
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body

    def get_json(self, path: str) -> Any:
        result = self.curl(path, "--fail-with-body")
        assert result.returncode == 0, (path, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def metrics(self) -> str:
        result = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{self.port}/metrics"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        return result.stdout

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextlib.contextmanager
def own_daemon(root: Path) -> Iterator[Daemon]:
    """A daemon for one test (not started: the test starts it with its own
    options), closed afterwards. Skips (fails under CI) without a kernel."""
    require_kernel()
    daemon = Daemon(root)
    try:
        yield daemon
    finally:
        daemon.close()


def records(state: Path) -> Iterator[dict[str, Any]]:
    """Every chain record of a state directory's log, in order."""
    for segment in sorted((state / "segments").glob("*.ndjson")):
        for line in segment.read_bytes().splitlines():
            yield json.loads(line)


def evidence(state: Path, type_suffix: str) -> list[dict[str, Any]]:
    """The CloudEvents of one type (``capture.loss.v1``...) in the log."""
    return [r["body"] for r in records(state) if str(r["type"]).endswith(type_suffix)]
