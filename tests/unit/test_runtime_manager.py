"""The runtime manager over a fake Docker engine: routing, scaling, failures, pausing,
undeploy and shutdown. Each fake container serves a tiny runtime on its real Unix
socket, so the manager's folder checks, connections and POST /init run as in lambdad.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lambdad.errors import FunctionTimeout, InstanceFailed, NotFound, Unavailable
from tests.support.runtime import Runtime, age, run, tick, until, version


def test_a_request_goes_to_the_ready_instance_over_a_kept_connection() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v1 = version()
        rt.manager.register(v1)
        instance = await rt.manager.start_instance(v1)
        rt.manager.activate(v1, [instance])
        assert rt.events == [("started", instance.id), ("connected", instance.id),
                             ("ready", instance.id)]
        [container] = rt.docker.of("fn")
        assert container.initialized  # a standard runtime loads its handler before serving
        for request_id in ("a", "b"):
            response, body = await rt.call(request_id=request_id)
            assert response.status == 200 and response.start == "warm"
            assert not response.cold_start and response.version == 1
            assert body["container"] == instance.container_id and body["start"] == "warm"
        headers = [h for _, _, h in container.requests]
        assert [h[b"lambda-request-id"] for h in headers] == [b"a", b"b"]
        assert headers[0][b"lambda-invocation-type"] == b"direct"
        assert headers[0][b"host"] == b"fn.lambda"
        assert len(rt.docker.containers) == 1 and len(instance.idle) == 1
        assert rt.manager.counts("fn").running == 1 and rt.manager.is_warm("fn")
        with pytest.raises(NotFound):
            await rt.call("nobody")

    run(scenario)


def test_a_cold_request_starts_a_container_and_says_so() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        assert not rt.manager.is_warm("fn")
        response, body = await rt.call()
        assert response.cold_start and response.start == "container"
        assert body["start"] == "container" and body["cell"] is False
        assert response.init_ms > 0
        assert [event for event, _ in rt.events] == ["started", "connected", "ready"]
        response, body = await rt.call()
        assert response.start == "warm" and len(rt.docker.containers) == 1

    run(scenario)


def test_load_scales_up_to_max_instances_and_no_further() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version(max_instances=2))
        rt.docker.hold.clear()
        calls = [asyncio.create_task(rt.call(request_id=str(n))) for n in range(5)]
        await until(lambda: sum(len(c.requests) for c in rt.docker.containers.values()) == 2)
        await asyncio.sleep(0.1)  # time for a wrong third start to show
        counts = rt.manager.counts("fn")
        assert (counts.running, counts.busy, counts.queued) == (2, 2, 3)
        assert len(rt.docker.containers) == 2
        rt.docker.hold.set()
        results = await asyncio.gather(*calls)
        assert all(response.status == 200 for response, _ in results)
        assert {body["container"] for _, body in results} == set(rt.docker.containers)
        assert sorted(response.start for response, _ in results).count("container") == 2

    run(scenario)


def test_a_start_that_fails_is_reported_to_the_request_and_leaves_nothing() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        rt.docker.crash.add("fn")
        with pytest.raises(InstanceFailed, match="exited with code 1 during start:\nTraceback"):
            await rt.call()
        rt.docker.crash.clear()
        rt.docker.refuse.add("fn")
        with pytest.raises(Unavailable, match="the engine refused"):
            await rt.call()
        await rt.manager.drain_background()
        assert rt.docker.containers == {} and rt.folders() == []
        assert rt.manager.counts("fn").running == 0

    run(scenario)


def test_a_handler_that_fails_to_load_fails_the_start() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v1 = version()
        rt.docker.init_errors["fn"] = "Unable to import module 'handler'"
        with pytest.raises(InstanceFailed, match=r"failed to initialize: Runtime\.ImportModule"):
            await rt.manager.start_instance(v1)
        assert rt.docker.containers == {} and rt.folders() == []

    run(scenario)


def test_an_instance_past_its_timeout_is_stopped_and_the_next_request_starts_anew() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version(timeout_s=1))
        await rt.call()
        [first] = rt.docker.of("fn")
        rt.docker.hold.clear()
        with pytest.raises(FunctionTimeout, match="timeout of 1 s"):
            await rt.call()
        rt.docker.hold.set()
        await until(lambda: first.id not in rt.docker.containers)
        response, body = await rt.call()
        assert response.start == "container" and body["container"] != first.id

    run(scenario)


def test_a_container_that_dies_leaves_its_pool_at_once() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        _, body = await rt.call()
        await rt.docker.crash_now(body["container"])
        await until(lambda: rt.manager.counts("fn").running == 0)
        await rt.manager.drain_background()
        assert body["container"] not in rt.docker.containers and rt.folders() == []
        response, again = await rt.call()
        assert response.start == "container" and again["container"] != body["container"]

    run(scenario)


def test_a_new_version_takes_new_requests_and_the_old_instance_stops_once_idle() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v1, v2 = version(number=1), version(number=2)
        rt.manager.register(v1)
        rt.docker.hold.clear()
        busy = asyncio.create_task(rt.call())
        await until(lambda: rt.manager.counts("fn").busy == 1)
        [old] = rt.docker.of("fn")
        rt.manager.activate(v2, [await rt.manager.start_instance(v2)])
        assert rt.manager.active_version("fn") == v2
        assert rt.manager.counts("fn").draining == 1 and rt.manager.instance_count("fn") == 2
        rt.docker.hold.set()
        response, body = await busy
        assert response.status == 200 and body["version"] == 1 and body["container"] == old.id
        await until(lambda: old.id not in rt.docker.containers)
        _, body = await rt.call()
        assert body["version"] == 2
        _, pinned = await rt.call(number=1)  # a pinned call starts v1 again, on demand
        assert pinned["version"] == 1 and pinned["container"] != old.id

    run(scenario)


def test_a_timeout_after_a_version_switch_stops_the_instance_in_its_new_pool() -> None:
    """A pinned version's instances move to the active pool when it is activated (a
    rollback): a request that timed out meanwhile stops its instance there."""

    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v1, v2 = version(number=1), version(number=2, timeout_s=1)
        rt.manager.register(v1)
        rt.manager.know(v2)
        await rt.call(number=2)  # warms v2 in its pinned pool
        [pinned] = [c for c in rt.docker.of("fn") if c.version == 2]
        rt.docker.hold.clear()
        late = asyncio.create_task(rt.call(number=2))
        await until(lambda: len(pinned.requests) == 2)
        rt.manager.activate(v2)  # the busy instance moves to the new active pool
        with pytest.raises(FunctionTimeout):
            await late
        rt.docker.hold.set()
        await until(lambda: pinned.id not in rt.docker.containers)
        _, body = await rt.call()
        assert body["version"] == 2 and body["container"] != pinned.id

    run(scenario)


def test_an_idle_dockerfile_instance_is_paused_and_the_next_request_thaws_it() -> None:
    """Dockerfile instances only: a standard runtime stays warm until its idle timeout
    (then it is frozen: the tests below), so short pauses add no thaw to its requests."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root, pause_after=0.01)
        rt.manager.register(version("box", runtime="docker"))
        rt.manager.register(version("std"))
        _, box = await rt.call("box")
        _, std = await rt.call("std")
        await asyncio.sleep(0.05)
        rt.manager.housekeeping()
        await rt.manager.drain_background()
        assert rt.docker.paused == [box["container"]]  # the standard one stays warm
        assert rt.docker.containers[box["container"]].paused
        assert not rt.docker.containers[std["container"]].paused
        assert rt.manager.counts("std").paused == 0 and rt.manager.counts("box").paused == 1
        response, again = await rt.call("box")  # a frozen container would never answer
        assert response.start == "unpaused" and again["start"] == "unpaused"
        assert again["container"] == box["container"]
        response, _ = await rt.call("box")
        assert response.start == "warm"
        response, _ = await rt.call("std")
        assert response.start == "warm"
        assert rt.docker.unpaused == [box["container"]]
        assert rt.manager.counts("box").paused == 0

    run(scenario)



