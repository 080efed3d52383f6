"""Periodic housekeeping jobs, driven by the `schedule` package from one asyncio task.

`schedule` keeps the job table and the timing; this task only asks it, every tick,
which jobs are due. Jobs are plain callables that must not block: anything slow
spawns its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import schedule

log = logging.getLogger("lambdad.scheduler")

TICK_S = 0.25


class Housekeeper:
    def __init__(self) -> None:
        self._scheduler = schedule.Scheduler()
        self._task: asyncio.Task[None] | None = None

    def every(self, seconds: int, job: Callable[[], None], name: str) -> None:
        def guarded() -> None:
            try:
                job()
            except Exception:  # one failing job must not stop the others
                log.exception("housekeeping job %s failed", name)

        self._scheduler.every(seconds).seconds.do(guarded).tag(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def _run(self) -> None:
        while True:
            self._scheduler.run_pending()
            await asyncio.sleep(TICK_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._scheduler.clear()
