"""What the control plane reports and changes nothing: functions, their stats and logs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from lambdad.control.locks import FunctionLocks
from lambdad.control.model import FunctionView
from lambdad.control.ports import Runtime
from lambdad.functions import validate_name
from lambdad.logs import LogEntry, LogQuery, LogStore
from lambdad.metrics import Metrics
from lambdad.metrics.stats import WindowStats, summarize
from lambdad.runtime.cells import ClassStats
from lambdad.store import FunctionRecord, Store

# (function, its 5m/1h/1d windows, instances now, their memory)
FunctionStats = tuple[str, list[WindowStats], int, int]


class Queries:
    def __init__(self, *, store: Store, runtime: Runtime, locks: FunctionLocks,
                 url: Callable[[str], str], metrics: Metrics | None = None,
                 logs: LogStore | None = None) -> None:
        self._store = store
        self._runtime = runtime
        self._locks = locks
        self._url = url
        self._metrics = metrics
        self._logs = logs

    async def list_functions(self) -> list[FunctionView]:
        return [self._view(record) for record in await self._store.list_functions()]

    async def get_function(self, name: str) -> FunctionView:
        validate_name(name)
        return self._view(await self._store.get_function(name))

    def _view(self, record: FunctionRecord) -> FunctionView:
        if self._locks.busy(record.name):
            status = "deploying"
        elif self._runtime.is_warm(record.name):
            status = "ready"
        else:
            status = "idle"
        return FunctionView(record=record, status=status, url=self._url(record.name),
                            instances=self._runtime.counts(record.name))

    async def stats(
        self, name: str | None
    ) -> tuple[list[FunctionStats], list[tuple[ClassStats, int]]]:
        """The stats of one function or all, and (stem-cell class counts, their memory)
        for every class."""
        if name:
            validate_name(name)
            names = [(await self._store.get_function(name)).name]
        else:
            names = [record.name for record in await self._store.list_functions()]
        await self.flush_stats()
        now_minute = int(time.time() // 60)
        rows = await self._store.stats_since(now_minute - 1440, name or None)
        memory, cell_memory = await self._runtime.memory()
        result = []
        for function in names:
            mine = [row for row in rows if row.function == function]
            result.append((function, summarize(mine, now_minute),
                           self._runtime.instance_count(function), memory.get(function, 0)))
        cells = [(c, cell_memory.get(c.cell_class, 0)) for c in self._runtime.cell_stats()]
        return result, cells

    async def flush_stats(self) -> None:
        """Moves the in-memory per-minute rows into the store (periodic, and at stop)."""
        if self._metrics is not None:
            for name in self._runtime.routed():
                self._metrics.stats.instances(name, self._runtime.instance_count(name),
                                              time.time())
            await self._store.add_stats(self._metrics.stats.drain())

    async def logs(self, query: LogQuery, *, follow: bool) -> AsyncIterator[LogEntry]:
        """Kept lines that match, oldest first; with `follow`, then new ones until cancelled."""
        validate_name(query.function)
        await self._store.get_function(query.function)  # NotFound for an unknown name
        store = self._logs
        if store is None:
            return
        queue = store.subscribe(query.function) if follow else None
        subscribed = datetime.now(UTC)
        try:
            backlog = await store.read(query)
            # Lines that arrived after subscribing can be in the backlog too: skip those.
            recent = {e for e in backlog if e.time >= subscribed - timedelta(seconds=5)}
            for entry in backlog:
                yield entry
            if queue is None:
                return
            live = replace(query, since=None, tail=0)
            while True:
                entry = await queue.get()
                if live.matches(entry) and entry not in recent:
                    yield entry
        finally:
            if queue is not None:
                store.unsubscribe(query.function, queue)