def test_past_its_idle_timeout_an_instance_is_frozen_thawed_by_a_request_then_stopped() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.manager.register(version("std", idle_timeout_s=2))
        _, first = await rt.call("std")
        container = first["container"]
        age(rt, name="std", seconds=3)
        await tick(rt)
        assert rt.docker.containers[container].paused  # frozen, not stopped
        counts = rt.manager.counts("std")
        assert (counts.running, counts.frozen, counts.paused) == (1, 1, 0)
        response, again = await rt.call("std")
        assert response.start == "unpaused" and again["container"] == container
        assert rt.manager.counts("std").frozen == 0  # wanted again: a live instance
        age(rt, name="std", seconds=3)
        await tick(rt)
        assert rt.docker.containers[container].paused
        age(rt, name="std", seconds=59)
        await tick(rt)
        assert container in rt.docker.containers  # the window is not over yet
        age(rt, name="std", seconds=2)
        await tick(rt)
        assert container not in rt.docker.containers and container in rt.docker.removed
        assert rt.docker.unpaused[-1] == container  # thawed before its stop signal
        assert rt.manager.counts("std").running == 0

    run(scenario)


def test_a_frozen_instance_of_a_pinned_version_is_counted_frozen() -> None:
    """A pinned version's pool (vN.NAME) freezes its idle instances as the active one
    does: the function's counts (the lambdad_instances gauge) must say so, not leave
    them out because that version is not the live one."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root, freeze_window=60, frozen_memory=64 << 20)
        rt.manager.know(version("std", 1, idle_timeout_s=2))
        rt.manager.register(version("std", 2, idle_timeout_s=2))
        _, pinned = await rt.call("std", 1)
        age(rt, name="std", seconds=3)
        await tick(rt)
        assert rt.docker.containers[pinned["container"]].paused  # frozen, not stopped
        counts = rt.manager.counts("std")
        assert (counts.running, counts.frozen, counts.paused, counts.busy) == (1, 1, 0, 0)
        await rt.call("std")  # the live version's instance, idle: both counted
        counts = rt.manager.counts("std")
        assert (counts.running, counts.frozen) == (2, 1)

    run(scenario)


def test_with_no_freeze_window_an_idle_instance_stops_at_once() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version("std", idle_timeout_s=2))
        _, first = await rt.call("std")
        age(rt, name="std", seconds=3)
        await tick(rt)
        assert first["container"] not in rt.docker.containers
        assert rt.docker.paused == []

    run(scenario)


def test_over_the_frozen_memory_bound_the_longest_frozen_stops_first() -> None:
    async def scenario(root: Path) -> None:
        # The fake engine reports 1 MiB per container: two frozen exceed 1.5 MiB.
        rt = Runtime(root, freeze_window=600, frozen_memory=3 << 19)
        rt.manager.register(version("old", idle_timeout_s=2))
        rt.manager.register(version("new", idle_timeout_s=2))
        _, old = await rt.call("old")
        _, new = await rt.call("new")
        age(rt, name="old", seconds=3)
        await tick(rt)
        await tick(rt)
        assert rt.docker.containers[old["container"]].paused  # alone within the bound
        age(rt, name="new", seconds=3)
        age(rt, name="old", seconds=1)
        await tick(rt)  # new is frozen and measured
        await tick(rt)  # the bound is applied
        assert old["container"] not in rt.docker.containers
        assert rt.docker.containers[new["container"]].paused
        assert rt.manager.counts("new").frozen == 1 and rt.manager.counts("old").running == 0

    run(scenario)


def test_a_stop_waits_for_a_pause_under_way_then_thaws_before_its_signal() -> None:
    """Thawing while `docker pause` is still running would leave the container frozen
    through its stop signal."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        _, body = await rt.call()
        container = body["container"]
        [pool] = rt.manager._routes.every_pool()
        [instance] = pool.instances
        await instance.transition.acquire()  # a pause under way
        instance.paused = True
        removal = asyncio.create_task(rt.manager.remove_function("fn"))
        await asyncio.sleep(0.1)
        assert container in rt.docker.containers and rt.docker.unpaused == []
        rt.docker.pause(container)  # the pause completes
        instance.transition.release()
        assert await removal == 1
        assert rt.docker.unpaused == [container] and container in rt.docker.removed

    run(scenario)


