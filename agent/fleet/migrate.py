"""Apply :data:`agent.fleet.schema.MIGRATIONS` at the collector's start.

Each migration above the highest version in ``schema_migrations`` runs in
one transaction with its version row, under a session-level advisory
lock, so collectors starting together migrate once and a failed migration
leaves nothing half-done. A database whose schema is newer than this
collector knows is refused (it would write rows the schema no longer
means).
"""

from __future__ import annotations

from typing import Final

import psycopg

from agent.fleet.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATION_LOCK", "SchemaTooNewError", "migrate"]

MIGRATION_LOCK: Final = 0x7472616365686E64  # "tracehnd": the advisory lock's key

_TABLE: Final = (
    b"CREATE TABLE IF NOT EXISTS schema_migrations"
    b" (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)


class SchemaTooNewError(Exception):
    """The database was migrated by a newer collector."""


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[int]:
    """Apply the missing migrations; the versions applied (oldest first).

    ``conn`` is in autocommit mode: the session-level advisory lock is held
    across the migrations, each of which is its own transaction.
    """
    applied: list[int] = []
    await conn.execute(b"SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute(_TABLE)
        cursor = await conn.execute(b"SELECT coalesce(max(version), 0) FROM schema_migrations")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0  # type: ignore[index]
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the database's schema is version {current}, this collector knows up to "
                f"{SCHEMA_VERSION}: upgrade the collector"
            )
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(sql.encode())
                await conn.execute(
                    b"INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                )
            applied.append(version)
    finally:
        await conn.execute(b"SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied
