"""Attack on cron across a cluster: two runners that both act as leader (a split brain,
or a new leader catching up while the old one still fires) on one real PostgreSQL, each
with its own store connection and node id, fire the same schedule. Every tick must have
one fire row and one invocation: the (schedule, tick) key refuses the second fire in the
transaction that would have queued its event. Without the key both runners queue one."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule
from lambdad.scheduler.runner import CronRunner, scheduled_invocation
from lambdad.store import Store
from tests.support.postgres import Postgres
from tests.support.store import opened_store

RUN_S = 3.5  # a few one-second ticks


async def _idle(_invocation: str) -> str:
    return "succeeded"


async def _no_cancel(_invocation: str, _reason: str) -> None:
    return None


def _runner(store: Store, node: str) -> CronRunner:
    def prepare(schedule: Schedule, when: float, catch_up: bool) -> AsyncInvocation:
        return scheduled_invocation(lambda _name: True, schedule, when, catch_up)

    return CronRunner(store.schedules, prepare, _idle, _no_cancel, node=node)


def test_two_leaders_fire_each_tick_once(postgres: Postgres) -> None:
    url = postgres.url(postgres.create_database())

    async def main() -> tuple[list[tuple[int, str, str]], list[AsyncInvocation]]:
        async with opened_store(url, "f") as a:
            b = Store(url, node_id="node-b")
            await b.open()
            try:
                await a.schedules.insert(Schedule(
                    id="every-second", function="f", cron="* * * * * *", tz="UTC",
                    data=b"{}", overlap="allow", created_at=time.time()))
                runners = [_runner(a, "node-a"), _runner(b, "node-b")]
                await asyncio.gather(*(r.start() for r in runners))
                await asyncio.sleep(RUN_S)
                await asyncio.gather(*(r.stop() for r in runners))
                fires = await a.schedules.fires("every-second")
                invocations = await a.invocations.of_function("f", "", 1000)
                return fires, invocations
            finally:
                await b.close()

    fires, invocations = asyncio.run(main())
    assert len(fires) >= 3, fires
    assert {node for _, node, _ in fires} <= {"node-a", "node-b"}
    ticks = [tick for tick, _, _ in fires]
    assert ticks == sorted(set(ticks))  # each tick once (the key)
    # each invocation's scheduled time is a fired tick, and none is there twice
    times = sorted(datetime.fromisoformat(json.loads(i.payload)["scheduled_time"]).timestamp()
                   for i in invocations)
    assert times == [float(t) for t in ticks], (times, ticks)
    assert sorted(i.id for i in invocations) == sorted(inv for _, _, inv in fires)
