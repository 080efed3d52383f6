"""The async queue's worker on a real Store (tests/support/store.py), for unit tests of its
delivery: events at a fixed time, a worker started and always stopped, and the set-up of
one queued event that most of them begin with."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from lambdad.queue import AsyncInvocation, AsyncWorker, RetryPolicy
from lambdad.queue.worker import Outcome
from lambdad.store import Store
from tests.support.store import opened_store

T0 = 1_000_000.0  # the time a test's clock starts at, and its events are created at

Deliver = Callable[[AsyncInvocation], Awaitable[Outcome]]


class Clock:
    """Stands in for the worker's `time` module: the time moves only when the test says."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


def event(function: str = "f", payload: bytes = b'{"n": 1}') -> AsyncInvocation:
    return AsyncInvocation(id=str(uuid.uuid4()), function=function, payload=payload,
                           source="api", status="queued", attempts=0, created_at=T0,
                           next_attempt_at=T0)


def fresh_event(function: str, at: float | None = None) -> AsyncInvocation:
    """An event created and due at `at` (now by default), for tests on a real clock."""
    when = time.time() if at is None else at
    return AsyncInvocation(id=str(uuid.uuid4()), function=function, payload=b"{}",
                           source="api", status="queued", attempts=0, created_at=when,
                           next_attempt_at=when)


def take_all(due: list[AsyncInvocation]) -> list[AsyncInvocation]:
    """A cycle's choice that takes every due event (no fairness to test)."""
    return due


def hanging_delivery() -> tuple[asyncio.Event, list[str], Deliver]:
    """A delivery that never ends on its own: set `started` when it begins, and records
    the invocation ids it was cancelled in."""
    started = asyncio.Event()
    cancelled: list[str] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(inv.id)
            raise
        return True, 200, b"{}", ""

    return started, cancelled, deliver


async def succeed(inv: AsyncInvocation) -> Outcome:
    """A delivery that succeeds at once with an empty JSON object."""
    return True, 200, b"{}", ""


def new_worker(table: Any, deliver: Deliver, *, policy: RetryPolicy | None = None,
               limit: Callable[[str], int] = lambda _: 1) -> AsyncWorker:
    """A worker (not started) on `table`: a store's invocations or a wrapper of them."""
    return AsyncWorker(table, deliver, lambda _: policy or RetryPolicy(), limit)


@contextlib.asynccontextmanager
async def started_worker(table: Any, deliver: Deliver, *, policy: RetryPolicy | None = None,
                         limit: Callable[[str], int] = lambda _: 1
                         ) -> AsyncIterator[AsyncWorker]:
    """A started worker on `table`, stopped on the way out whatever the test did."""
    worker = new_worker(table, deliver, policy=policy, limit=limit)
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@contextlib.asynccontextmanager
async def one_queued(database: Path | str) -> AsyncIterator[tuple[Store, AsyncInvocation]]:
    """An open store on `database` (see opened_store) with function "f" and one event of
    it queued."""
    async with opened_store(database, "f") as store:
        queued = event()
        await store.invocations.insert(queued)
        yield store, queued
