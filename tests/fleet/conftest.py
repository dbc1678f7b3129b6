"""Fixtures for the fleet tests: real nats-server and PostgreSQL (see servers.py).

``pg_server`` is one cluster for the whole session (initdb takes seconds);
each test gets a database of its own from ``pg_dsn``. Tests that stop the
database make a :class:`PostgresServer` of their own with ``pg_own``.
``nats`` is a fresh nats-server per test (it starts in ~50 ms).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.servers import NatsServer, PostgresServer, require_servers

_databases = itertools.count()


def _own_root() -> Path:
    """A directory for one cluster outside pytest's tree: the postgres user
    must traverse every parent, and another pytest session on the host
    resets /tmp/pytest-of-root to 0700 when it starts."""
    root = Path(tempfile.mkdtemp(prefix="tracehound-pg-", dir="/var/tmp"))
    root.chmod(0o711)
    return root


@contextlib.contextmanager
def _cluster() -> Iterator[PostgresServer]:
    require_servers()
    root = _own_root()
    server = PostgresServer(root / "cluster")
    try:
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with _cluster() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the session's server."""
    return pg_server.create_database(f"fleet_test_{next(_databases)}")


@pytest.fixture
def pg_own() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, for tests that stop it."""
    with _cluster() as server:
        yield server


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    require_servers()
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()
