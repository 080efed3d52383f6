"""What the control plane reports and changes nothing: functions, their stats and logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from lambdad.cluster.table import NodeRow
from lambdad.control.locks import FunctionLocks
from lambdad.control.model import FunctionView
from lambdad.control.ports import Runtime
from lambdad.functions import validate_name
from lambdad.logs import LogEntry, LogQuery, LogStore
from lambdad.logs.merge import ReorderBuffer, cut_backlog, merge_by_time
from lambdad.metrics import Metrics
from lambdad.metrics.stats import WindowStats, summarize
from lambdad.runtime.cells import ClassStats
from lambdad.store import FunctionRecord, Store

# (function, its 5m/1h/1d windows, instances now, their memory)
FunctionStats = tuple[str, list[WindowStats], int, int]

log = logging.getLogger("lambdad.control")

REORDER_WINDOW = 0.25  # s a followed line waits for older lines of slower nodes
BACKLOG_QUIET = 0.3  # s without a line that ends the backlog of a followed fan-out
BACKLOG_MAX = 3.0  # s the backlog of a followed fan-out is collected at most
PEER_TIMEOUT = 10.0  # s a peer has to send its lines (not followed)
MEMBERS_EVERY = 1.0  # s between looks at which nodes are up while following
FOLLOW_BUFFER = 4096  # lines of a followed fan-out waiting for the follower


class LogPeers(Protocol):
    """The other nodes' lines (lambdad/cluster/peers.py)."""

    async def live(self) -> list[NodeRow]: ...

    def logs(self, node: NodeRow, query: LogQuery, *, follow: bool,
             timeout: float | None = None) -> AsyncIterator[LogEntry]: ...


