"""The store on a real SQLite file and on the private PostgreSQL server: migrations,
versions, deletes, stats, API keys."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambdad.auth.keys import ApiKey
from lambdad.errors import AlreadyExists, NotFound
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.metrics.stats import StatsRow
from lambdad.store import Store
from lambdad.store.migrations import SCHEMA_VERSION, migrate
from tests.support.store import StoreBackend


def _version(name: str, number: int) -> FunctionVersion:
    return FunctionVersion(
        function=name, number=number, image=f"lambda-fn/{name}:v{number}",
        image_id=f"sha256:{number}", config=FunctionConfig(env={"K": "v"}),
        code_sha256="ab" * 32, code_size=123, created_at=datetime.now(UTC),
    )


def test_versions_and_delete(store_backend: StoreBackend) -> None:
    async def scenario() -> None:
        store = Store(store_backend.database)
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


def test_state_survives_reopen(store_backend: StoreBackend) -> None:
    async def write() -> None:
        store = Store(store_backend.database)
        await store.open()
        await store.add_version(_version("greet", 1), activate=True)
        await store.close()

    async def read() -> int | None:
        store = Store(store_backend.database)
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


def test_rollback_history_pruning_and_stats(store_backend: StoreBackend) -> None:
    async def scenario() -> None:
        store = Store(store_backend.database)
        await store.open()
        try:
            await store.add_version(_version("greet", 1), activate=True)
            await store.add_version(_version("greet", 2), activate=True)
            assert await store.activate("greet", 1, reason="rollback") == 2
            assert [(a.version, a.reason) for a in await store.history("greet")] == [
                (1, "deploy"), (2, "deploy"), (1, "rollback")]
            await store.mark_pruned("greet", [2])
            assert await store.version_images() == {"lambda-fn/greet:v1"}
            assert [v.pruned for v in (await store.all_versions())["greet"]] == [False, True]
            # Rows of one minute add up (an upsert on both engines).
            await store.add_stats([StatsRow("greet", 7, 2, 1, 1, 0.5, {10: 2}, 1)])
            await store.add_stats([StatsRow("greet", 7, 3, 0, 0, 1.5, {10: 1, 20: 2}, 3),
                                   StatsRow("greet", 8, 1, 0, 0, 0.1, {10: 1}, 1)])
            rows = await store.stats_since(6, "greet")
            assert [(r.minute, r.invocations, r.errors, r.buckets, r.instances_max)
                    for r in sorted(rows, key=lambda r: r.minute)] == [
                (7, 5, 1, {10: 3, 20: 2}, 3), (8, 1, 0, {10: 1}, 1)]
            await store.prune_stats(8)
            assert [r.minute for r in await store.stats_since(0)] == [8]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_api_keys_table(store_backend: StoreBackend) -> None:
    async def scenario() -> None:
        store = Store(store_backend.database)
        await store.open()
        try:
            key = ApiKey("k1", "ci", "deployer", "salt", "digest", 100.0, None)
            await store.keys.insert(key)
            with pytest.raises(AlreadyExists):
                await store.keys.insert(ApiKey("k2", "ci", "reader", "s", "d", 101.0, None))
            assert await store.keys.all() == [key]
            revoked = await store.keys.revoke("ci", 200.0)
            assert revoked.revoked_at == 200.0
            assert (await store.keys.revoke("k1", 300.0)).revoked_at == 200.0  # kept
            assert [k.revoked_at for k in await store.keys.all()] == [200.0]
            with pytest.raises(NotFound):
                await store.keys.revoke("nobody", 1.0)
        finally:
            await store.close()

    asyncio.run(scenario())
