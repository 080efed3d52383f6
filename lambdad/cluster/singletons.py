"""The jobs that run on one node of a cluster at a time, under components.Singletons:
cron (its runner fires each tick, and a new leader catches up the ticks missed since the
last fire), and the periodic clean-ups of shared rows (stats rollups, cron fire rows,
unreferenced blobs) that every node running them would only repeat. On SQLite the one
daemon leads from the start, so they run there as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lambdad.lifecycle import Component, Step

log = logging.getLogger("lambdad.cluster")

HOUR_S = 3600.0
FIRST_AFTER_S = 60.0  # after gaining leadership: a flapping leader does not prune at each gain
STATS_KEPT_MINUTES = 2 * 1440
FIRES_KEPT_S = 86400.0  # beyond the catch-up window


class Periodic:
    """Runs `work` every `every_s` while started (first after `first_after_s`); a failure
    is logged and the next round runs as planned."""

    def __init__(self, name: str, every_s: float, work: Callable[[], Awaitable[object]], *,
                 first_after_s: float = FIRST_AFTER_S) -> None:
        self.name = name
        self.every_s = every_s
        self.first_after_s = first_after_s
        self._work = work
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self._work()
            except Exception:
                log.exception("singleton job %s failed", self.name)
            self.rounds += 1
            await asyncio.sleep(self.every_s)


def singleton_jobs(store: Any, cron: Any, blobs: Any, *, catch_up_window_s: float,
                   ) -> list[Component]:
    """Cron first (it catches up at once), then the clean-ups."""
    jobs: list[Component] = [
        Step("cron", cron.start, cron.stop),
        Periodic("stats-prune", HOUR_S, lambda: store.prune_stats(
            int(time.time() // 60) - STATS_KEPT_MINUTES)),
        Periodic("fires-prune", HOUR_S, lambda: store.schedules.prune_fires(
            time.time() - catch_up_window_s - FIRES_KEPT_S)),
    ]
    if blobs is not None:
        jobs.append(Periodic("blob-gc", HOUR_S, lambda: asyncio.to_thread(blobs.collect)))
    return jobs
