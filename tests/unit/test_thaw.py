"""Which way a frozen instance is thawed (runtime/forward.py): through its freezer file
when the backend can write it, else through the Docker API; a directly thawed one is
settled (Docker's view brought back) once idle, before it may be paused again, and a
stop of one thaws it the same way. Against the in-memory engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lambdad.runtime.forward import SETTLE_AFTER_S
from tests.support.runtime import Runtime, age, run, tick, version


async def _frozen_instance(rt: Runtime) -> str:
    rt.manager.register(version("std", idle_timeout_s=2))
    _, first = await rt.call("std")
    age(rt, 3)
    await tick(rt)
    container: str = first["container"]
    assert rt.docker.containers[container].paused and rt.docker.paused == [container]
    return container


def test_a_frozen_instance_is_thawed_through_its_freezer_file_then_settled() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.docker.direct_thaw = True
        container = await _frozen_instance(rt)
        response, again = await rt.call("std")
        assert response.start == "unpaused" and again["container"] == container
        assert rt.docker.thawed == [container] and rt.docker.unpaused == []
        fake = rt.docker.containers[container]
        assert not fake.paused and fake.docker_paused  # Docker has not caught up yet
        response, _ = await rt.call("std")  # a burst right after: nothing in its way
        assert response.start == "warm" and rt.docker.settled == []
        age(rt, SETTLE_AFTER_S)
        await tick(rt)  # idle: settled, not paused in the same round
        assert rt.docker.settled == [container] and not fake.docker_paused
        assert rt.docker.paused == [container] and not fake.paused
        age(rt, 3)
        await tick(rt)  # frozen again through the API, as Docker now allows
        assert fake.paused and fake.docker_paused and rt.docker.paused == [container] * 2

    run(scenario)


def test_without_a_freezer_file_the_docker_api_thaws() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.docker.direct_thaw = False  # rootless, a cgroup namespace, no freezer
        container = await _frozen_instance(rt)
        response, again = await rt.call("std")
        assert response.start == "unpaused" and again["container"] == container
        assert rt.docker.thawed == [] and rt.docker.unpaused == [container]
        fake = rt.docker.containers[container]
        assert not fake.paused and not fake.docker_paused
        age(rt, SETTLE_AFTER_S)
        await tick(rt)
        assert rt.docker.settled == []  # nothing to settle

    run(scenario)


def test_a_settle_waits_for_a_request_and_a_request_waits_for_a_settle() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.docker.direct_thaw = True
        container = await _frozen_instance(rt)
        await rt.call("std")
        rt.docker.hold.clear()  # the next request stays in flight
        busy = asyncio.ensure_future(rt.call("std"))
        await asyncio.sleep(0.05)
        age(rt, SETTLE_AFTER_S)
        await tick(rt)
        assert rt.docker.settled == []  # not while a request is in flight
        rt.docker.hold.set()
        await busy
        age(rt, SETTLE_AFTER_S)
        await tick(rt)
        assert rt.docker.settled == [container]

    run(scenario)


def test_a_stop_thaws_a_frozen_instance_through_its_freezer_file() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.docker.direct_thaw = True
        container = await _frozen_instance(rt)
        await rt.manager.remove_function("std")
        assert container in rt.docker.removed and rt.docker.thawed == [container]
        assert rt.docker.unpaused == []

    run(scenario)


def test_an_instance_whose_settle_fails_is_stopped_not_kept_running_as_frozen() -> None:
    """Attack: a function that keeps forking defeats a cgroup v1 freeze now and then (a
    new task escapes it). Its settle failing, it could be neither paused nor settled, yet
    past its idle timeout it was marked frozen: left running for the whole freeze window,
    outside the frozen memory bound (only paused instances count). As a failed pause, a
    failed settle makes it unfreezable: it stops at its idle timeout."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.docker.direct_thaw = True
        container = await _frozen_instance(rt)
        await rt.call("std")  # thawed directly: Docker still says Paused
        rt.docker.unfreezable = True
        age(rt, SETTLE_AFTER_S)
        await tick(rt)
        assert rt.docker.settled == [] and not rt.docker.containers[container].paused
        age(rt, 3)  # past its idle timeout
        await tick(rt)
        assert container in rt.docker.removed

    run(scenario)
