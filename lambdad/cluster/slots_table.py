"""Instance leases on PostgreSQL: max_instances across the cluster (runtime/slots.py).

A lease is granted under a transaction advisory lock of its function (class
SLOT_LOCK_CLASS, fkey(function)): the count of the function's leases and the insert are
then one step for the whole cluster (under READ COMMITTED two nodes counting at once
would both see room). A node marked down loses its leases in the mark-down transaction
(cluster/table.py RELEASE_LEASES); a node starting drops the leases its last run left."""

from __future__ import annotations

import logging
from typing import Any

from lambdad.queue.pg_table import fkey

log = logging.getLogger("lambdad.cluster")

SLOT_LOCK_CLASS = 1279348037


class SlotTable:
    """Blocking calls on the store's thread."""

    def __init__(self, db: Any, node_id: str) -> None:
        self._db = db
        self.node_id = node_id

    def acquire(self, function: str, lease: str, limit: int) -> bool:
        with self._db.atomic():
            self._db.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)",
                                 (SLOT_LOCK_CLASS, fkey(function)))
            cursor = self._db.execute_sql(
                "INSERT INTO instance_leases (instance, function, node, purpose, acquired_at) "
                "SELECT %s, %s, %s, 'demand', now() WHERE (SELECT count(*) FROM "
                "instance_leases WHERE function = %s) < %s",
                (lease, function, self.node_id, function, limit))
            return int(cursor.rowcount) == 1

    def retake(self, function: str, lease: str, limit: int) -> bool:
        """The lease of a running instance of this node: kept if its row is there, else
        taken again under the slot lock while the function has fewer than `limit`."""
        with self._db.atomic():
            self._db.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)",
                                 (SLOT_LOCK_CLASS, fkey(function)))
            held = self._db.execute_sql(
                "SELECT 1 FROM instance_leases WHERE instance = %s AND node = %s",
                (lease, self.node_id)).fetchone()
            if held is not None:
                return True
            return self.acquire(function, lease, limit)

    def release(self, lease: str) -> None:
        self._db.execute_sql("DELETE FROM instance_leases WHERE instance = %s AND node = %s",
                             (lease, self.node_id))

    def reset(self) -> int:
        """This node's leases of an earlier run (its instances were reconciled away or
        will be leased again as they start)."""
        cursor = self._db.execute_sql("DELETE FROM instance_leases WHERE node = %s",
                                      (self.node_id,))
        return int(cursor.rowcount)

    def held(self, function: str) -> int:
        row = self._db.execute_sql("SELECT count(*) FROM instance_leases WHERE function = %s",
                                   (function,)).fetchone()
        return int(row[0])


class TableSlots:
    """runtime/slots.Slots over the store's `slots` facade (async, on the store thread)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._reset = False

    async def _first(self) -> None:
        """The first call of this run drops the leases of the last run (its instances
        were reconciled away, or are adopted and leased again)."""
        if not self._reset:  # (set first: a second call queues behind it)
            self._reset = True
            dropped = await self._table.reset()
            if dropped:
                log.info("cluster: %d instance lease(s) of this node's last run dropped",
                         dropped)

    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        await self._first()
        granted: bool = await self._table.acquire(function, lease, limit)
        return granted

    async def retake(self, function: str, lease: str, limit: int) -> bool:
        await self._first()
        kept: bool = await self._table.retake(function, lease, limit)
        return kept

    async def release(self, lease: str) -> None:
        await self._table.release(lease)
