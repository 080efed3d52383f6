"""ScheduleTable.fire on both engines: a tick fires once (a second fire writes nothing),
a full queue records the tick as skipped without an invocation, a deleted schedule fires
nothing; the runner's reload takes schedules another node made or deleted; Singletons
runs cron only while this node leads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lambdad.cluster.leadership import Leadership
from lambdad.cluster.singletons import singleton_jobs
from lambdad.components import Singletons
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule
from lambdad.scheduler.runner import CronRunner, scheduled_invocation
from tests.support.store import StoreBackend, opened_store

T0 = 1_800_000_000.0


def _schedule(sid: str, cron: str = "0 * * * *") -> Schedule:
    return Schedule(id=sid, function="f", cron=cron, tz="UTC", data=b"{}", overlap="allow",
                    created_at=T0 - 86400)


def _event(n: int) -> AsyncInvocation:
    return AsyncInvocation(id=f"inv-{n}", function="f", payload=b"{}", source="schedule",
                           status="queued", attempts=0, created_at=T0, next_attempt_at=T0)


def test_a_tick_fires_once_and_a_full_queue_skips_it(store_backend: StoreBackend) -> None:
    async def main() -> None:
        async with opened_store(store_backend.database, "f") as store:
            await store.schedules.insert(_schedule("sched-1"))
            assert await store.schedules.fire("sched-1", T0, _event(1), 0, "a",
                                              "enqueued") == "fired"
            assert await store.schedules.fire("sched-1", T0, _event(2), 0, "b",
                                              "enqueued") == "duplicate"
            assert await store.schedules.fires("sched-1") == [(round(T0), "a", "inv-1")]
            assert [i.id for i in await store.invocations.of_function("f", "", 10)] == ["inv-1"]
            # one event queued already and a cap of one: the next tick is skipped
            assert await store.schedules.fire("sched-1", T0 + 3600, _event(3), 1, "a",
                                              "enqueued") == "full"
            assert (await store.schedules.fires("sched-1"))[-1] == (round(T0 + 3600), "a", "")
            assert (await store.schedules.get("sched-1")).last_result == "skipped"
            assert await store.schedules.last_ticks() == {"sched-1": T0 + 3600}
            await store.schedules.delete("sched-1")
            assert await store.schedules.fire("sched-1", T0 + 7200, _event(4), 0, "a",
                                              "enqueued") == "gone"
            assert await store.schedules.fires("sched-1") == []
            assert [i.id for i in await store.invocations.of_function("f", "", 10)] == ["inv-1"]

    asyncio.run(main())


async def _idle(_invocation: str) -> str:
    return "succeeded"


async def _no_cancel(_invocation: str, _reason: str) -> None:
    return None


def _runner(store: object) -> CronRunner:
    def prepare(schedule: Schedule, when: float, catch_up: bool) -> AsyncInvocation:
        return scheduled_invocation(lambda _name: True, schedule, when, catch_up)

    return CronRunner(store.schedules, prepare, _idle, _no_cancel)


def test_reload_takes_what_another_node_created_or_deleted(store_backend: StoreBackend) -> None:
    async def main() -> None:
        async with opened_store(store_backend.database, "f") as store:
            await store.schedules.insert(_schedule("old"))
            runner = _runner(store)
            await runner.reload()  # not running: nothing to do
            assert runner.next_run("old") is None
            await runner.start()
            try:
                assert runner.next_run("old") is not None
                await store.schedules.insert(_schedule("new"))  # as if through another node
                await store.schedules.delete("old")
                await runner.reload()
                assert runner.next_run("new") is not None and runner.next_run("old") is None
            finally:
                await runner.stop()
            assert runner.next_run("new") is None and not runner.running

    asyncio.run(main())


class Switch(Leadership):
    def flip(self, leader: bool) -> None:
        self._set(leader)


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)


def test_cron_runs_only_while_this_node_leads(store_backend: StoreBackend) -> None:
    async def main() -> None:
        async with opened_store(store_backend.database, "f") as store:
            await store.schedules.insert(_schedule("sched-1", "* * * * * *"))
            runner = _runner(store)
            leadership = Switch()
            singletons = Singletons(leadership, singleton_jobs(
                store, runner, None, catch_up_window_s=3600))
            await singletons.start()
            try:
                await asyncio.sleep(1.2)
                assert not runner.running and await store.schedules.fires("sched-1") == []
                leadership.flip(True)
                await _until(lambda: runner.running)
                await _until_fired(store, 1)
                leadership.flip(False)
                await _until(lambda: not runner.running)
                fired = len(await store.schedules.fires("sched-1"))
                await asyncio.sleep(1.5)
                assert len(await store.schedules.fires("sched-1")) == fired  # stopped firing
            finally:
                await singletons.stop()

    async def _until_fired(store: object, n: int) -> None:
        deadline = time.monotonic() + 10
        while len(await store.schedules.fires("sched-1")) < n:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    asyncio.run(main())
