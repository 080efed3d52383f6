"""max_instances across the cluster: a start takes a slot lease first and its stop gives it
back. One daemon counts its own instances in its pools, so `LocalSlots` grants every
lease; in cluster mode `TableSlots` (cluster/slots_table.py) grants a lease only while the
function's leases on all nodes are fewer than its max_instances.

`take` is the waiting rule, apart from the store: a start that finds no slot waits for one
(a lease given back anywhere, polled) while the requests it is for still want it, asking
the holders of idle instances to stop one (`ask`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from lambdad.runtime.pool import StartNotNeeded

RETRY_S = 0.25  # how often a start waiting for a slot asks again


class Slots(Protocol):
    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        """Takes lease `lease` of `function` if fewer than `limit` are held cluster-wide."""
        ...

    async def release(self, lease: str) -> None: ...


class LocalSlots:
    """SQLite mode: the pools' own counts are the limit; nothing to record."""

    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        return True

    async def release(self, lease: str) -> None:
        return None


async def take(slots: Slots, function: str, limit: int, wanted: Callable[[], bool],
               ask: Callable[[str], Awaitable[None]] | None = None,
               retry_s: float = RETRY_S) -> str:
    """A lease id for a start of `function`, once one is granted; StartNotNeeded when the
    requests it was for no longer want it while it waits."""
    lease = uuid.uuid4().hex
    asked = False
    while not await slots.acquire(function, lease, limit):
        if not wanted():
            raise StartNotNeeded
        if ask is not None and not asked:
            await ask(function)  # once per wait: holders of idle instances stop one
            asked = True
        await asyncio.sleep(retry_s)
    return lease