@dataclass(frozen=True)
class NodeSelf:
    """This daemon as `lambdactl nodes` shows it; `name` also tags its log lines in
    cluster mode (`cluster`), where `nodes`/`leader` read the shared table."""

    id: str
    name: str
    grpc_address: str
    gateway_address: str
    version: str
    started_at: datetime
    cluster: bool = False
    nodes: Callable[[], Awaitable[list[NodeRow]]] | None = None
    leader: Callable[[], Awaitable[str]] | None = None


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
        self.node: NodeSelf | None = None
        self.peers: LogPeers | None = None

    async def nodes(self) -> tuple[list[NodeRow], str]:
        """Every node of the cluster and the leader's id; on SQLite, this daemon alone
        (it leads)."""
        me = self.node
        if me is None:
            return [], ""
        if me.cluster and me.nodes is not None:
            rows = await me.nodes()
            leader = await me.leader() if me.leader is not None else ""
            return rows, leader
        names = self._runtime.routed()
        now = datetime.now(UTC)
        row = NodeRow(
            id=me.id, name=me.name, grpc_address=me.grpc_address,
            gateway_address=me.gateway_address, software_version=me.version, state="up",
            started_at=me.started_at, heartbeat_at=now, heartbeat_seq=0,
            instances=sum(self._runtime.instance_count(n) for n in names),
            cells=sum(c.ready for c in self._runtime.cell_stats()),
            load=sum(self._runtime.counts(n).busy for n in names), down_at=None)
        return [row], me.id

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
            rows = self._metrics.stats.drain()
            try:
                await self._store.add_stats(rows)
            except BaseException:
                self._metrics.stats.restore(rows)  # written by the next flush instead
                raise

    async def logs(self, query: LogQuery, *, follow: bool,
                   local_only: bool = False) -> AsyncIterator[LogEntry]:
        """Kept lines that match, oldest first; with `follow`, then new ones until
        cancelled. In cluster mode every live node's lines, merged by time and tagged
        with their node, unless `local_only` (what a peer asks: no fan-out again)."""
        validate_name(query.function)
        await self._store.get_function(query.function)  # NotFound for an unknown name
        if local_only or self.peers is None:
            async for entry in self._local(query, follow=follow):
                yield entry
        elif follow:
            async for entry in self._follow_all(query, self.peers):
                yield entry
        else:
            for entry in await self._gather_all(query, self.peers):
                yield entry

    async def _gather_all(self, query: LogQuery, peers: LogPeers) -> list[LogEntry]:
        """Each live node's last `tail` lines, merged; a node that does not answer in
        time is left out (and logged)."""

        async def collect(source: AsyncIterator[LogEntry], name: str) -> list[LogEntry]:
            try:
                return [entry async for entry in source]
            except Exception as exc:  # a peer down or unreachable: the others still count
                log.warning("logs of %s from node %s left out: %s", query.function, name,
                            _reason(exc))
                return []

        nodes = await _live(peers)
        sources = [collect(self._local(query, follow=False), "(this node)")]
        sources += [collect(peers.logs(node, query, follow=False, timeout=PEER_TIMEOUT),
                            node.name) for node in nodes]
        return merge_by_time(await asyncio.gather(*sources), query.tail)

    async def _follow_all(self, query: LogQuery, peers: LogPeers) -> AsyncIterator[LogEntry]:
        """Every node's stream into one queue; the backlogs (until they go quiet) are
        cut to `tail` and sorted, then live lines go through a reorder window. Nodes
        that come up are joined (from when the follow began, or their last line), nodes
        that go down or whose stream breaks are dropped until they are up again."""
        # Bounded: a follower slower than the nodes slows their streams, not our memory.
        inbox: asyncio.Queue[tuple[str, LogEntry]] = asyncio.Queue(FOLLOW_BUFFER)
        subscribed = datetime.now(UTC)
        last: dict[str, datetime] = {}
        pumps: dict[str, asyncio.Task[None]] = {}

        async def pump(key: str, source: AsyncIterator[LogEntry], name: str,
                       after: datetime | None = None) -> None:
            try:
                async for entry in source:
                    if after is not None and entry.time <= after:
                        continue  # a rejoined stream repeats what it sent before
                    seen = last.get(key)
                    if seen is None or entry.time > seen:
                        last[key] = entry.time
                    await inbox.put((key, entry))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("log stream of %s from node %s ended: %s", query.function, name,
                         _reason(exc))

        def join(node: NodeRow, first: bool = False) -> None:
            """At the start: its backlog as asked; later (it came up, or its stream
            broke): what it has since its last line, or since the follow began."""
            after = None if first else last.get(node.id)
            asked = query if first else replace(query, since=after or subscribed, tail=0)
            pumps[node.id] = asyncio.create_task(
                pump(node.id, peers.logs(node, asked, follow=True), node.name, after))

        local = asyncio.create_task(pump("", self._local(query, follow=True), "(this node)"))
        try:
            for node in await _live(peers):
                join(node, first=True)
            # The backlogs: until every stream has been quiet for a moment.
            batch: list[LogEntry] = []
            deadline = time.monotonic() + BACKLOG_MAX
            while (left := deadline - time.monotonic()) > 0:
                try:
                    _, entry = await asyncio.wait_for(inbox.get(), min(BACKLOG_QUIET, left))
                except TimeoutError:
                    break
                batch.append(entry)
            for entry in cut_backlog(batch, subscribed, query.tail):
                yield entry
            buffer = ReorderBuffer(REORDER_WINDOW)
            next_look = time.monotonic() + MEMBERS_EVERY
            while True:
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + MEMBERS_EVERY
                    await self._rejoin(peers, pumps, join)
                due = buffer.next_release()
                wait = max(0.0, min(next_look, due if due is not None else next_look)
                           - time.monotonic())
                try:
                    _, entry = await asyncio.wait_for(inbox.get(), wait)
                    buffer.push(entry, time.monotonic())
                except TimeoutError:
                    pass
                for entry in buffer.release(time.monotonic()):
                    yield entry
        finally:
            tasks = [local, *pumps.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _rejoin(self, peers: LogPeers, pumps: dict[str, asyncio.Task[None]],
                      join: Callable[[NodeRow], None]) -> None:
        try:
            live = {node.id: node for node in await peers.live()}
        except Exception as exc:  # the database away: keep the streams there are
            log.info("cannot list the nodes to follow logs: %s", _reason(exc))
            return
        for node_id, task in list(pumps.items()):
            if node_id not in live:
                task.cancel()  # down: dropped (joined again when it is up)
                del pumps[node_id]
            elif task.done():
                del pumps[node_id]  # its stream broke while it is up: retried now
        for node_id, node in live.items():
            if node_id not in pumps:
                join(node)

    async def _local(self, query: LogQuery, *, follow: bool) -> AsyncIterator[LogEntry]:
        """This node's lines (tagged with its name in cluster mode)."""
        name = self.node.name if self.node is not None and self.node.cluster else ""
        async for entry in self._local_lines(query, follow=follow):
            yield replace(entry, node=name) if name else entry

    async def _local_lines(self, query: LogQuery, *, follow: bool) -> AsyncIterator[LogEntry]:
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


async def _live(peers: LogPeers) -> list[NodeRow]:
    try:
        return await peers.live()
    except Exception as exc:  # the database away: this node's lines still answer
        log.warning("cannot list the nodes for a log fan-out: %s", _reason(exc))
        return []


def _reason(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            return str(details())
        except Exception:  # pragma: no cover - a grpc error without details
            pass
    return str(exc) or type(exc).__name__
