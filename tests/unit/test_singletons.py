"""Singletons (lambdad/components.py) follow leadership (lambdad/cluster/leadership.py):
their jobs run while this node leads and stop when it stops leading or stops; on SQLite
the one daemon leads from the start."""

from __future__ import annotations

import asyncio
from typing import Any

from lambdad.cluster.leadership import Leadership, LocalLeadership
from lambdad.components import Singletons


class Job:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


class Lock:
    """The advisory lock as the database answers: free or held by this session."""

    def __init__(self) -> None:
        self.free = True
        self.mine = False

    async def execute(self, sql: str, params: Any) -> Any:
        lock = self

        class Cursor:
            async def fetchone(self) -> tuple[bool]:
                if "pg_try_advisory_lock" in sql:
                    if lock.free:
                        lock.free, lock.mine = False, True
                    return (lock.mine,)
                if "pg_advisory_unlock" in sql:
                    lock.free, lock.mine = True, False
                    return (True,)
                return (lock.mine,)  # pg_locks: still held by this session?

        return Cursor()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_jobs_run_only_while_this_node_leads() -> None:
    async def main() -> None:
        log: list[str] = []
        leadership = Leadership()
        singletons = Singletons(leadership, [Job("cron", log), Job("prune", log)])
        await singletons.start()
        assert log == [] and not singletons.running
        db = Lock()
        db.free = False  # another node leads
        assert not await leadership.tick(db)
        await settle()
        assert log == []
        db.free = True  # it died: its lock is free
        assert await leadership.tick(db)
        await settle()
        assert log == ["start cron", "start prune"]
        db.mine = False  # the session's backend was terminated
        assert not await leadership.tick(db)
        await settle()
        assert log[2:] == ["stop prune", "stop cron"]
        leadership.lost()  # again: nothing more to stop
        await settle()
        assert len(log) == 4
        db.free = True
        await leadership.tick(db)
        await settle()
        await singletons.stop()
        assert log[4:] == ["start cron", "start prune", "stop prune", "stop cron"]

    asyncio.run(main())


def test_on_sqlite_jobs_start_with_the_component() -> None:
    async def main() -> None:
        log: list[str] = []
        singletons = Singletons(LocalLeadership(), [Job("cron", log)])
        await singletons.start()
        await settle()
        assert log == ["start cron"] and singletons.running
        await singletons.stop()
        assert log == ["start cron", "stop cron"]

    asyncio.run(main())


def test_a_job_that_fails_to_start_stops_the_ones_started() -> None:
    async def main() -> None:
        log: list[str] = []

        class Broken(Job):
            async def start(self) -> None:
                raise RuntimeError("no")

        singletons = Singletons(LocalLeadership(), [Job("cron", log), Broken("x", log)])
        await singletons.start()
        await settle()
        assert log == ["start cron", "stop cron"] and not singletons.running
        await singletons.stop()

    asyncio.run(main())
