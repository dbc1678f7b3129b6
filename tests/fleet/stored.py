"""A collector's database, filled by hand from real logs: for the ``fleet`` command tests.

The collector is not what is under test here, so rows are written as the
schema's docstring (:mod:`agent.fleet.schema`) says the collector writes
them: the migrations applied, one ``chain`` row and one ``records`` row per
line of a real log written by the real :class:`EvidenceStore` (``line`` the
line's exact bytes, without its newline), the query columns from
:func:`agent.fleet.columns.columns_of`, and the host's ``hosts`` row (its
head, stored tip, last seen).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from agent.evidence.chain import ChainRecord
from agent.evidence.keys import create_key
from agent.evidence.layout import CHECKPOINT, segment_files
from agent.evidence.mapper import Mapper
from agent.evidence.store import EvidenceStore
from agent.fleet.columns import columns_of
from agent.fleet.pushdown import ns_to_datetime
from agent.fleet.schema import MIGRATIONS
from agent.fleet.wire import record_id
from agent.redact import Redactor
from tests.evidence.golden_events import ANCHOR, CGROUPS, CLOCK_NS, VERSION, golden_events

RECEIVED = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
"""The ``time`` of a store record (it has no CloudEvent time): when it came."""


def write_log(state_dir: Path, host: str, *, events: int = 120, seed: int = 1) -> str:
    """A sealed log of ``host`` in ``state_dir`` from the golden capture's
    generator (hostile text included); returns its verification key text."""
    key = create_key(state_dir)
    mapper = Mapper(
        host=host,
        anchor=ANCHOR,
        redactor=Redactor.builtin(),
        version=VERSION,
        cgroups=CGROUPS.__getitem__,
    )
    store = EvidenceStore(state_dir, clock=lambda: CLOCK_NS, checkpoint_every_records=25)
    records = [mapper.anchor_record()]
    records += [mapper.map(event) for event in golden_events(events, seed)]
    for record in records:
        store.append_body(record.type, record.body)
    store.close()
    return key


def log_lines(state_dir: Path) -> list[bytes]:
    """The log's lines, without newlines, in order."""
    return [
        line
        for _, path in segment_files(state_dir / "segments")
        for line in path.read_bytes().splitlines()
    ]


def migrate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE schema_migrations (version int PRIMARY KEY)")
        for version, sql in MIGRATIONS:
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (%s)", (version,))


def store_lines(
    dsn: str, host: str, lines: list[bytes], *, last_seen: dt.datetime, head: ChainRecord | None
) -> list[ChainRecord]:
    """Insert ``lines`` of ``host`` as the collector would; ``head`` is what
    the host last published (None: no head yet). Returns the records."""
    records = [msgspec.json.decode(line, type=ChainRecord) for line in lines]
    with psycopg.connect(dsn) as conn:
        epoch = None
        for record, line in zip(records, lines, strict=True):
            body: Any = record.body
            is_event = isinstance(body, dict) and record.type.startswith("dev.tracehound.")
            columns = columns_of(body) if is_event else None
            when = RECEIVED
            if columns is not None and columns.time_ns is not None:
                when = ns_to_datetime(columns.time_ns)
            conn.execute(
                "INSERT INTO chain (host, seq, id, hash, prev, type, time)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (host, record.seq, record_id(record), record.hash, record.prev, record.type, when),
            )
            conn.execute(
                "INSERT INTO records (host, seq, type, time, pid, comm, exe, path, uid,"
                " container, remote, line) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    host, record.seq, record.type, when,
                    *(
                        (columns.pid, columns.comm, columns.exe, columns.path, columns.uid,
                         columns.container, columns.remote)
                        if columns is not None else (None,) * 7
                    ),
                    line,
                ),
            )  # fmt: skip
            if record.type == CHECKPOINT:
                epoch = body["epoch"]
        tip = records[-1] if records else None
        conn.execute(
            "INSERT INTO hosts (host, last_seen, head_seq, head_hash, seal_epoch,"
            " stored_seq, stored_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                host, last_seen,
                head.seq if head else None, head.hash if head else None, epoch,
                tip.seq if tip else None, tip.hash if tip else None,
            ),
        )  # fmt: skip
    return records


def add_chain_event(dsn: str, host: str, seq: int, kind: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO chain_events (host, seq, kind, detail) VALUES (%s, %s, %s, %s)",
            (host, seq, kind, f"test: {kind} at {seq}"),
        )
