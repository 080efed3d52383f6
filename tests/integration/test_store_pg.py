"""The store on a real PostgreSQL server that goes away under it: calls fail with
DatabaseUnavailable (gRPC UNAVAILABLE) naming the database without its password, the
next call after the server is back reconnects on its own, and a transaction cut short
leaves nothing half-written."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import pytest

from lambdad.api.status import grpc_code
from lambdad.errors import DatabaseUnavailable
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.queue.model import AsyncInvocation, Finish
from lambdad.store import Store
from tests.support.postgres import PASSWORD, Postgres

T = TypeVar("T")
GUARD = 30.0  # against a hang, not a speed target


def _version(name: str) -> FunctionVersion:
    return FunctionVersion(function=name, number=1, image=f"lambda-fn/{name}:v1",
                           image_id="sha256:1", config=FunctionConfig(), code_sha256="ab" * 32,
                           code_size=1, created_at=datetime.now(UTC))


def _event(function: str, now: float) -> AsyncInvocation:
    return AsyncInvocation(id=str(uuid.uuid4()), function=function, payload=b"{}",
                           source="api", status="queued", attempts=0, created_at=now,
                           next_attempt_at=now)


async def _eventually(call: Callable[[], Awaitable[T]]) -> T:
    """The call's result once it stops failing with DatabaseUnavailable."""
    deadline = time.monotonic() + GUARD
    while True:
        try:
            return await call()
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _is_clear_unavailable(exc: DatabaseUnavailable, store: Store) -> None:
    message = str(exc)
    assert PASSWORD not in message
    assert store.name in message and "***" in store.name
    assert "is unavailable" in message and "try again" in message
    assert grpc_code(exc) == grpc.StatusCode.UNAVAILABLE


def test_a_restarted_server_fails_one_call_then_the_store_reconnects(
        postgres: Postgres) -> None:
    name = postgres.create_database()

    async def scenario() -> None:
        store = Store(postgres.url(name, password=True), node_id="n1")
        await store.open()
        try:
            await store.add_version(_version("greet"), activate=True)
            postgres.restart()
            with pytest.raises(DatabaseUnavailable) as caught:
                await store.list_functions()
            _is_clear_unavailable(caught.value, store)
            records = await _eventually(store.list_functions)
            assert [r.name for r in records] == ["greet"]
            await store.add_version(_version("calc"), activate=True)
            assert [r.name for r in await store.list_functions()] == ["calc", "greet"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_calls_fail_while_the_server_is_down_and_work_once_it_is_back(
        postgres: Postgres) -> None:
    name = postgres.create_database()

    async def scenario() -> None:
        store = Store(postgres.url(name, password=True))
        await store.open()
        try:
            await store.add_version(_version("greet"), activate=True)
            postgres.halt()
            try:
                for _ in range(3):  # the first finds the connection dead, the next can't connect
                    with pytest.raises(DatabaseUnavailable) as caught:
                        await store.invocations.queued("greet")
                    _is_clear_unavailable(caught.value, store)
                    await asyncio.sleep(0.6)
            finally:
                postgres.resume()
            assert await _eventually(lambda: store.invocations.queued("greet")) == 0
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_cycle_whose_connection_is_cut_leaves_nothing_half_written(
        postgres: Postgres) -> None:
    """The worker's cycle records an ended attempt, then stores new events, in one
    transaction; its backend is killed between the two: neither is stored."""
    name = postgres.create_database()

    async def scenario() -> None:
        store = Store(postgres.url(name))
        await store.open()
        try:
            await store.add_version(_version("f"), activate=True)
            table: Any = store.invocations
            now = time.time()
            running = _event("f", now)
            await table.insert(running)
            claim = await table.cycle([], now, 1, set(), lambda due: due, [])
            assert [e.id for e in claim.claimed] == [running.id]

            def cut(due: list[AsyncInvocation]) -> list[AsyncInvocation]:
                assert postgres.kill_backends(name) >= 1
                return due

            fresh = _event("f", now)
            done = Finish(id=running.id, status="succeeded", next_attempt_at=now,
                          finished_at=now, status_code=200, result=b"{}", error="",
                          attempt=1)
            with pytest.raises(DatabaseUnavailable):
                await table.cycle([done], now, 1, set(), cut, [(fresh, 0)])
            assert await _eventually(lambda: table.status(running.id)) == "running"
            assert await table.status(fresh.id) == ""
        finally:
            await store.close()

    asyncio.run(scenario())
