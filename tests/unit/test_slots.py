"""runtime/slots.take, the waiting rule of a start that needs a slot lease (max_instances
across the cluster), over a fake lease table: it waits while the requests still want the
start, asks the holders of idle instances once, and gives up when no longer wanted."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


class SharedSlots:
    """A lease table the test shares with "other nodes": `held` maps lease -> function."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.asked: list[str] = []

    async def acquire(self, function: str, lease: str, limit: int) -> bool:
        if sum(1 for f in self.held.values() if f == function) >= limit:
            return False
        self.held[lease] = function
        return True

    async def release(self, lease: str) -> None:
        self.held.pop(lease, None)

    async def ask(self, function: str) -> None:
        self.asked.append(function)


def test_the_runtime_starts_within_the_leases_other_nodes_leave() -> None:
    """max_instances 2 with one lease held elsewhere: under load this node runs one
    instance, asks once, and starts its second when the other node gives its lease back;
    removing the function gives back every lease this node took."""
    from tests.support.runtime import Runtime, run, until, version

    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        slots = SharedSlots()
        slots.held["elsewhere"] = "fn"
        rt.manager.use_slots(slots, slots.ask)
        rt.manager.register(version(max_instances=2))
        rt.docker.hold.clear()
        calls = [asyncio.create_task(rt.call(request_id=str(n))) for n in range(4)]
        await until(lambda: sum(len(c.requests) for c in rt.docker.containers.values()) == 1)
        await asyncio.sleep(0.3)  # time for a wrong second start to show
        assert len(rt.docker.containers) == 1 and slots.asked == ["fn"]
        await slots.release("elsewhere")
        await until(lambda: len(rt.docker.containers) == 2)
        rt.docker.hold.set()
        assert all(r.status == 200 for r, _ in await asyncio.gather(*calls))
        assert sorted(slots.held.values()) == ["fn", "fn"]
        # Another node waits: this one stops an idle instance now; its lease goes with it.
        assert rt.manager.stop_idle("fn")
        await until(lambda: len(slots.held) == 1)
        assert await rt.manager.remove_function("fn") == 1
        assert slots.held == {}

    run(scenario)
