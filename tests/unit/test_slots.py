"""runtime/slots.take, the waiting rule of a start that needs a slot lease (max_instances
across the cluster), over a fake lease table: it waits while the requests still want the
start, asks the holders of idle instances once, and gives up when no longer wanted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

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

    async def retake(self, function: str, lease: str, limit: int) -> bool:
        return await self.acquire(function, lease, limit)


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

    async def retake(self, function: str, lease: str, limit: int) -> bool:
        return lease in self.held or await self.acquire(function, lease, limit)

    async def ask(self, function: str) -> None:
        self.asked.append(function)


def _sharing(root: Path, elsewhere: int) -> tuple[Any, SharedSlots]:
    """A fake runtime whose function `fn` (max_instances 2) starts within a shared lease
    table, `elsewhere` of its leases held by another node."""
    from tests.support.runtime import Runtime, version

    rt = Runtime(root)
    slots = SharedSlots()
    for k in range(elsewhere):
        slots.held["elsewhere" if k == 0 else f"elsewhere{k}"] = "fn"
    rt.manager.use_slots(slots, slots.ask)
    rt.manager.register(version(max_instances=2))
    return rt, slots


def test_the_runtime_starts_within_the_leases_other_nodes_leave() -> None:
    """max_instances 2 with one lease held elsewhere: under load this node runs one
    instance, asks once, and starts its second when the other node gives its lease back;
    removing the function gives back every lease this node took."""
    from tests.support.runtime import run, until

    async def scenario(root: Path) -> None:
        rt, slots = _sharing(root, elsewhere=1)
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


def test_running_instances_keep_their_leases_in_order_within_the_limit() -> None:
    """keep_within: a lease still held is kept; a missing one is taken again while the
    function has room; the rest (in the order given) find none."""
    from lambdad.runtime.slots import keep_within

    slots = SharedSlots()
    slots.held.update({"mine": "f", "elsewhere": "f"})
    kept = asyncio.run(keep_within(slots, [("f", "mine", 3), ("f", "lost", 3),
                                           ("f", "third", 3), ("g", "other", 1)]))
    assert kept == [True, True, False, True]
    assert sorted(slots.held) == ["elsewhere", "lost", "mine", "other"]
    assert asyncio.run(keep_within(LocalSlots(), [("f", "x", 0)])) == [True]


def test_adopted_instances_take_leases_or_stop() -> None:
    """A restart adopts two instances of a function with max_instances 2 while another
    node holds one lease: one adopted instance takes the free lease, the other stops."""
    from tests.support.runtime import run, until

    async def scenario(root: Path) -> None:
        rt, slots = _sharing(root, elsewhere=1)
        first = await rt.loaded_leftover("fn", 1, "a00000000001")
        second = await rt.loaded_leftover("fn", 1, "a00000000002")
        assert await rt.manager.reconcile() == (1, 0)
        await until(lambda: len(rt.docker.removed) == 1)
        assert set(rt.docker.removed) < {first.id, second.id}
        assert rt.manager.counts("fn").running == 1
        assert sorted(slots.held.values()) == ["fn", "fn"]
        assert await rt.manager.remove_function("fn") == 1
        assert list(slots.held) == ["elsewhere"]

    run(scenario)


def test_a_rejoin_retakes_leases_and_stops_the_instances_beyond_the_limit() -> None:
    """Two instances running here (max_instances 2); this node is marked down (its
    leases released) and another node takes one lease meanwhile: on rejoin the busy
    instance keeps a lease, the idle one stops. A rejoin with the leases still there
    (a reconnect) changes nothing."""
    from tests.support.runtime import run, until

    async def scenario(root: Path) -> None:
        rt, slots = _sharing(root, elsewhere=0)
        rt.docker.hold.clear()
        calls = [asyncio.create_task(rt.call(request_id=str(n))) for n in range(2)]
        await until(lambda: rt.manager.counts("fn").busy == 2)
        rt.docker.hold.set()
        await asyncio.gather(*calls)
        assert len(slots.held) == 2
        assert await rt.manager.keep_leased() == 0 and len(slots.held) == 2  # reconnect
        slots.held.clear()  # marked down: its leases released
        slots.held["elsewhere"] = "fn"  # another node started one
        rt.docker.hold.clear()
        busy = asyncio.create_task(rt.call(request_id="busy"))
        await until(lambda: rt.manager.counts("fn").busy == 1)
        assert await rt.manager.keep_leased() == 1
        await until(lambda: len(rt.docker.removed) == 1)
        assert rt.manager.counts("fn").running == 1 and rt.manager.counts("fn").busy == 1
        rt.docker.hold.set()
        assert (await busy)[0].status == 200
        assert sorted(slots.held) != [] and len(slots.held) == 2

    run(scenario)
