"""Accepted events on their way into the store: the queue's front door hands them to the
worker, whose next cycle writes them in its own transaction.

Every accepted event must be committed before its 202. One store call per event made the
hop to the store thread, not the database, the cost of an event, and a second call (the
worker's claim) followed each. Here `AsyncQueue.enqueue` puts the event in the intake and
waits; the worker's next cycle inserts every event waiting, records ended attempts and
claims due events in one transaction, then answers each caller (accepted, or refused by
the per-function cap). A burst of N events costs a handful of store calls, and a new
event is claimed in the transaction that stores it. Made before both (they share it, as
they share the wake-up), so neither needs the other; with no worker running (before the
start, after the stop) an event is written on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from lambdad.queue.model import AsyncInvocation

MAX_BATCH = 256  # the most events one cycle inserts (bounds one transaction's length)


@dataclass(frozen=True)
class Pending:
    invocation: AsyncInvocation
    max_queued: int  # the per-function cap it is checked against (0: none)
    answer: asyncio.Future[bool]


class Intake:
    def __init__(self, table: Any, wake: asyncio.Event | None = None) -> None:
        self._table = table  # the store's async InvocationTable facade
        self.wake = wake if wake is not None else asyncio.Event()
        self._pending: list[Pending] = []
        self.open = False  # a worker is running cycles that take what is pending

    async def submit(self, invocation: AsyncInvocation, max_queued: int) -> bool:
        """True once the event is committed, False if its function's queue is full."""
        if not self.open:
            stored: bool = await self._table.insert(invocation, max_queued)
            if stored:
                self.wake.set()
            return stored
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(Pending(invocation, max_queued, answer))
        self.wake.set()
        return await answer

    def take(self) -> list[Pending]:
        """The oldest waiting events, at most MAX_BATCH, for one cycle."""
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        return batch

    @property
    def waiting(self) -> bool:
        return bool(self._pending)

    @property
    def count(self) -> int:
        return len(self._pending)

    async def close(self) -> None:
        """No worker any more: what is still waiting is written on its own."""
        self.open = False
        for pending in self._pending:
            try:
                ok: bool = await self._table.insert(pending.invocation, pending.max_queued)
            except Exception as exc:
                fail([pending], exc)
            else:
                answer([pending], [ok])
        self._pending = []


def answer(batch: list[Pending], accepted: list[bool]) -> None:
    for pending, ok in zip(batch, accepted, strict=True):
        if not pending.answer.done():  # its caller may have gone (cancelled)
            pending.answer.set_result(ok)


def fail(batch: list[Pending], exc: BaseException) -> None:
    """Nothing of the batch was committed (one transaction): every caller hears why."""
    for pending in batch:
        if not pending.answer.done():
            pending.answer.set_exception(exc)
