"""A small test publisher: a real EvidenceStore log, published line by line to JetStream.

Until the agent's publisher is merged the collector tests publish with
this; it stays for the tampering tests, since it can alter a record on its
way (``alter``) or send a message of its own (``publish_raw``).

Each line goes to ``evidence_subject(prefix, host, record.type)`` with the
``Nats-Msg-Id`` of :func:`agent.fleet.wire.message_id` (plus ``id_suffix``,
to publish the same records again past the duplicate window), and the
PubAck is awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import blake3
import msgspec
import nats

from agent.evidence.chain import ChainRecord
from agent.evidence.layout import segment_files
from agent.evidence.store import EvidenceStore
from agent.fleet.wire import MSG_ID_HEADER, evidence_subject, message_id

EXEC = "dev.tracehound.process.exec.v1"
OPEN = "dev.tracehound.file.open.v1"


def event(
    host: str, n: int, *, argv: Sequence[str] | None = None, salt: str = ""
) -> tuple[str, dict[str, object]]:
    """A CloudEvent-shaped record body, an exec or a file open by turns."""
    kind = EXEC if n % 2 == 0 else OPEN
    data: dict[str, object] = {"pid": 1000 + n, "comm": f"proc{n % 7}", "uid": n % 3}
    if kind == EXEC:
        data |= {"argv": list(argv or ["/bin/true", str(n)]), "exe": "/usr/bin/true"}
    else:
        data |= {"path": f"rel/{n}", "abs_path": f"/srv/{host}/{n}"}
    return kind, {
        "id": blake3.blake3(f"{host}:{n}:{salt}".encode()).hexdigest()[:32],
        "source": f"tracehound://{host}",
        "specversion": "1.0",
        "time": f"2026-12-01T10:{(n // 60) % 60:02d}:{n % 60:02d}.000000123Z",
        "type": kind,
        "data": data,
    }


def write_log(
    state_dir: Path,
    host: str,
    count: int,
    *,
    start: int = 0,
    salt: str = "",
    argv: Sequence[str] | None = None,
    checkpoint_every: int = 0,
) -> list[bytes]:
    """Append ``count`` records with the real store; return every line of the log
    (sealed, with a checkpoint every ``checkpoint_every`` records, if the state
    directory has a key: :func:`agent.evidence.keys.create_key`)."""
    store = EvidenceStore(state_dir, checkpoint_every_records=checkpoint_every)
    try:
        for n in range(start, start + count):
            store.append(*event(host, n, salt=salt, argv=argv))
        store.commit()
    finally:
        store.close()
    return read_lines(state_dir)


def read_lines(state_dir: Path) -> list[bytes]:
    lines: list[bytes] = []
    for _, path in segment_files(state_dir / "segments"):
        lines.extend(line for line in path.read_bytes().splitlines() if line)
    return lines


def record_of(line: bytes) -> ChainRecord:
    return msgspec.json.decode(line, type=ChainRecord)


async def publish_lines(
    url: str,
    host: str,
    lines: Sequence[bytes],
    *,
    prefix: str = "tracehound",
    id_suffix: str = "",
    alter: Callable[[ChainRecord, bytes], bytes] | None = None,
    window: int = 256,
) -> int:
    """Publish ``lines`` in order (``window`` awaiting their PubAck at once); the count acked."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    acked = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for line in lines:
            record = record_of(line)
            data = alter(record, line) if alter is not None else line
            pending.append(
                asyncio.ensure_future(
                    js.publish(
                        evidence_subject(prefix, host, record.type),
                        data,
                        headers={MSG_ID_HEADER: message_id(host, record) + id_suffix},
                    )
                )
            )
            if len(pending) >= window:
                await asyncio.gather(*pending)
                acked += len(pending)
                pending = []
        await asyncio.gather(*pending)
        acked += len(pending)
    finally:
        await nc.close()
    return acked


async def publish_raw(url: str, subject: str, data: bytes, msg_id: str | None = None) -> None:
    """One message of the test's own making, PubAck awaited."""
    nc = await nats.connect(url)
    try:
        headers = {MSG_ID_HEADER: msg_id} if msg_id else None
        await nc.jetstream().publish(subject, data, headers=headers)
    finally:
        await nc.close()
