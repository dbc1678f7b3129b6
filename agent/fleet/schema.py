"""The collector's PostgreSQL schema, as versioned migrations applied at start.

One definition for the writer (the collector) and the readers (``fleet``
commands). :data:`MIGRATIONS` is append-only: a migration, once released, is
never edited; a change is a new one. The collector applies, in one
transaction each, every migration whose version is above the highest in
``schema_migrations``, holding an advisory lock so that several collectors
starting together migrate once.

Tables:

- ``chain``: one row per stored record, the chain's skeleton: (host, seq)
  primary key, (host, id) unique, its hash and prev, type and time. It is
  small (about 150 bytes a row), not partitioned, and kept when old records
  are dropped, so a chain can be checked across a retention cut.
  Deduplication happens here: the batch insert is ``INSERT INTO chain ...
  ON CONFLICT DO NOTHING RETURNING`` and only the rows it returns go on to
  ``records``.
- ``records``: the record itself (the exact line the host committed, as
  bytes) plus the columns ``fleet events`` filters on, partitioned by range
  of ``time`` (one partition per UTC day, made ahead by the collector,
  dropped for retention; a default partition catches times outside the
  made ones, since a record's time is the host's to choose). ``line`` is
  what was received unless ``altered`` says what the collector changed
  (never-store fields stripped, a secret the redaction pass caught): the
  hash was checked on the bytes as received, before any change, and stays
  in ``chain``.
- ``hosts``: per host, the last seen time, the newest head it published, the
  stored tip (highest seq with every record before it present and linked),
  the gap watch (``checked_seq``: every seq up to it stored or reported
  missing; ``gap_seq``/``gap_since``: the first missing seq after it and
  since when), the last verified seal (``seal_epoch``/``seal_seq``/
  ``seal_mac``), and counts of chain breaks.
- ``chain_events``: what the off-host check found (gap, fork, link,
  rollback, seal): host, seq, kind, detail, when.
- ``dead_letters``: messages that are not a tracehound chain record, with
  the reason, subject and (bounded) raw bytes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        """
        CREATE TABLE hosts (
            host          text PRIMARY KEY,
            first_seen    timestamptz NOT NULL DEFAULT now(),
            last_seen     timestamptz NOT NULL DEFAULT now(),
            head_seq      bigint,
            head_hash     text,
            head_time     timestamptz,
            seal_epoch    bigint,
            seal_seq      bigint,
            seal_mac      text,
            stored_seq    bigint,
            stored_hash   text,
            checked_seq   bigint,
            gap_seq       bigint,
            gap_since     timestamptz,
            breaks        bigint NOT NULL DEFAULT 0
        );
        CREATE TABLE chain (
            host   text   NOT NULL,
            seq    bigint NOT NULL,
            id     text   NOT NULL,
            hash   text   NOT NULL,
            prev   text   NOT NULL,
            type   text   NOT NULL,
            time   timestamptz NOT NULL,
            PRIMARY KEY (host, seq),
            UNIQUE (host, id)
        );
        CREATE TABLE records (
            host      text   NOT NULL,
            seq       bigint NOT NULL,
            type      text   NOT NULL,
            time      timestamptz NOT NULL,
            pid       bigint,
            comm      text,
            exe       text,
            path      text,
            uid       bigint,
            container text,
            remote    text,
            altered   text,
            line      bytea  NOT NULL
        ) PARTITION BY RANGE (time);
        CREATE TABLE records_default PARTITION OF records DEFAULT;
        CREATE INDEX records_host_time ON records (host, time);
        CREATE INDEX records_host_seq ON records (host, seq);
        CREATE TABLE chain_events (
            id       bigserial PRIMARY KEY,
            host     text NOT NULL,
            seq      bigint,
            kind     text NOT NULL,
            detail   text NOT NULL,
            found_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX chain_events_host ON chain_events (host, seq);
        CREATE TABLE dead_letters (
            id          bigserial PRIMARY KEY,
            subject     text NOT NULL,
            reason      text NOT NULL,
            data        bytea NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
)
"""(version, SQL) in version order."""

SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
