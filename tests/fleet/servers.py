"""Real nats-server and PostgreSQL for the fleet tests, on loopback, in temp dirs.

Both come from Debian (scripts/setup.sh installs them); the tests start
their own instances on free loopback ports and never touch a system
service. Each server can be stopped, killed and started again on the same
port and data directory, which is what the fault tests need.

PostgreSQL refuses to run as root, so the data directory belongs to the
``postgres`` user (Debian's package creates it) and ``initdb``/``pg_ctl``
run as that user through ``runuser``. Authentication is ``trust`` on
127.0.0.1 only: these are throwaway servers on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NATS_SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def require_servers() -> None:
    """Skip (fail under CI=true) unless nats-server and PostgreSQL are installed."""
    missing = [str(p) for p in (Path(NATS_SERVER), PG_BIN / "initdb") if not p.exists()]
    if not missing:
        return
    problem = f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"fleet test cannot run in CI: {problem}")
    pytest.skip(problem)


class NatsServer:
    """One nats-server with JetStream (``-js -sd DIR``) on a loopback port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.store_dir = root / "jetstream"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                NATS_SERVER,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_for_port(self.port, 10.0, "nats-server", self.process)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (the crash the fault tests want)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class PostgresServer:
    """One PostgreSQL cluster (initdb + pg_ctl as ``postgres``) on a loopback port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.data_dir = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.port = port or free_port()
        self.log_path = root / "postgres.log"
        self._initialised = False

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _as_postgres(self, *argv: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
            )

    def init(self) -> None:
        for path in (self.root, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        # Each parent must be traversable by postgres (pytest's tmp dirs are 0700).
        for parent in self.root.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-A", "trust",
            "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        self._initialised = True

    def start(self) -> None:
        if not self._initialised:
            self.init()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``: a crash without a checkpoint)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"
        )

    def create_database(self, name: str) -> str:
        """A fresh database on this server; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)
