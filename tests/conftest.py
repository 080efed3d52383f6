"""Fixtures every test folder may use: the private PostgreSQL server and the store's two
engines (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import Postgres
from tests.support.store import StoreBackend


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One private PostgreSQL server for the session (started at first use). Missing
    binaries fail here with "run make postgres"; never a skip."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """Runs a store test on each engine: SQLite in tmp_path, and a fresh PostgreSQL
    database copied from the migrated template."""
    if request.param == "sqlite":
        yield StoreBackend("sqlite", tmp_path / "lambda.db")
        return
    server: Postgres = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield StoreBackend("postgresql", server.url(name), server, name)
    finally:
        server.drop_database(name)
