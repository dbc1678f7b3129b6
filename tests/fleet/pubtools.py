"""Helpers for the publisher tests: a real log, a real publisher process, the stream's contents."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import nats as nats_client
from nats.js.api import AckPolicy, ConsumerConfig

from agent.evidence.chain import ChainRecord
from agent.evidence.layout import segment_files
from agent.evidence.store import EvidenceStore
from agent.fleet.wire import (
    MSG_ID_HEADER,
    evidence_subject,
    evidence_wildcard,
    heads_wildcard,
    message_id,
)
from tests.harness import wait_until as wait_for  # noqa: F401 (the suite's one poll, for these tests)

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "th"
STREAM = "TEST"


def fleet_config(path: Path, url: str, *, host: str = "host-a", extra: str = "") -> Path:
    path.write_text(
        f"""
[fleet]
enabled = true
nats_url = "{url}"
host = "{host}"
subject_prefix = "{PREFIX}"
heads_interval_s = 0.5
max_in_flight = 64
{extra}
"""
    )
    return path


def write_log(state: Path, n: int, *, start: int = 0, **options: Any) -> None:
    """Append ``n`` note records with the real store (opened, written, closed)."""
    settings: dict[str, Any] = {"checkpoint_every_records": 100, "fsync": "never"}
    settings.update(options)
    with EvidenceStore(state, **settings) as store:
        for i in range(start, start + n):
            store.append("note", {"n": i, "msg": f"hello {i}"})
            if i % 500 == 499:
                store.commit()
        store.commit()


def log_lines(state: Path) -> list[bytes]:
    lines: list[bytes] = []
    for _, path in segment_files(state / "segments"):
        lines.extend(path.read_bytes().splitlines())
    return lines


def expected(state: Path, host: str = "host-a") -> list[tuple[str, str, bytes]]:
    """(subject, Nats-Msg-Id, payload) of every record of the log, in seq order."""
    out = []
    for line in log_lines(state):
        record = msgspec.json.decode(line, type=ChainRecord)
        out.append((evidence_subject(PREFIX, host, record.type), message_id(host, record), line))
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _make_stream(url: str) -> None:
    nc = await nats_client.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=STREAM,
            subjects=[evidence_wildcard(PREFIX), heads_wildcard(PREFIX)],
            duplicate_window=120.0,
        )
    finally:
        await nc.close()


def make_stream(url: str) -> None:
    run(_make_stream(url))


async def _stream_all(url: str) -> list[tuple[str, dict[str, str], bytes]]:
    """Every message of the stream in stream order, read by an ephemeral
    pull consumer in batches (a get per message is slow on 20,000)."""
    nc = await nats_client.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        total = int(info.state.messages)
        out: list[tuple[str, dict[str, str], bytes]] = []
        if total == 0:
            return out
        sub = await js.pull_subscribe(
            f"{PREFIX}.>",
            durable=None,
            stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE),  # read only: nothing to ack
        )
        try:
            while len(out) < total:
                for msg in await sub.fetch(min(1000, total - len(out)), timeout=5):
                    out.append((msg.subject, dict(msg.headers or {}), msg.data))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def _stream_messages(url: str) -> list[tuple[str, str, bytes]]:
    return [
        (subject, headers.get(MSG_ID_HEADER, ""), data)
        for subject, headers, data in await _stream_all(url)
        if ".heads." not in subject
    ]


def stream_messages(url: str) -> list[tuple[str, str, bytes]]:
    """The evidence messages the stream holds, in stream order (heads left out)."""
    return run(_stream_messages(url))


async def _stream_heads(url: str) -> list[dict[str, Any]]:
    return [
        {"subject": subject, **json.loads(data)}
        for subject, _, data in await _stream_all(url)
        if ".heads." in subject
    ]


def stream_heads(url: str) -> list[dict[str, Any]]:
    return run(_stream_heads(url))


def stream_count(url: str) -> int:
    async def count() -> int:
        nc = await nats_client.connect(url)
        try:
            info = await nc.jetstream().stream_info(STREAM)
            return int(info.state.messages)
        finally:
            await nc.close()

    try:
        return run(count())
    except Exception:
        return -1


class PublisherProcess:
    """``python -m agent.fleet.publisher --status`` over a state directory."""

    def __init__(self, config: Path, state: Path, stderr: Path) -> None:
        self.config = config
        self.state = state
        self.stderr_path = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self.statuses: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.fleet.publisher", "--config", str(self.config),
                 "--state-dir", str(self.state), "--status"],
                stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env,
            )  # fmt: skip
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.statuses.append(json.loads(line))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def last(self) -> dict[str, Any]:
        return self.statuses[-1] if self.statuses else {}

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")
