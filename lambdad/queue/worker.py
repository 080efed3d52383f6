"""Delivers queued asynchronous invocations within each function's concurrency.

One task polls the durable queue (woken at once by a new event or a finished delivery,
otherwise at the next due retry) and starts one delivery task per event, fairly between
functions (`fair.select`); each attempt is recorded as running before it starts, so a
crash turns it back into a queued event at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lambdad.queue.fair import mark_served, select
from lambdad.queue.model import AsyncInvocation, RetryPolicy, next_step

log = logging.getLogger("lambdad.queue")

POLL_S = 1.0

# (ok, status code, response body, error text)
Outcome = tuple[bool, int | None, bytes | None, str]


class AsyncWorker:
    def __init__(
        self,
        table: Any,  # the store's async InvocationTable facade
        deliver: Callable[[AsyncInvocation], Awaitable[Outcome]],
        policy_for: Callable[[str], RetryPolicy],
        limit_for: Callable[[str], int],
        *,
        concurrency: int = 32,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._table = table
        self._deliver = deliver
        self._policy_for = policy_for
        self._limit_for = limit_for
        self._concurrency = concurrency
        # Set by whoever queues an event (given here, so the queue need not know the worker).
        self._wake = wake if wake is not None else asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._per_function: dict[str, int] = {}  # deliveries running, per function
        self._served: dict[str, int] = {}  # function -> the turn it was last served in
        self._turn = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="async-invocations")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stops taking events; attempts under way are cancelled and, being recorded as
        running, are retried at the next start (at-least-once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def cancel(self, invocation_id: str, reason: str) -> None:
        """Ends a queued or running invocation as failed (a `replace` schedule)."""
        task = self._running.get(invocation_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._table.cancel(invocation_id, reason, time.time())

    async def _loop(self) -> None:
        while True:
            try:
                await self._dispatch()
            except Exception:  # a store hiccup must not end delivery for good
                log.exception("async dispatch failed")
            timeout = POLL_S
            try:
                next_due = await self._table.next_due(time.time())
            except Exception:
                next_due = None
            if next_due is not None:
                timeout = min(POLL_S, max(0.0, next_due - time.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch(self) -> None:
        """Starts what `fair.select` picks: per function within its limit, round-robin."""
        free = self._concurrency - len(self._running)
        limits = {name: max(1, self._limit_for(name)) for name in self._per_function}
        # At the global cap only functions with nothing running may start one.
        full = {name for name, count in self._per_function.items()
                if count >= limits[name] or (free <= 0 and count > 0)}
        due: list[AsyncInvocation] = await self._table.due(
            time.time(), max(1, free), full, set(self._running))
        if not due:
            return
        for invocation in due:
            if invocation.function not in limits:
                limits[invocation.function] = max(1, self._limit_for(invocation.function))
        chosen = select(due, limits, self._per_function, free, self._served)
        self._turn = mark_served(self._served, chosen, self._turn)
        for invocation in chosen:
            function = invocation.function
            self._per_function[function] = self._per_function.get(function, 0) + 1
            task = asyncio.create_task(self._attempt(invocation))
            self._running[invocation.id] = task
            task.add_done_callback(functools.partial(self._done, invocation))

    def _done(self, invocation: AsyncInvocation, _task: object = None) -> None:
        self._running.pop(invocation.id, None)
        function = invocation.function
        self._per_function[function] -= 1
        if self._per_function[function] <= 0:  # bounded by the functions with work
            del self._per_function[function]
            self._served.pop(function, None)
        self._wake.set()

    async def _attempt(self, queued: AsyncInvocation) -> None:
        invocation = await self._table.start_attempt(queued.id, time.time())
        if invocation is None:
            return  # redriven, deleted or taken meanwhile
        try:
            ok, code, body, error = await self._deliver(invocation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ok, code, body, error = False, None, None, f"{type(exc).__name__}: {exc}"
        now = time.time()
        status, retry_at = next_step(invocation, self._policy_for(invocation.function),
                                     ok=ok, now=now)
        await self._table.finish(invocation.id, status, retry_at, now, code, body, error)
        if status == "failed":
            log.warning('async invocation failed function=%s id=%s attempts=%d error="%s"',
                        invocation.function, invocation.id, invocation.attempts,
                        error.splitlines()[0] if error else "")
