"""max_instances across the cluster: a start takes a slot lease first and its stop gives it
back. One daemon counts its own instances in its pools, so `LocalSlots` grants every
lease; in cluster mode `TableSlots` (cluster/slots_table.py) grants a lease only while the
function's leases on all nodes are fewer than its max_instances.

`take` is the waiting rule, apart from the store: a start that finds no slot waits for one
(a lease given back anywhere, polled) while the requests it is for still want it, asking
the holders of idle instances to stop one (`ask`). `keep_within` is the rule for
instances that run already and may hold no lease: the ones a restart adopts, and after a
rejoin (this node was marked down while alive, its leases released) the ones it ran: each
takes (or keeps) a lease in the order given, and those that find none are to stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from lambdad.runtime.pool import StartNotNeeded

RETRY_S = 0.25  # how often a start waiting for a slot asks again


class Slots(Protocol):
    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        """Takes lease `lease` of `function` if fewer than `limit` are held cluster-wide."""
        ...

    async def release(self, lease: str) -> None: ...

    async def retake(self, function: str, lease: str, limit: int) -> bool:
        """Lease `lease` of a running instance: True if it is held already, else as
        `acquire` (a rejoin after the node's leases were released, an adoption)."""
        ...


class LocalSlots:
    """SQLite mode: the pools' own counts are the limit; nothing to record."""

    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        return True

    async def release(self, lease: str) -> None:
        return None

    async def retake(self, function: str, lease: str, limit: int) -> bool:
        return True


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


async def keep_within(slots: Slots, running: Sequence[tuple[str, str, int]]) -> list[bool]:
    """Per running instance (function, lease, max_instances), in the order to keep them
    (busy first): whether it holds a lease now. Those without one are beyond the
    function's max_instances across the cluster, and should stop."""
    return [await slots.retake(function, lease, limit) for function, lease, limit in running]
