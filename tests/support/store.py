"""A real Store, for unit tests of the parts that use one: on a temporary SQLite file, or
on a fresh database of the private PostgreSQL server (the `store_backend` fixture runs a
test on both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.store import Store

if TYPE_CHECKING:
    from tests.support.postgres import Postgres


@dataclass(frozen=True)
class StoreBackend:
    """Where a test's store lives: `database` is what `Store(...)` takes (a SQLite file's
    path, or the URL of a fresh PostgreSQL database on `server`)."""

    name: str
    database: Path | str
    server: Postgres | None = None
    db_name: str = ""


@asynccontextmanager
async def opened_store(database: Path | str, *functions: str) -> AsyncIterator[Store]:
    """An open store on `database` (a folder: its lambda.db; or a PostgreSQL URL) where
    each named function has an active version 1."""
    store = Store(database / "lambda.db" if isinstance(database, Path) and database.is_dir()
                  else database)
    await store.open()
    for name in functions:
        await store.add_version(FunctionVersion(
            function=name, number=1, image=f"lambda-fn/{name}:v1", image_id="sha256:1",
            config=FunctionConfig(), code_sha256="ab" * 32, code_size=1,
            created_at=datetime.now(UTC)), activate=True)
    try:
        yield store
    finally:
        await store.close()
