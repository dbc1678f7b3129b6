"""Fixtures for the fleet tests: real nats-server and PostgreSQL (see servers.py).

``pg_server`` is one cluster for the whole session (initdb takes seconds);
each test gets a database of its own from ``pg_dsn``. Tests that stop the
database make a :class:`PostgresServer` of their own with ``pg_own``.
``nats`` is a fresh nats-server per test (it starts in ~50 ms).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.servers import NatsServer, PostgresServer, require_servers

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    require_servers()
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop("immediate")


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the session's server."""
    return pg_server.create_database(f"fleet_test_{next(_databases)}")


@pytest.fixture
def pg_own(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, for tests that stop it."""
    require_servers()
    server = PostgresServer(tmp_path / "own-postgres")
    server.start()
    yield server
    server.stop("immediate")


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    require_servers()
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()
