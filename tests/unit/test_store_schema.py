"""One schema on two engines: SQLite's migrations and PostgreSQL's give the same tables
and columns at the same version; PostgreSQL's run once however many nodes start at once,
and a database from a newer release is refused on both."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from lambdad.store.migrations import SCHEMA_VERSION, migrate
from lambdad.store.pg_migrations import PG_MIGRATIONS, pg_migrate
from tests.support.postgres import Postgres

Columns = dict[str, list[tuple[str, bool]]]  # table: [(column, NOT NULL)] in order


def sqlite_columns(path: Path) -> Columns:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        # (cid, name, type, notnull, default, pk): a primary key is never NULL
        return {t: [(r[1], bool(r[3] or r[5])) for r in db.execute(f"PRAGMA table_info({t})")]
                for t in tables}


def pg_columns(url: str) -> Columns:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name, column_name, is_nullable = 'NO' FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> 'lambda_schema' "
            "ORDER BY table_name, ordinal_position").fetchall()
    found: Columns = {}
    for table, column, not_null in rows:
        found.setdefault(table, []).append((column, not_null))
    return found


def test_both_engines_have_the_same_tables_and_columns(tmp_path: Path,
                                                       postgres: Postgres) -> None:
    migrate(tmp_path / "lambda.db")
    url = postgres.url(postgres.create_database(migrated=False))
    assert pg_migrate(url) == 0
    on_sqlite, on_pg = sqlite_columns(tmp_path / "lambda.db"), pg_columns(url)
    assert on_sqlite and on_pg == on_sqlite
    assert PG_MIGRATIONS[-1][0] == SCHEMA_VERSION  # both lists end at the same version
    with psycopg.connect(url) as db:
        assert db.execute("SELECT version FROM lambda_schema").fetchone() == (SCHEMA_VERSION,)


def test_four_nodes_migrating_at_once_apply_each_migration_once(postgres: Postgres) -> None:
    """Four migrators on one empty database: exactly one finds version 0 and migrates,
    the others wait for the lock and find it done (a second run of a migration would fail
    on its CREATE TABLE)."""
    url = postgres.url(postgres.create_database(migrated=False))
    start = threading.Barrier(4)
    found: list[int] = []
    failures: list[BaseException] = []

    def node() -> None:
        start.wait()
        try:
            found.append(pg_migrate(url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert sorted(found) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*), max(version) FROM lambda_schema").fetchone() == (
            1, SCHEMA_VERSION)


def test_a_database_from_a_newer_release_is_refused_without_its_password(
        postgres: Postgres) -> None:
    name = postgres.create_database()
    postgres.psql(name, f"UPDATE lambda_schema SET version = {SCHEMA_VERSION + 1}")
    url = postgres.url(name, password=True)
    with pytest.raises(RuntimeError, match="newer than this lambdad") as caught:
        pg_migrate(url)
    from tests.support.postgres import PASSWORD

    assert PASSWORD not in str(caught.value) and "***" in str(caught.value)
