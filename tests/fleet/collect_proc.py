"""Running the real ``tracehound collect`` for the tests, and reading what it stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]


def write_config(
    path: Path,
    nats_url: str,
    dsn: str,
    extra: str = "",
    evidence: str = "",
    batch_size: int = 500,
    gap_grace_s: float = 1.0,
    ack_wait_s: float = 2.0,
) -> Path:
    path.write_text(
        f'[collect]\nnats_url = "{nats_url}"\ndsn = "{dsn}"\nmetrics_listen = ""\n'
        f"batch_size = {batch_size}\nbatch_time_ms = 50\ngap_grace_s = {gap_grace_s}\n"
        f"ack_wait_s = {ack_wait_s}\n{extra}\n" + (f"[evidence]\n{evidence}\n" if evidence else "")
    )
    return path


class Collector:
    """One ``python -m agent collect`` child; its stderr kept for the asserts."""

    def __init__(self, config: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "collect", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.endswith(": collecting"):
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self._ready.wait(timeout), f"collector not ready: {self.lines}"
        assert self.proc.poll() is None, f"collector exited: {self.lines}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            status = -999  # did not stop: the assert shows the lines
        self._reader.join(timeout=5)
        return status


def query(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(conn.execute(sql.encode(), args or None).fetchall())


def wait_for(what: Callable[[], bool], timeout: float = 60.0, why: str = "") -> None:
    """:func:`tests.harness.wait_until`, a database not answering yet counting as not yet."""

    def check() -> bool:
        try:
            return what()
        except psycopg.OperationalError:
            return False

    wait_until(check, why, timeout)


def chain_rows(dsn: str, host: str) -> list[tuple[object, ...]]:
    return query(dsn, "SELECT seq, id, hash FROM chain WHERE host = %s ORDER BY seq", host)