def test_undeploy_stops_every_instance_busy_or_not() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version(min_instances=2))
        rt.manager.register(version("other"))
        rt.manager.ensure_minimums()
        await until(lambda: rt.manager.counts("fn").running == 2)
        _, other = await rt.call("other")
        rt.docker.hold.clear()
        busy = asyncio.create_task(rt.call())
        await until(lambda: rt.manager.counts("fn").busy == 1)
        assert await rt.manager.remove_function("fn") == 2
        assert rt.docker.of("fn") == [] and rt.manager.routed() == ["other"]
        rt.docker.hold.set()
        with pytest.raises(InstanceFailed):
            await busy
        with pytest.raises(NotFound):
            await rt.call()
        assert rt.folders() == [other["instance"]]
        assert list(rt.docker.containers) == [other["container"]]

    run(scenario)


def test_shutdown_stops_every_instance_and_stem_cell() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, cells=1)
        v1 = version()
        rt.save_artifact(v1)
        rt.manager.register(v1)
        rt.manager.register(version("box", runtime="docker"))
        await rt.cells_ready()
        await rt.call("box")
        await rt.call("fn")  # takes the cell; the pool starts another
        await until(lambda: len(rt.manager.cells.ready_cells()) == 1)
        assert len(rt.docker.containers) == 3
        await rt.manager.shutdown()
        assert rt.docker.containers == {} and rt.folders() == []
        assert list(rt.cells_dir.iterdir()) == []
        rt.manager.housekeeping()  # no refill after the shutdown
        await asyncio.sleep(0.05)
        assert rt.docker.containers == {}

    run(scenario)
