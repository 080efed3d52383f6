"""Id prefixes (`lambdactl invocation ab12`, `schedules delete ab12`) on a real SQLite file.

`_` and `%` are LIKE wildcards: a prefix typed by a user must match them literally,
or `____` would pick any row (and `schedules delete ____` delete one).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from lambdad.errors import InvalidArgument, NotFound
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule
from lambdad.store import Store
from tests.support.store import StoreBackend

IDS = ("ab12cd34-0000-4000-8000-000000000001", "ab12ef00-0000-4000-8000-000000000002")


async def _store(backend: StoreBackend) -> Store:
    store = Store(backend.database)
    await store.open()
    await store.add_version(FunctionVersion(
        function="greet", number=1, image="lambda-fn/greet:v1", image_id="sha256:1",
        config=FunctionConfig(), code_sha256="ab" * 32, code_size=1,
        created_at=datetime.now(UTC)), activate=True)
    return store


@pytest.mark.parametrize("kind", ["invocations", "schedules"])
def test_wildcards_in_a_prefix_are_literal(store_backend: StoreBackend, kind: str) -> None:
    async def scenario() -> None:
        store = await _store(store_backend)
        table = store.invocations if kind == "invocations" else store.schedules
        try:
            for ident in IDS:
                if kind == "invocations":
                    await table.insert(AsyncInvocation(
                        id=ident, function="greet", payload=b"{}", source="api",
                        status="queued", attempts=0, created_at=1.0, next_attempt_at=1.0))
                else:
                    await table.insert(Schedule(id=ident, function="greet", cron="* * * * *",
                                                tz="UTC", data=b"{}", overlap="skip",
                                                created_at=1.0))
            assert (await table.get("ab12c")).id == IDS[0]
            assert (await table.get("AB12EF")).id == IDS[1]  # ids are lowercase hex
            assert (await table.get(IDS[1])).id == IDS[1]
            noun = kind[:-1]
            with pytest.raises(InvalidArgument, match=f"^{noun} id prefix 'ab12' is ambiguous$"):
                await table.get("ab12")  # a real shared prefix
            short = f"^give at least 4 characters of the {noun} id$"
            with pytest.raises(InvalidArgument, match=short):
                await table.get("ab1")
            with pytest.raises(NotFound, match=f"^no {noun} with id 'ffff'$"):
                await table.get("ffff")
            for pattern in ("a_12c", "ab_2cd", "____", "ab1%", "ab12%", "%%%%", "ab12_d"):
                with pytest.raises(NotFound):
                    await table.get(pattern)
        finally:
            await store.close()

    asyncio.run(scenario())
