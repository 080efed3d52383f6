"""The store on a real SQLite file: migrations, versions, deletes."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambdad.errors import NotFound
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.store import Store
from lambdad.store.migrations import SCHEMA_VERSION, migrate


def _version(name: str, number: int) -> FunctionVersion:
    return FunctionVersion(
        function=name, number=number, image=f"lambda-fn/{name}:v{number}",
        image_id=f"sha256:{number}", config=FunctionConfig(env={"K": "v"}),
        code_sha256="ab" * 32, code_size=123, created_at=datetime.now(UTC),
    )


def test_versions_and_delete(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "lambda.db")
        await store.open()
        try:
            assert await store.next_version_number("greet") == 1
            await store.add_version(_version("greet", 1), activate=True)
            await store.add_version(_version("greet", 2), activate=True)
            await store.add_version(_version("calc", 1), activate=True)
            assert await store.next_version_number("greet") == 3
            records = await store.list_functions()
            assert [r.name for r in records] == ["calc", "greet"]
            greet = await store.get_function("greet")
            assert greet.active is not None and greet.active.number == 2
            assert greet.active.config.env == {"K": "v"}
            assert [v.number for v in await store.versions("greet")] == [1, 2]
            assert await store.version_images() == {
                "lambda-fn/greet:v1", "lambda-fn/greet:v2", "lambda-fn/calc:v1"}
            deleted = await store.delete_function("greet")
            assert [v.number for v in deleted] == [1, 2]
            with pytest.raises(NotFound):
                await store.get_function("greet")
            with pytest.raises(NotFound):
                await store.delete_function("greet")
            assert await store.versions("greet") == []
        finally:
            await store.close()

    asyncio.run(scenario())


def test_state_survives_reopen(tmp_path: Path) -> None:
    async def write() -> None:
        store = Store(tmp_path / "lambda.db")
        await store.open()
        await store.add_version(_version("greet", 1), activate=True)
        await store.close()

    async def read() -> int | None:
        store = Store(tmp_path / "lambda.db")
        await store.open()
        record = await store.get_function("greet")
        await store.close()
        return record.active.number if record.active else None

    asyncio.run(write())
    assert asyncio.run(read()) == 1


def test_migrate_sets_user_version_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "lambda.db"
    assert migrate(path) == 0
    assert migrate(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lambda.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this lambdad"):
        migrate(path)
