"""``records`` partitions: one per UTC day, made ahead, dropped for retention.

The pure half (:func:`partition_name`, :func:`create_sql`, :func:`to_drop`)
says what SQL to run for a date; :func:`maintain` runs it on a connection.
A record whose time falls outside the made partitions (the host chose its
time) lands in ``records_default``; a day's partition cannot be made while
the default one holds rows of that day, so :func:`maintain` makes days
before they are due (today and tomorrow, at start and every hour).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import psycopg

__all__ = ["create_sql", "days_ahead", "drop_sql", "maintain", "partition_name", "to_drop"]

_NAME: Final = re.compile(r"records_(\d{4})(\d{2})(\d{2})")
_LIST: Final = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'"
)


def partition_name(day: datetime.date) -> str:
    return f"records_{day:%Y%m%d}"


def create_sql(day: datetime.date) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ``day``'s partition: [day, day + 1) UTC."""
    after = day + datetime.timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF records"
        f" FOR VALUES FROM ('{day.isoformat()} 00:00:00+00') TO ('{after.isoformat()} 00:00:00+00')"
    )


def drop_sql(name: str) -> str:
    return f"DROP TABLE IF EXISTS {name}"


def days_ahead(now: datetime.datetime, ahead: int = 1) -> list[datetime.date]:
    """Today (UTC) and the next ``ahead`` days."""
    today = now.astimezone(datetime.UTC).date()
    return [today + datetime.timedelta(days=n) for n in range(ahead + 1)]


def to_drop(names: Iterable[str], now: datetime.datetime, retain_days: int) -> list[str]:
    """The day partitions among ``names`` wholly older than ``retain_days``
    days before ``now`` (0: none); other names (the default one) are kept."""
    if retain_days <= 0:
        return []
    cutoff = now.astimezone(datetime.UTC).date() - datetime.timedelta(days=retain_days)
    out: list[str] = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match is None:
            continue
        try:
            day = datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            continue
        if day < cutoff:
            out.append(name)
    return sorted(out)


async def maintain(
    conn: psycopg.AsyncConnection[object], now: datetime.datetime, retain_days: int
) -> tuple[list[str], list[str]]:
    """Make today's and tomorrow's partitions and drop expired ones; the names
    made (or already there) and dropped. Each statement commits on its own."""
    import psycopg

    made = []
    for day in days_ahead(now):
        try:
            async with conn.transaction():
                await conn.execute(create_sql(day).encode())
        except psycopg.errors.CheckViolation:
            # records_default already holds rows of that day: they stay there
            # (queries read every partition); the day gets no partition.
            continue
        made.append(partition_name(day))
    cursor = await conn.execute(_LIST.encode())
    names = [str(row[0]) for row in await cursor.fetchall()]  # type: ignore[index]
    dropped = to_drop(names, now, retain_days)
    for name in dropped:
        async with conn.transaction():
            await conn.execute(drop_sql(name).encode())
    return made, dropped
