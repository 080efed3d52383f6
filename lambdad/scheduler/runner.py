"""Fires cron schedules: one asyncio task sleeps until the next due run.

Each run enqueues an asynchronous invocation (same retries and history as any event).
Overlap: `skip` records a skipped run while the previous run is queued or running;
`allow` runs in parallel; `replace` cancels the previous run first (in a cluster it may
run on another node: the cancel is announced and that node stops its delivery). A run whose function
already has its maximum of queued events is skipped too (logged, and counted in
`lambdad_async_refused_total{source="schedule"}`): cron never grows a full queue.

Each fire is ScheduleTable.fire: the (schedule, tick) row, the invocation and the
schedule's last run in one transaction, so a tick fires at most once even if two runners
both act (a cluster runs one, on the leader: cluster/singletons.py). At start (or a
takeover) the runs missed are fired as scheduler/catchup.py says: every tick since the
last fire when that was recent (only the leader changed), else one catch-up run within
the catch-up window. A start that cannot read the store (the database is away) retries
in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from lambdad.errors import Throttled
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.catchup import Missed, missed_ticks
from lambdad.scheduler.cron import Schedule, next_runs, previous_run

log = logging.getLogger("lambdad.scheduler")

# The event a run queues (raises Throttled or NotFound when it cannot be queued).
Prepare = Callable[[Schedule, float, bool], AsyncInvocation]
StatusOf = Callable[[str], Awaitable[str]]
Cancel = Callable[[str, str], Awaitable[None]]

RETRY_S = 1.0  # between attempts to load the schedules while the store is away


class CronRunner:
    def __init__(self, table: Any, prepare: Prepare, status_of: StatusOf, cancel: Cancel, *,
                 catch_up_window_s: float = 3600.0, fresh_s: float = 30.0,
                 max_queued: Callable[[], int] = lambda: 0, node: str = "",
                 fired: Callable[[], None] = lambda: None,
                 refused: Callable[[Schedule], None] = lambda _s: None) -> None:
        """`fresh_s`: how recent the last fire must be for a start to fire every tick
        missed since; `fired`: wakes the delivery worker; `refused`: counts a run its
        function's full queue refused."""
        self._table = table
        self._prepare = prepare
        self._status_of = status_of
        self._cancel = cancel
        self._catch_up = catch_up_window_s
        self._fresh = fresh_s
        self._max_queued = max_queued
        self._node = node
        self._fired = fired
        self._refused = refused
        # Cluster mode: tells the other nodes a run this one cancelled has ended (the
        # node delivering it stops; cluster/wiring.py). It must not raise.
        self.cancel_elsewhere: Callable[[str], Awaitable[None]] | None = None
        self._schedules: dict[str, Schedule] = {}
        self._next: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Python 3.11's wait_for can swallow a cancel that arrives as the wake-up is set
        # (add/remove then stop): the loop also checks this, so a stop always ends it.
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Loads the schedules and fires what was missed; if the store is away, the
        loop's task retries that first."""
        self._stopping = False
        loaded = True
        try:
            await self._load()
        except Exception as exc:
            log.warning("cron: cannot load the schedules yet (%s); retrying", exc)
            loaded = False
        self._task = asyncio.create_task(self._run(loaded), name="cron")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._schedules.clear()
        self._next.clear()

    async def reload(self) -> None:
        """Another node created or deleted a schedule: take the stored set (only while
        this runner runs; a runner that starts later loads it anyway)."""
        if self._task is None:
            return
        stored = {s.id: s for s in await self._table.all()}
        for schedule_id in [sid for sid in self._schedules if sid not in stored]:
            self.remove(schedule_id)
        for schedule_id, schedule in stored.items():
            if schedule_id not in self._schedules:
                self.add(schedule)

    async def _load(self) -> None:
        now = time.time()
        schedules = await self._table.all()
        last_ticks: dict[str, float] = await self._table.last_ticks()
        self._schedules = {s.id: s for s in schedules}
        self._next = {s.id: next_runs(s.cron, s.tz, now, 1)[0] for s in schedules}
        for schedule in schedules:
            ticks = missed_ticks(
                Missed(last_ticks.get(schedule.id), schedule.last_run, schedule.created_at),
                now, window=self._catch_up, fresh=self._fresh,
                runs_after=functools.partial(_runs_after, schedule),
                previous=functools.partial(_previous, schedule))
            for when in ticks:
                current = self._schedules.get(schedule.id)
                if current is None:
                    break
                try:
                    await self._fire(current, when, catch_up=True)
                except Exception as exc:
                    if _store_away(exc):
                        raise
                    log.exception("schedule %s failed to catch up", schedule.id)

    async def _run(self, loaded: bool) -> None:
        while not loaded:
            await asyncio.sleep(RETRY_S)
            try:
                await self._load()
                loaded = True
            except Exception as exc:
                log.warning("cron: cannot load the schedules yet (%s); retrying", exc)
        await self._loop()

    def add(self, schedule: Schedule) -> None:
        self._schedules[schedule.id] = schedule
        self._next[schedule.id] = next_runs(schedule.cron, schedule.tz, time.time(), 1)[0]
        self._wake.set()

    def remove(self, schedule_id: str) -> None:
        self._schedules.pop(schedule_id, None)
        self._next.pop(schedule_id, None)
        self._wake.set()

    def remove_function(self, function: str) -> None:
        for schedule in [s for s in self._schedules.values() if s.function == function]:
            self.remove(schedule.id)

    def next_run(self, schedule_id: str) -> float | None:
        return self._next.get(schedule_id)

    async def _loop(self) -> None:
        while not self._stopping:
            now = time.time()
            due = sorted((when, sid) for sid, when in self._next.items() if when <= now)
            for when, schedule_id in due:
                schedule = self._schedules.get(schedule_id)
                if schedule is None:
                    continue
                self._next[schedule_id] = next_runs(schedule.cron, schedule.tz, when, 1)[0]
                try:
                    await self._fire(schedule, when, catch_up=False)
                except Exception:  # one schedule's failure must not stop the others
                    log.exception("schedule %s failed to fire", schedule_id)
            wait = min((when for when in self._next.values()), default=now + 60) - time.time()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(wait, 60.0)))

    async def _fire(self, schedule: Schedule, when: float, *, catch_up: bool) -> None:
        if schedule.overlap != "allow" and schedule.last_invocation:
            status = await self._status_of(schedule.last_invocation)
            if status in ("queued", "running"):
                if schedule.overlap == "skip":
                    if await self._table.fire(schedule.id, when, None, 0, self._node,
                                              "skipped") == "skipped":
                        self._schedules[schedule.id] = replace(
                            schedule, last_run=when, last_result="skipped")
                        log.info("schedule skipped id=%s function=%s (previous run %s)",
                                 schedule.id, schedule.function, status)
                    return
                await self._cancel(schedule.last_invocation,
                                   "replaced by a newer run of its schedule")
                if self.cancel_elsewhere is not None:  # it may run on another node
                    await self.cancel_elsewhere(schedule.last_invocation)
        result = "catch-up" if catch_up else "enqueued"
        try:
            invocation = self._prepare(schedule, when, catch_up)
        except Throttled as exc:
            outcome, reason = await self._table.fire(
                schedule.id, when, None, 0, self._node, "skipped"), exc.message
        else:
            outcome = await self._table.fire(schedule.id, when, invocation,
                                             self._max_queued(), self._node, result)
            reason = "its function's queue is full"
        if outcome == "fired":
            self._fired()
            self._schedules[schedule.id] = replace(
                schedule, last_run=when, last_result=result, last_invocation=invocation.id)
            log.info("schedule fired id=%s function=%s invocation=%s%s", schedule.id,
                     schedule.function, invocation.id, " catch_up=true" if catch_up else "")
        elif outcome in ("full", "skipped"):  # skip, do not grow a full queue
            self._refused(schedule)
            self._schedules[schedule.id] = replace(schedule, last_run=when,
                                                   last_result="skipped")
            log.warning("schedule skipped id=%s function=%s (queue full: %s)",
                        schedule.id, schedule.function, reason)
        elif outcome == "duplicate":
            log.info("schedule id=%s tick %d had fired already (another node)",
                     schedule.id, round(when))
        else:
            self.remove(schedule.id)


def _runs_after(schedule: Schedule, after: float, count: int) -> list[float]:
    return next_runs(schedule.cron, schedule.tz, after, count)


def _previous(schedule: Schedule, before: float) -> float | None:
    return previous_run(schedule.cron, schedule.tz, before)


def scheduled_invocation(active: Callable[[str], object | None], schedule: Schedule,
                         when: float, catch_up: bool) -> AsyncInvocation:
    """The event a run of `schedule` queues, as any event of its function (NotFound when
    the function is gone)."""
    from lambdad.errors import NotFound
    from lambdad.requestid import new_request_id
    from lambdad.scheduler.cron import event_payload

    if active(schedule.function) is None:
        raise NotFound(f"no function named {schedule.function!r}")
    now = time.time()
    return AsyncInvocation(
        id=new_request_id(), function=schedule.function,
        payload=event_payload(schedule, when, catch_up=catch_up), source="schedule",
        status="queued", attempts=0, created_at=now, next_attempt_at=now)


def _store_away(exc: BaseException) -> bool:
    from lambdad.errors import DatabaseUnavailable

    return isinstance(exc, DatabaseUnavailable)
