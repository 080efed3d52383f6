"""Who runs the cluster's singletons (cron, retention, queue recovery): the holder of
one PostgreSQL advisory lock, taken on the node's session connection. A session that
dies frees it at once; the next node to try (each heartbeat) gets it.

The leader checks at each heartbeat that it still holds the lock (a backend terminated
by an operator or a peer's mark-down loses it without the client noticing at once), and
gives up leadership as soon as its session fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lambdad.cluster")

LOCK_CLASS = 1279348034  # 'LAMB' (store/pg_migrations.py: 1 = migrations)
LEADER_LOCK = 2

TRY = "SELECT pg_try_advisory_lock(%s, %s)"
HELD = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND classid = %s AND objid = %s AND objsubid = 2 AND granted "
        "AND pid = pg_backend_pid())")
RELEASE = "SELECT pg_advisory_unlock(%s, %s)"


class Leadership:
    """`on_gained` and `on_lost` are called on the event loop, each once per change."""

    def __init__(self, stand_back: float = 0.0) -> None:
        self.leader = False
        # After losing its session a node lets the others try first for this long: the
        # lock goes to a node whose session stayed up, not back to the flapping one.
        self.stand_back = stand_back
        self._wait_until = 0.0
        self._on_gained: list[Callable[[], None]] = []
        self._on_lost: list[Callable[[], None]] = []

    def subscribe(self, on_gained: Callable[[], None], on_lost: Callable[[], None], *,
                  now: bool = True) -> None:
        """Calls back on each change from now on; with `now`, `on_gained` at once if
        this node leads already."""
        self._on_gained.append(on_gained)
        self._on_lost.append(on_lost)
        if now and self.leader:
            on_gained()

    async def tick(self, conn: Any) -> bool:
        """Tries to become leader, or checks it still is; returns whether it leads."""
        if not self.leader:
            if time.monotonic() < self._wait_until:
                return False
            row = await (await conn.execute(TRY, (LOCK_CLASS, LEADER_LOCK))).fetchone()
            if row is not None and row[0]:
                self._set(True)
        else:
            row = await (await conn.execute(HELD, (LOCK_CLASS, LEADER_LOCK))).fetchone()
            if row is None or not row[0]:
                log.warning("cluster: this node no longer holds the leader lock")
                self._set(False)
        return self.leader

    def lost(self) -> None:
        """The session failed: the lock is (or soon will be) free for others."""
        self._wait_until = time.monotonic() + self.stand_back
        self._set(False)

    async def release(self, conn: Any) -> None:
        """A clean stop: lets another node lead at once."""
        if self.leader:
            self._set(False)
            await conn.execute(RELEASE, (LOCK_CLASS, LEADER_LOCK))

    def _set(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        log.info("cluster: this node %s the leader", "is now" if leader else "is no longer")
        for callback in self._on_gained if leader else self._on_lost:
            try:
                callback()
            except Exception:
                log.exception("cluster: a leadership callback failed")


class LocalLeadership(Leadership):
    """SQLite: the one daemon leads from the start."""

    def __init__(self) -> None:
        super().__init__()
        self.leader = True
