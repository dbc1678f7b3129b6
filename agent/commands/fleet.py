"""``tracehound fleet hosts|events|verify``: ask the collector's PostgreSQL database.

The database is the one ``tracehound collect`` writes (schema:
:mod:`agent.fleet.schema`), named by ``--dsn`` or by ``[collect].dsn`` of
``--config FILE``. Everything in it came from hosts, so every host name
and record text printed goes through the same terminal safety as
``tracehound events`` (:mod:`agent.safetext`).

- ``hosts``: per host, last seen, the head it published (seq, hash prefix,
  seal epoch), the stored tip, the lag between them (records, and seconds
  since it was last heard from) and the chain events found for it.
- ``events``: the single-host filters that need no process history
  (``--tree`` and ``--exe`` need the host's whole log: ask the host), pushed
  down to SQL (:mod:`agent.fleet.pushdown`) and then checked exactly by
  :func:`agent.query.match.matches` on each decoded line; in order of
  time, then host, then seq, read through a server-side cursor (bounded
  memory whatever the answer's size).
- ``verify --host H``: H's chain re-verified from the rows
  (:mod:`agent.fleet.stored_verify`); exit 0 intact, 1 broken (one line:
  where and why), 2 bad input or a database that cannot be asked.

Errors are one line: a DSN that does not parse or a server that does not
answer (``hosts``/``events`` exit 1, ``verify`` 2), a database without the
fleet schema. The DSN is never printed (it may hold a password); libpq's
own message names the host and port.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from agent.commands.arguments import bounded_int
from agent.commands.client import _quiet_pipe
from agent.commands.evidence import key_argument
from agent.commands.query import add_filter_options, filter_from_args, use_colour
from agent.config import load_config
from agent.errors import RunError, UsageError
from agent.fleet.pushdown import conditions
from agent.fleet.stored_verify import StoredChainCheck, StoredRow
from agent.limits import MAX_SEQ
from agent.query.compact import compact_line
from agent.query.filter import EventFilter
from agent.query.match import matches
from agent.safetext import escape_text, terminal_safe_json

__all__ = ["add_parser"]

CONNECT_TIMEOUT_S: Final = 10
#: Rows a server-side cursor sends per round trip.
ITER_ROWS: Final = 1000
HASH_SHOWN: Final = 12


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", metavar="DSN",
                        help="the collector's PostgreSQL (libpq string or postgresql:// URL)")  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="use [collect].dsn of this file")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet", help="ask the fleet's database: hosts, events, verify a host's chain"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    hosts = verbs.add_parser("hosts", help="every host: last seen, head, stored tip, lag, breaks")
    hosts.add_argument("--format", choices=("text", "json"), default="text",
                       help="text: a table (default); json: one document")  # fmt: skip
    _connection_options(hosts)
    hosts.set_defaults(handler=_quiet_pipe(_hosts))
    events = verbs.add_parser("events", help="stored records of every host that match the filters")
    events.add_argument("--host", action="append", metavar="HOST",
                        help="only this host (repeat for several)")  # fmt: skip
    add_filter_options(events)
    events.add_argument("--format", choices=("json", "compact"), default="json",
                        help="json: the CloudEvents as logged, one a line (default); compact:"
                             " the host, then one readable line each")  # fmt: skip
    events.add_argument("--limit", type=bounded_int(1, MAX_SEQ), metavar="N",
                        help=f"at most N records, 1 to {MAX_SEQ} (default: all that match)")  # fmt: skip
    _connection_options(events)
    events.set_defaults(handler=_quiet_pipe(_events))
    verify = verbs.add_parser("verify", help="re-verify one host's chain from the database")
    verify.add_argument("--host", required=True, metavar="HOST", help="the host to verify")
    verify.add_argument("--key", metavar="KEY",
                        help="the host's verification key (thk1-...) or a file holding it:"
                             " the seals are checked too")  # fmt: skip
    _connection_options(verify)
    verify.set_defaults(handler=_quiet_pipe(_verify))


# --- the database --------------------------------------------------------------


def _dsn(args: argparse.Namespace) -> str:
    if args.dsn is not None:
        if not args.dsn.strip():
            raise UsageError("--dsn: expected a PostgreSQL connection string, got an empty value")
        return str(args.dsn)
    if args.config is None:
        raise UsageError("fleet: expected --dsn DSN or --config FILE (whose [collect].dsn is used)")
    dsn = load_config(Path(args.config)).collect.dsn  # ConfigError: one line, exit 2
    if not dsn:
        raise UsageError("--config: the file sets no collect.dsn: give --dsn")
    return dsn


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return escape_text(text[0]) if text else type(err).__name__


@contextlib.contextmanager
def _database(args: argparse.Namespace, exit_status: int = 1) -> Iterator[Any]:
    """A read-only connection; any database error as one line (``exit_status``)."""
    import psycopg

    dsn = _dsn(args)
    try:
        conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as err:
        raise RunError(
            f"fleet: cannot connect to PostgreSQL: {_first_line(err)}", exit_status
        ) from None
    try:
        with conn:
            conn.read_only = True
            yield conn
    except psycopg.errors.UndefinedTable:
        raise RunError(
            "fleet: the database has no fleet schema (tables hosts, chain, records): is it"
            " the one tracehound collect writes (collect.dsn)?",
            exit_status,
        ) from None
    except psycopg.Error as err:
        raise RunError(f"fleet: the database failed: {_first_line(err)}", exit_status) from None


def _rfc3339(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- hosts -----------------------------------------------------------------------


class HostRow(msgspec.Struct, frozen=True):
    """One line of ``fleet hosts`` (its JSON form too)."""

    host: str
    last_seen: str | None
    head_seq: int | None
    head_hash: str | None
    seal_epoch: int | None
    stored_seq: int | None
    stored_hash: str | None
    lag_records: int | None
    lag_seconds: float | None
    breaks: int


_HOSTS_SQL: Final = """
    SELECT h.host, h.last_seen, h.head_seq, h.head_hash, h.seal_epoch,
           h.stored_seq, h.stored_hash,
           EXTRACT(EPOCH FROM (now() - h.last_seen))::float8,
           (SELECT count(*) FROM chain_events e WHERE e.host = h.host)
    FROM hosts h ORDER BY h.host
