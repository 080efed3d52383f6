"""Which pool serves a request (runtime/routing.py), in memory: pools whose starts never
finish, since routing never waits on one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from lambdad.errors import NotFound, Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.pool import Instance, InstancePool
from lambdad.runtime.routing import Routes
from tests.support.runtime import version


async def _never(version: FunctionVersion, wanted: Callable[[], bool]) -> Instance:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _forget(instance: Instance) -> None:
    return None


def _routes() -> tuple[Routes, list[Awaitable[None]]]:
    spawned: list[Awaitable[None]] = []

    def spawn(coro: Awaitable[None]) -> None:
        spawned.append(coro)
        if asyncio.iscoroutine(coro):
            coro.close()  # never run: these rules do not depend on a start finishing

    def new_pool(v: FunctionVersion) -> InstancePool:
        return InstancePool(v, start=_never, destroy=_forget, spawn=spawn)

    return Routes(new_pool), spawned


def _instance(v: FunctionVersion, n: int) -> Instance:
    return Instance(f"i{n}", v, f"c{n}", None)  # type: ignore[arg-type]  # no folder needed


def test_a_request_for_another_version_gets_a_pinned_pool_that_scales_to_zero() -> None:
    routes, _ = _routes()
    v1, v2 = version(number=1, min_instances=1), version(number=2, min_instances=1)
    routes.know(v1)
    routes.register(v2)
    assert routes.pool_for("fn", None) is routes.pool_for("fn", 2) is routes.active["fn"]
    pinned = routes.pool_for("fn", 1)
    assert pinned.version.number == 1 and pinned.version.config.scaling.min_instances == 0
    assert routes.pool_for("fn", 1) is pinned  # made once, kept while in use
    assert [p.version.number for p in routes.serving()] == [2, 1]
    with pytest.raises(NotFound, match="has no version 3"):
        routes.pool_for("fn", 3)
    with pytest.raises(NotFound, match="no function named 'nobody'"):
        routes.pool_for("nobody", None)
    routes.sweep()  # an empty pinned pool goes; the next pinned request makes another
    assert routes.pool_for("fn", 1) is not pinned


def test_a_pruned_version_refuses_pinned_requests_and_its_pool_is_retired() -> None:
    routes, _ = _routes()
    v1, v2 = version(number=1), version(number=2)
    routes.know(v1)
    routes.register(v2)
    pinned = routes.pool_for("fn", 1)
    pinned.add(_instance(v1, 1))
    pinned.instances[0].in_flight = 1  # busy: the pool drains instead of going at once
    routes.mark_pruned(v1)
    assert pinned.retired and routes.counts("fn").draining == 1
    with pytest.raises(NotFound, match="was pruned"):
        routes.pool_for("fn", 1)
    known = routes.known_version("fn", 1)
    assert known is not None and known.pruned


def test_activating_a_pinned_version_keeps_its_warm_instances() -> None:
    async def scenario() -> None:
        routes, _ = _routes()
        v1, v2 = version(number=1), version(number=2)
        routes.register(v1)
        routes.know(v2)
        routes.active["fn"].add(old := _instance(v1, 1))
        warm = _instance(v2, 2)
        routes.pool_for("fn", 2).add(warm)
        assert routes.has_warm_pinned(v2)
        pool = routes.activate(v2)
        assert routes.active["fn"] is pool and pool.instances == [warm] and warm.owner is pool
        assert routes.active_version("fn") == v2 and not routes.has_warm_pinned(v2)
        assert old.dead  # idle in the replaced pool: stopped at once
        assert routes.find("c2") is warm and routes.find("c1") is None

    asyncio.run(scenario())


def test_removing_a_function_hands_back_every_pool_it_had() -> None:
    async def scenario() -> None:
        routes, _ = _routes()
        v1, v2, v3 = (version(number=n) for n in (1, 2, 3))
        routes.register(v1)
        routes.active["fn"].add(busy := _instance(v1, 1))
        busy.in_flight = 1
        routes.activate(v2)  # v1's pool drains: retired
        routes.know(v3)
        routes.pool_for("fn", 3)  # pinned
        routes.register(version("other"))
        pools = routes.remove_function("fn")
        assert sorted(p.version.number for p in pools) == [1, 2, 3]
        assert routes.routed() == ["other"] and routes.known_version("fn", 1) is None
        waiting = asyncio.ensure_future(pools[-1].acquire(5))
        await asyncio.sleep(0)
        assert [i.id for p in pools for i in p.close("was deleted")] == ["i1"]
        with pytest.raises(Unavailable, match="was deleted"):
            await waiting

    asyncio.run(scenario())
