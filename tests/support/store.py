"""A real Store on a temporary SQLite file, for unit tests of the parts that use one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.store import Store


@asynccontextmanager
async def opened_store(folder: Path, *functions: str) -> AsyncIterator[Store]:
    """An open store in `folder` where each named function has an active version 1."""
    store = Store(folder / "lambda.db")
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
