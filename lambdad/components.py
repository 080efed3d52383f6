"""The daemon's parts as components: each start paired with its stop (see lambdad.lifecycle).

Each start that does more than one thing undoes its own partial work if it fails, so the
lifecycle only ever stops what started whole. The composition root (lambdad.daemon) lists
them in start order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from grpc_health.v1 import health_pb2

from lambdad.cluster.leadership import Leadership
from lambdad.config import Config
from lambdad.host.pidfile import write_pid_file
from lambdad.lifecycle import Component
from lambdad.logs import LogCapture, LogStore
from lambdad.notify import Notifier
from lambdad.queue import AsyncWorker
from lambdad.runtime.manager import RuntimeManager
from lambdad.scheduler import Housekeeper
from lambdad.store import Store

log = logging.getLogger("lambdad")


class Database:
    """The store (SQLite or PostgreSQL); on stop the last minute's stats are written
    before it closes."""

    name = "store"

    def __init__(self, store: Store, flush: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self._flush = flush

    async def start(self) -> None:
        await self.store.open()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush()
        await self.store.close()


class Logs:
    """The function log files, and the capture that follows instances into them."""

    name = "logs"

    def __init__(self, logs: LogStore, capture: LogCapture) -> None:
        self.logs = logs
        self.capture = capture

    async def start(self) -> None:
        self.logs.start()

    async def stop(self) -> None:
        await self.capture.stop()
        await self.logs.stop()


class Functions:
    """Routes the stored functions, adopts or removes the containers an earlier run left,
    drops orphaned images and starts each function's minimum of instances; stop stops
    every instance and stem cell."""

    name = "functions"

    def __init__(self, load: Callable[[], Awaitable[int]], runtime: RuntimeManager,
                 prune_orphan_images: Callable[[], Awaitable[object]]) -> None:
        self._load = load
        self.runtime = runtime
        self._prune_orphan_images = prune_orphan_images
        self.loaded = 0

    async def start(self) -> None:
        self.loaded = await self._load()
        try:
            adopted, removed = await self.runtime.reconcile()
            if adopted or removed:
                log.info("reconciled: adopted %d instance(s), removed %d container(s) left "
                         "by an earlier run", adopted, removed)
            await self._prune_orphan_images()
            self.runtime.ensure_minimums()
        except BaseException:
            await self.runtime.shutdown()
            raise

    async def stop(self) -> None:
        await self.runtime.shutdown()


class Delivery:
    """Asynchronous invocations: attempts a stop cut short are queued again, then the
    worker delivers; on stop, attempts under way are cancelled (retried next start)."""

    name = "async delivery"

    def __init__(self, table: Any, worker: AsyncWorker) -> None:
        self._table = table
        self.worker = worker

    async def start(self) -> None:
        recovered = await self._table.recover(time.time())
        if recovered:
            log.info("async: %d invocation(s) cut short by the last stop are queued again",
                     recovered)
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()


class Housekeeping:
    """The periodic jobs; first to stop, so nothing scales or reaps while draining."""

    name = "housekeeping"

    def __init__(self, housekeeper: Housekeeper) -> None:
        self.housekeeper = housekeeper

    async def start(self) -> None:
        self.housekeeper.start()

    async def stop(self) -> None:
        await self.housekeeper.stop()


class Ready:
    """The last step: health checks answer SERVING, the pid file is written, systemd hears
    READY=1. Its stop is the first: systemd hears STOPPING=1 before the drain."""

    name = "ready"

    def __init__(self, config: Config, health: Any, notifier: Notifier,
                 status_line: Callable[[], str], describe: Callable[[], str]) -> None:
        self.config = config
        self.health = health
        self.notifier = notifier
        self._status_line = status_line
        self._describe = describe

    async def start(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("lambdad.api.v1.FunctionService",
                              health_pb2.HealthCheckResponse.SERVING)
        if self.config.pid_file is not None:
            write_pid_file(self.config.pid_file)
        self.notifier.ready(self._status_line())
        log.info("lambdad ready: %s pid=%d pid_file=%s", self._describe(), os.getpid(),
                 self.config.pid_file or "none")

    async def stop(self) -> None:
        log.info("lambdad stopping: draining for up to %.0f s", self.config.drain_grace)
        self.notifier.stopping()


class Singletons:
    """Work that must run on one node of a cluster at a time (cron, retention, queue
    recovery: wired by the packages that move them here): started while this node leads,
    stopped when it stops leading and when the daemon stops. On SQLite the one daemon
    leads from the start (LocalLeadership), so its jobs start with this component."""

    name = "singletons"

    def __init__(self, leadership: Leadership, jobs: Sequence[Component]) -> None:
        self.leadership = leadership
        self.jobs = list(jobs)
        self.running = False
        self._active = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._active = True
        self.leadership.subscribe(self._changed, self._changed, now=False)
        await self._settle()

    async def stop(self) -> None:
        self._active = False
        await self._settle()
        for task in list(self._tasks):
            task.cancel()

    def _changed(self) -> None:
        task = asyncio.get_running_loop().create_task(self._settle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self) -> None:
        async with self._lock:
            want = self._active and self.leadership.leader
            if want and not self.running:
                started: list[Component] = []
                try:
                    for job in self.jobs:
                        await job.start()
                        started.append(job)
                except Exception:
                    log.exception("singletons: a job failed to start; stopping the others")
                    for job in reversed(started):
                        with contextlib.suppress(Exception):
                            await job.stop()
                    return
                self.running = True
            elif not want and self.running:
                self.running = False
                for job in reversed(self.jobs):
                    try:
                        await job.stop()
                    except Exception:
                        log.exception("singletons: %s failed to stop", job.name)
