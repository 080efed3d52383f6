"""Fires cron schedules: one asyncio task sleeps until the next due run.

Each run enqueues an asynchronous invocation (same retries and history as any event).
Overlap: `skip` records a skipped run while the previous run is queued or running;
`allow` runs in parallel; `replace` cancels the previous run first. A run whose function
already has its maximum of queued events is skipped too (logged, and counted in
`lambdad_async_refused_total{source="schedule"}`): cron never grows a full queue. Runs
missed while the daemon was down run once at start if they fall within the catch-up window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from lambdad.errors import Throttled
from lambdad.scheduler.cron import Schedule, next_runs, previous_run

log = logging.getLogger("lambdad.scheduler")

Enqueue = Callable[[Schedule, float, bool], Awaitable[str]]
StatusOf = Callable[[str], Awaitable[str]]
Cancel = Callable[[str, str], Awaitable[None]]


class CronRunner:
    def __init__(self, table: Any, enqueue: Enqueue, status_of: StatusOf, cancel: Cancel, *,
                 catch_up_window_s: float = 3600.0) -> None:
        self._table = table
        self._enqueue = enqueue
        self._status_of = status_of
        self._cancel = cancel
        self._catch_up = catch_up_window_s
        self._schedules: dict[str, Schedule] = {}
        self._next: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        now = time.time()
        for schedule in await self._table.all():
            self._schedules[schedule.id] = schedule
            self._next[schedule.id] = next_runs(schedule.cron, schedule.tz, now, 1)[0]
            missed = previous_run(schedule.cron, schedule.tz, now)
            since = schedule.last_run or schedule.created_at
            if missed is not None and missed > since and now - missed <= self._catch_up:
                await self._fire(schedule, missed, catch_up=True)
        self._task = asyncio.create_task(self._loop(), name="cron")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
        while True:
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
                    await self._table.record_skip(schedule.id, when)
                    self._schedules[schedule.id] = replace(
                        schedule, last_run=when, last_result="skipped")
                    log.info("schedule skipped id=%s function=%s (previous run %s)",
                             schedule.id, schedule.function, status)
                    return
                await self._cancel(schedule.last_invocation,
                                   "replaced by a newer run of its schedule")
        try:
            invocation = await self._enqueue(schedule, when, catch_up)
        except Throttled as exc:  # the function's queue is full: skip, do not grow it
            await self._table.record_skip(schedule.id, when)
            self._schedules[schedule.id] = replace(schedule, last_run=when,
                                                   last_result="skipped")
            log.warning("schedule skipped id=%s function=%s (queue full: %s)",
                        schedule.id, schedule.function, exc.message)
            return
        result = "catch-up" if catch_up else "enqueued"
        await self._table.record_run(schedule.id, when, result, invocation)
        self._schedules[schedule.id] = replace(
            schedule, last_run=when, last_result=result, last_invocation=invocation)
        log.info("schedule fired id=%s function=%s invocation=%s%s", schedule.id,
                 schedule.function, invocation, " catch_up=true" if catch_up else "")
