"""Delivers queued asynchronous invocations within each function's concurrency.

One task runs cycles against the durable queue, woken at once by a new event or by a finished
delivery whose slot queued events wait for (otherwise its end waits up to FLUSH_S for the
next cycle), else at the next due retry. A cycle is one store call and one transaction
(`InvocationTable.cycle`): it stores the events accepted since the last cycle (the intake:
each caller waits for that commit before its 202), records every attempt that ended, then
claims a batch of due events, picked fairly between functions (`fair.select`), marking them
running with their attempt counted; their deliveries then run concurrently, one task each.
A claimed event is running in the store before its delivery starts, so a crash turns it
back into a queued event at the next start (at-least-once); an ended attempt waits in
memory only until the next cycle (milliseconds under load), and a crash in between
delivers it again, as a crash during the attempt would.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lambdad.queue.fair import mark_served, newcomer_has_room, select
from lambdad.queue.intake import Intake, answer, fail
from lambdad.queue.model import AsyncInvocation, Finish, RetryPolicy, finish_of
from lambdad.queue.room import Capacity
from lambdad.queue.store import Claim

log = logging.getLogger("lambdad.queue")

POLL_S = 1.0
# How long ended attempts may wait in memory when nothing is queued behind them (no slot to
# refill) and other deliveries still run: the next cycle, started by an enqueue, usually
# writes them sooner. The last delivery to end starts a cycle at once.
FLUSH_S = 0.005
# A group commit's window: when events come from several callers at once (the last cycle
# stored more than one, or one arrived while it ran, or more than one waits), a cycle waits
# this long for more before it starts, so one store call and one commit serve several
# events (PostgreSQL's commit_delay, with commit_siblings). A lone caller, one event at a
# time, never waits: its next event cannot arrive before its last one's commit.
GATHER_S = 0.001

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
        intake: Intake | None = None,
        capacity_for: Callable[[str], Capacity] | None = None,
    ) -> None:
        """`limit_for`: a function's deliveries at once; `capacity_for`: its instances and
        their concurrency, by which a node claims on a shared database (queue/room.py)."""
        self._table = table
        self._deliver = deliver
        self._policy_for = policy_for
        self._limit_for = limit_for
        self._capacity_for = capacity_for
        self._concurrency = concurrency
        # Where accepted events wait for a cycle, shared with the queue's front door (so
        # the queue need not know the worker), with the wake-up whoever queues sets.
        self._intake = intake if intake is not None else Intake(table, wake)
        self._wake = self._intake.wake
        self._running: dict[str, asyncio.Task[None]] = {}
        self._per_function: dict[str, int] = {}  # deliveries running, per function
        self._served: dict[str, int] = {}  # function -> the turn it was last served in
        self._ended_at: dict[str, float] = {}  # function -> when its last delivery ended
        self._turn = 0
        # Attempts that ended, until a cycle has written them (a `replace` cancel and the
        # cron's overlap check read them here first).
        self._finished: dict[str, Finish] = {}
        self._cycling = False  # a cycle's store call is under way
        # Whether the store may hold queued events (the last cycle's Claim.backlog): only
        # then does an ended delivery, freeing a slot, start a cycle at once.
        self._backlog = True
        self._company = False  # the last cycle saw more than one caller (see GATHER_S)
        self._flush: asyncio.TimerHandle | None = None  # writes ended attempts (FLUSH_S)
        self._cancelled: set[str] = set()  # cancelled while a cycle was under way
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0  # store calls made (for tests and the curious)

    @property
    def intake(self) -> Intake:
        return self._intake

    def start(self) -> None:
        self._stopping = False
        self._intake.open = True
        self._task = asyncio.create_task(self._loop(), name="async-invocations")

    def wake(self) -> None:
        self._backlog = True
        self._wake.set()

    async def stop(self) -> None:
        """Stops taking events: the cycle under way ends (its store call is not cut short),
        then attempts under way are cancelled and, being recorded as running, are retried
        at the next start (at-least-once), or on a shared database handed back to the
        queue at once (`hand_back`) for the other nodes. Attempts that ended are written,
        so a clean stop delivers nothing twice, and events accepted meanwhile are written
        on their own."""
        self._stopping = True
        self._intake.open = False
        self._wake.set()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for task in list(self._running.values()):
            task.cancel()
        running = list(self._running)
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._finished:
            await self._table.settle(list(self._finished.values()))
        cut = [inv_id for inv_id in running if inv_id not in self._finished]
        self._finished.clear()
        if cut:
            # On a shared database the other nodes deliver them now; if the database is
            # away, `recover` at this node's next start or its mark-down requeues them.
            try:
                await self._table.hand_back(cut, time.time())
            except Exception as exc:
                log.warning("async: %d cut-short attempt(s) not handed back: %s", len(cut), exc)
        await self._intake.close()

    async def cancel(self, invocation_id: str, reason: str) -> None:
        """Ends a queued or running invocation as failed (a `replace` schedule). One that
        ended already keeps its outcome."""
        task = self._running.get(invocation_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if invocation_id in self._finished:
            return
        if self._cycling:
            self._cancelled.add(invocation_id)  # a cycle under way may be claiming it
        await self._table.cancel(invocation_id, reason, time.time())

    def delivering(self, invocation_id: str) -> bool:
        return invocation_id in self._running

    def deliveries(self) -> list[str]:
        """The invocations this node is delivering now."""
        return list(self._running)

    async def abandon(self, invocation_id: str) -> bool:
        """Cancels this node's delivery of an invocation that another node ended (a
        `replace` schedule's cancel made on the leader, announced as `cancel`); writes
        nothing, the row's outcome stands. False when it is not delivered here."""
        task = self._running.get(invocation_id)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    async def status(self, invocation_id: str) -> str:
        """The invocation's status, counting an ended attempt not yet written."""
        finish = self._finished.get(invocation_id)
        if finish is not None:
            return finish.status
        found: str = await self._table.status(invocation_id)
        return found

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._intake.waiting and not self._stopping and (
                    self._company or self._intake.count > 1):
                await asyncio.sleep(GATHER_S)  # company for the commit (see GATHER_S)
            self._wake.clear()  # before the cycle: a wake during it means go again
            timeout = POLL_S
            try:
                timeout = await self._cycle()
            except Exception:  # a store hiccup must not end delivery for good
                log.exception("async dispatch failed")
                self._backlog = True
                self._wake.clear()
            if self._stopping or self._wake.is_set():
                continue
            timer = loop.call_later(timeout, self._wake.set)  # (cheaper than wait_for)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    async def _cycle(self) -> float:
        """Stores accepted events, writes ended attempts and starts what `fair.select`
        picks: per function within its limit, round-robin; returns how long to wait for
        the next due retry."""
        finished = list(self._finished.values())
        free = self._concurrency - len(self._running)
        limits = {name: max(1, self._limit_for(name)) for name in self._per_function}
        # At the global cap only functions with nothing running may start one.
        full = {name for name, count in self._per_function.items()
                if count >= limits[name] or (free <= 0 and count > 0)}
        # A snapshot: select runs on the store thread, inside the claiming transaction.
        choose = None if self._stopping else functools.partial(
            select, limits=dict(limits), running=dict(self._per_function), free=free,
            last_served=dict(self._served))
        inserts = self._intake.take()  # from here on, each is answered or failed
        if self._flush is not None:  # this cycle writes them
            self._flush.cancel()
            self._flush = None
        self._cycling = True
        self.cycles += 1
        try:
            claim: Claim = await self._table.cycle(
                finished, time.time(), max(1, free), full, choose,
                [(p.invocation, p.max_queued) for p in inserts], self._limit_for,
                self._capacity_for)
        except BaseException as exc:
            fail(inserts, exc)
            raise
        finally:
            self._cycling = False
            cancelled, self._cancelled = self._cancelled, set()
        answer(inserts, claim.accepted)
        self._backlog = claim.backlog
        # Several callers at once: the cycle stored more than one event, or one arrived while
        # it ran (its caller was not the one waiting for this commit).
        self._company = len(inserts) > 1 or (bool(inserts) and self._intake.waiting)
        for finish in finished:
            self._finished.pop(finish.id, None)
        chosen = [inv for inv in claim.claimed if inv.id not in cancelled]
        self._turn = mark_served(self._served, chosen, self._turn)
        for invocation in chosen:
            function = invocation.function
            self._per_function[function] = self._per_function.get(function, 0) + 1
            task = asyncio.create_task(self._attempt(invocation))
            self._running[invocation.id] = task
            task.add_done_callback(functools.partial(self._done, invocation))
        if self._intake.waiting or newcomer_has_room(
                [name for name in claim.left if name not in claim.held], limits,
                self._limit_for, self._per_function,
                self._concurrency - len(self._running)):
            self._wake.set()
        if claim.next_due is None:
            return POLL_S
        return min(POLL_S, max(0.0, claim.next_due - time.time()))

    def delivering_function(self, function: str) -> bool:
        """Whether this node delivers events of `function` now: one runs, or one ended
        within the poll interval (its next is being claimed). Its idle instance is then
        kept for them, not stopped for another node's start (a `slots` ask)."""
        if self._per_function.get(function, 0) > 0:
            return True
        ended = self._ended_at.get(function)
        return (ended is not None
                and asyncio.get_running_loop().time() - ended < POLL_S)

    def _done(self, invocation: AsyncInvocation, _task: object = None) -> None:
        self._running.pop(invocation.id, None)
        function = invocation.function
        self._ended_at[function] = asyncio.get_running_loop().time()
        self._per_function[function] -= 1
        if self._per_function[function] <= 0:  # bounded by the functions with work
            del self._per_function[function]
            self._served.pop(function, None)
        if self._backlog or not self._running:
            self._wake.set()  # a freed slot for what waits; or the last end: write it now
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._flushed)

    def _flushed(self) -> None:
        self._flush = None
        self._wake.set()

    async def _attempt(self, invocation: AsyncInvocation) -> None:
        """One delivery of a claimed event; its end is written by the next cycle."""
        try:
            ok, code, body, error = await self._deliver(invocation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ok, code, body, error = False, None, None, f"{type(exc).__name__}: {exc}"
        finish = finish_of(invocation, self._policy_for(invocation.function), ok=ok,
                           now=time.time(), status_code=code, result=body, error=error)
        self._finished[invocation.id] = finish
        if finish.status == "failed":
            log.warning('async invocation failed function=%s id=%s attempts=%d error="%s"',
                        invocation.function, invocation.id, invocation.attempts,
                        error.splitlines()[0] if error else "")