"""


def host_rows(conn: Any) -> list[HostRow]:
    """Every host's row, by name."""
    out: list[HostRow] = []
    for (
        host,
        seen,
        head_seq,
        head_hash,
        epoch,
        stored_seq,
        stored_hash,
        age,
        breaks,
    ) in conn.execute(_HOSTS_SQL).fetchall():
        lag = head_seq - stored_seq if head_seq is not None and stored_seq is not None else None
        if lag is None and head_seq is not None:
            lag = head_seq + 1  # nothing stored: every record up to the head is missing
        out.append(
            HostRow(
                host=host, last_seen=_rfc3339(seen), head_seq=head_seq, head_hash=head_hash,
                seal_epoch=epoch, stored_seq=stored_seq, stored_hash=stored_hash,
                lag_records=lag, lag_seconds=None if age is None else round(max(age, 0.0), 3),
                breaks=int(breaks),
            )
        )  # fmt: skip
    return out


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render_hosts(rows: list[HostRow]) -> str:
    """The text table (host names escaped: one token each)."""
    header = ("HOST", "LAST SEEN", "HEAD SEQ", "HEAD HASH", "EPOCH", "STORED", "LAG REC",
              "LAG S", "BREAKS")  # fmt: skip
    table = [header] + [
        (
            escape_text(row.host),
            _cell(row.last_seen and row.last_seen[:23] + "Z"),
            _cell(row.head_seq),
            _cell(row.head_hash and row.head_hash[:HASH_SHOWN]),
            _cell(row.seal_epoch),
            _cell(row.stored_seq),
            _cell(row.lag_records),
            _cell(None if row.lag_seconds is None else f"{row.lag_seconds:.1f}"),
            str(row.breaks),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in table
    )


def _hosts(args: argparse.Namespace) -> int:
    with _database(args) as conn:
        rows = host_rows(conn)
    if args.format == "json":
        sys.stdout.buffer.write(terminal_safe_json(msgspec.json.encode({"hosts": rows})) + b"\n")
    else:
        sys.stdout.write(render_hosts(rows))
    sys.stdout.flush()
    return 0


# --- events ------------------------------------------------------------------------


class _Stored(msgspec.Struct):
    body: msgspec.Raw


_STORED: Final = msgspec.json.Decoder(_Stored)


def events_filter(args: argparse.Namespace) -> tuple[EventFilter, tuple[str, ...]]:
    """The filter and hosts ``fleet events`` was asked for (checked before
    any connection: a bad option is one line and exit 2)."""
    for name in ("tree", "exe"):
        if getattr(args, name) is not None:
            raise UsageError(
                f"--{name}: not answered by fleet events (it follows processes through a host's"
                " whole log): ask that host with tracehound events"
            )
    flt = filter_from_args(args)
    hosts = tuple(args.host or ())
    for host in hosts:
        if not host or "\x00" in host:
            raise UsageError("--host: expected a host name, got an empty one or one with NUL")
    return flt, hosts


def stored_events(
    conn: Any, flt: EventFilter, hosts: tuple[str, ...]
) -> Iterator[tuple[str, bytes, Any]]:
    """``(host, raw CloudEvent, decoded CloudEvent)`` of every match, in order.

    Lines that do not decode are counted and said on stderr at the end.
    """
    where, params = conditions(flt, hosts)
    undecodable = 0
    with conn.transaction(), conn.cursor(name="fleet_events") as cursor:
        cursor.itersize = ITER_ROWS
        cursor.execute(
            f"SELECT host, line FROM records WHERE {where} ORDER BY time, host, seq", params
        )
        for host, line in cursor:
            try:
                raw = _STORED.decode(line).body
                event = msgspec.json.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                undecodable += 1
                continue
            if isinstance(event, dict) and matches(flt, event, None):
                yield host, bytes(raw), event
    if undecodable:
        print(f"tracehound: fleet events: {undecodable} stored lines are not records (skipped)",
              file=sys.stderr)  # fmt: skip


def _events(args: argparse.Namespace) -> int:
    flt, hosts = events_filter(args)
    colour = use_colour()
    out = sys.stdout.buffer
    left = args.limit
    with _database(args) as conn:
        for host, raw, event in stored_events(conn, flt, hosts):
            if args.format == "json":
                out.write(terminal_safe_json(raw) + b"\n")
            else:
                line = f"{escape_text(host)}  {compact_line(event, colour=colour)}"
                out.write(line.encode("utf-8", "surrogateescape") + b"\n")
            if left is not None:
                left -= 1
                if left == 0:
                    break
    out.flush()
    return 0


# --- verify ------------------------------------------------------------------------

_CHAIN_SQL: Final = """
    SELECT c.seq, c.hash, c.prev, r.line, r.altered
    FROM chain c LEFT JOIN records r ON r.host = c.host AND r.seq = c.seq
    WHERE c.host = %s ORDER BY c.seq
"""


def _verify(args: argparse.Namespace) -> int:
    key = key_argument(args.key)
    host = args.host
    if not host or "\x00" in host:
        raise UsageError("--host: expected a host name, got an empty one or one with NUL")
    with _database(args, exit_status=2) as conn:
        found = conn.execute(
            "SELECT head_seq, head_hash FROM hosts WHERE host = %s", (host,)
        ).fetchone()
        if found is None:
            raise UsageError(f"--host: no host {escape_text(host)} in the database")
        head_seq, head_hash = found
        published = (head_seq, head_hash) if head_seq is not None and head_hash else None
        check = StoredChainCheck(key=key, published_head=published)
        with conn.transaction(), conn.cursor(name="fleet_verify") as cursor:
            cursor.itersize = ITER_ROWS
            cursor.execute(_CHAIN_SQL, (host,))
            for seq, digest, prev, line, altered in cursor:
                row = StoredRow(seq, digest, prev, None if line is None else bytes(line), altered)
                if check.feed(row) is not None:
                    break
        report = check.finish()
    print(report.line(escape_text(host)))
    return 0 if report.ok else 1
