"""This node as a member of the cluster: its row in the nodes table, its heartbeats, its
watch over the others, and its leadership attempt, all on the session connection.

Every `down_after / 5` seconds: beat (a beat that finds this node marked `down`, after a
partition or a stall, sets it `up` again), try for or confirm leadership, and read the
others' heartbeat sequences; one silent for `down_after` is marked down by a
conditional UPDATE (of racing observers exactly one wins), its leases are released in
that transaction (and whatever later packages hook into `releases`), a `node` change is
announced, and its connections left on the server are terminated (a half-open TCP would
keep its advisory locks). A clean stop leaves the row `left` and gives up leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lambdad.cluster import table
from lambdad.cluster.changes import ChangeApplier
from lambdad.cluster.leadership import Leadership
from lambdad.cluster.liveness import LivenessObserver
from lambdad.cluster.session import Session
from lambdad.store.database import CHANGES_CHANNEL

log = logging.getLogger("lambdad.cluster")

STOP_WAIT = 2.0  # seconds a clean stop waits to leave the nodes table

# What a mark-down also releases, in its transaction: (cursor, dead node id) -> awaitable.
Release = Callable[[Any, str], Awaitable[object]]
# What this node does when it is up again after a reconnect or after being marked down
# while alive (re-take its leases: P5), given the session connection.
Rejoin = Callable[[Any], Awaitable[object]]


@dataclass(frozen=True)
class NodeInfo:
    id: str
    name: str
    grpc_address: str
    gateway_address: str
    software_version: str


@dataclass(frozen=True)
class Load:
    instances: int = 0
    cells: int = 0
    load: int = 0


class Membership:
    name = "membership"

    def __init__(self, url: str, node: NodeInfo, *, down_after: float,
                 applier: ChangeApplier, leadership: Leadership,
                 load: Callable[[], Load] = Load, start_timeout: float = 10.0) -> None:
        self.node = node
        self.down_after = down_after
        self.interval = down_after / 5
        self.applier = applier
        self.leadership = leadership
        self._load = load
        self._start_timeout = start_timeout
        self.liveness = LivenessObserver(down_after)
        self.releases: list[Release] = [
            lambda cur, node_id: cur.execute(table.RELEASE_LEASES, {"id": node_id})]
        self.rejoins: list[Rejoin] = []
        self.on_notify: dict[str, Callable[[str], object]] = {CHANGES_CHANNEL: applier.submit}
        self.session = Session(url, node.id, channels=[CHANGES_CHANNEL],
                               on_notify=self._notified, on_connected=self._connected,
                               on_lost=self._lost)
        self._beating: asyncio.Task[None] | None = None
        self.marked_down: list[str] = []  # names this node marked down (logs, tests)
        self._late: set[asyncio.Task[None]] = set()  # beats given up on, still ending

    async def start(self) -> None:
        try:
            await self.session.start(self._start_timeout)
        except ConnectionError as exc:
            from lambdad.host import StartupError

            raise StartupError(str(exc)) from None
        self._beating = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")

    async def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        conn = self.session.conn
        if conn is not None:
            async def leave() -> None:
                await self.leadership.release(conn)
                await conn.execute(table.LEAVE, {"id": self.node.id})

            # Bounded: a database that does not answer must not hold up the stop (the
            # row then goes `down` by its peers instead of `left`).
            leaving = asyncio.create_task(leave())
            await asyncio.wait({leaving}, timeout=STOP_WAIT)
            if leaving.done():
                with contextlib.suppress(Exception):
                    leaving.result()
            else:
                leaving.cancel()
                self._late.add(leaving)
                leaving.add_done_callback(self._late_done)
        self.leadership.lost()
        await self.session.stop()

    # The session's callbacks

    def _notified(self, channel: str, payload: str) -> None:
        handler = self.on_notify.get(channel)
        if handler is not None:
            handler(payload)

    async def _connected(self, conn: Any, first: bool) -> None:
        n = self.node
        await conn.execute(table.REGISTER if first else table.REJOIN, {
            "id": n.id, "name": n.name, "grpc": n.grpc_address, "gateway": n.gateway_address,
            "version": n.software_version})
        self.liveness.reset()  # nobody's silence was watched while away
        await self.leadership.tick(conn)
        if not first:  # announcements may have been missed: read everything again
            self.applier.reload_all()
            for rejoin in self.rejoins:
                await rejoin(conn)

    def _lost(self) -> None:
        self.leadership.lost()

    # Heartbeats

    async def _beat_forever(self) -> None:
        try:
            await self._beat_loop()
        finally:
            for task in list(self._late):
                task.cancel()

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            conn = self.session.conn
            if conn is None:
                continue
            # A beat that hangs (a partition: TCP keepalives take longer to tell, a
            # Unix socket has none) must not leave this node leading while its peers
            # mark it down. Not awaited once late: cancelling a query makes psycopg
            # wait for the server, which may never answer.
            beat = asyncio.create_task(self.beat(conn))
            done, _ = await asyncio.wait({beat}, timeout=self.down_after / 2)
            if not done:
                beat.cancel()
                self._late.add(beat)
                beat.add_done_callback(self._late_done)
                self.leadership.lost()
                self.session.broken(f"no answer to a heartbeat for {self.down_after / 2:g} s")
            elif (exc := beat.exception()) is not None:  # psycopg's: the session is gone
                self.leadership.lost()
                self.session.broken(f"heartbeat failed: {exc}")

    def _late_done(self, task: asyncio.Task[None]) -> None:
        self._late.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it failed as expected

    async def beat(self, conn: Any) -> None:
        load = self._load()
        cur = await conn.execute(table.HEARTBEAT, {
            "id": self.node.id, "instances": load.instances, "cells": load.cells,
            "load": load.load})
        row = await cur.fetchone()
        if row is None or row[0] != "up":
            log.warning("cluster: this node was marked %s by another node; it is up again",
                        "gone" if row is None else row[0])
            await self._connected(conn, first=row is None)
        await self.leadership.tick(conn)
        rows = await (await conn.execute(table.LIVE_SEQS, {"id": self.node.id})).fetchall()
        for node_id, seq in self.liveness.observe(time.monotonic(),
                                                  {r[0]: int(r[1]) for r in rows}):
            await self.mark_down(conn, node_id, seq)

    async def mark_down(self, conn: Any, node_id: str, seq: int) -> bool:
        """Marks `node_id` down if it is still up at sequence `seq`; True if this node
        did it (and released what it held)."""
        async with conn.transaction():
            cur = conn.cursor()
            await cur.execute(table.MARK_DOWN, {"id": node_id, "seq": seq})
            row = await cur.fetchone()
            if row is None:
                return False  # it beat meanwhile, or someone else marked it
            for release in self.releases:
                await release(cur, node_id)
            await cur.execute(table.ANNOUNCE, table.announcement(self.node.id, "node", node_id))
        name = row[0]
        self.marked_down.append(name)
        log.warning("cluster: node %s (%s) silent for %.0f s: marked down", name, node_id,
                    self.down_after)
        with contextlib.suppress(Exception):
            await conn.execute(table.TERMINATE, {"pattern": table.backends_of(node_id)})
        return True
