"""Shared stats rollups on a real PostgreSQL: every node flushes its own per-minute rows
into the one invocation_stats table, and `lambdactl stats` on any node reads them.

Attack on the old read-then-upsert: two nodes flushing the same minute at the same time
both read the old row (or none) and the second write replaced the first's counts.
"""

from __future__ import annotations

import asyncio

from lambdad.metrics.stats import StatsRow
from lambdad.store import Store
from tests.support.postgres import Postgres

FLUSHES = 40  # per node


def test_two_nodes_flushing_one_minute_at_once_both_count(postgres: Postgres) -> None:
    name = postgres.create_database()

    async def node(store: Store, node: int) -> None:
        for i in range(FLUSHES):
            row = StatsRow("greet", 1000, invocations=1, errors=i % 2, cold_starts=0,
                           duration_sum=0.5, buckets={3: 1}, instances_max=node + 1)
            other = StatsRow("other", 1000 + i % 3, invocations=2)
            # Different orders on the two nodes: the sorted write takes locks in one.
            await store.add_stats([row, other] if node else [other, row])

    async def scenario() -> list[StatsRow]:
        stores = [Store(postgres.url(name), node_id=f"n{i}") for i in range(3)]
        for store in stores:
            await store.open()
        try:
            await asyncio.gather(node(stores[0], 0), node(stores[1], 1))
            return await stores[2].stats_since(0)
        finally:
            for store in stores:
                await store.close()

    try:
        rows = {(r.function, r.minute): r for r in asyncio.run(scenario())}
    finally:
        postgres.drop_database(name)
    greet = rows[("greet", 1000)]
    assert greet.invocations == 2 * FLUSHES
    assert greet.errors == FLUSHES
    assert greet.buckets == {3: 2 * FLUSHES}
    assert abs(greet.duration_sum - FLUSHES) < 1e-6
    assert greet.instances_max == 2  # the largest one node saw
    assert sum(r.invocations for (f, _), r in rows.items() if f == "other") == 4 * FLUSHES
