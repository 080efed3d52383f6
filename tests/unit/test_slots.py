"""runtime/slots.take, the waiting rule of a start that needs a slot lease (max_instances
across the cluster), over a fake lease table: it waits while the requests still want the
start, asks the holders of idle instances once, and gives up when no longer wanted."""

from __future__ import annotations

import asyncio

import pytest

from lambdad.runtime.pool import StartNotNeeded
from lambdad.runtime.slots import LocalSlots, take


class FakeSlots:
    """Grants a lease once `free` is set; records what was asked."""

    def __init__(self) -> None:
        self.free = False
        self.tries = 0
        self.granted: list[tuple[str, str, int]] = []

    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        self.tries += 1
        if self.free:
            self.granted.append((function, lease, limit))
        return self.free

    async def release(self, lease: str) -> None:
        return None


def test_a_free_slot_is_taken_at_once_without_asking() -> None:
    slots, asked = FakeSlots(), []
    slots.free = True

    async def ask(function: str) -> None:
        asked.append(function)

    lease = asyncio.run(take(slots, "f", 3, lambda: True, ask, retry_s=0.001))
    assert slots.granted == [("f", lease, 3)] and asked == []


def test_a_start_waits_for_a_slot_and_asks_the_holders_once() -> None:
    slots, asked = FakeSlots(), []

    async def ask(function: str) -> None:
        asked.append(function)

    async def scenario() -> str:
        waiting = asyncio.create_task(take(slots, "f", 2, lambda: True, ask, retry_s=0.001))
        while slots.tries < 5:
            await asyncio.sleep(0.001)
        assert not waiting.done()
        slots.free = True
        return await waiting

    lease = asyncio.run(scenario())
    assert asked == ["f"] and slots.granted[-1] == ("f", lease, 2)


def test_a_start_no_longer_wanted_gives_up_while_it_waits() -> None:
    slots = FakeSlots()
    wanted = [True, True, False]

    def still() -> bool:
        return wanted.pop(0) if wanted else False

    with pytest.raises(StartNotNeeded):
        asyncio.run(take(slots, "f", 1, still, retry_s=0.001))
    assert slots.granted == [] and slots.tries == 3


def test_one_daemon_grants_every_lease() -> None:
    assert asyncio.run(take(LocalSlots(), "f", 0, lambda: False)) != ""
