"""The daemon's stop over a fake Docker engine, with instances still starting: their
starts are cancelled, none creates a container after the stop began, and a container one
had already created is stopped with the others (a graceful stop, not left behind)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from lambdad.runtime.starts import MAX_CONTAINER_STARTS
from tests.support.runtime import Runtime, run, until, version


@pytest.mark.parametrize("stop", ["daemon", "delete"])
def test_a_stop_cancels_the_starts_in_flight_and_stops_what_they_created(stop: str) -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        docker = rt.docker
        engine_busy = threading.Event()  # Docker's create calls hang until this is set
        asked: list[str] = []  # every create that reached the engine
        created: list[str] = []
        terminated: list[str] = []
        create, terminate = docker.start, docker.terminate

        def slow_create(*args: Any, **kwargs: Any) -> str:
            asked.append(args[1])
            engine_busy.wait(5)
            container_id = create(*args, **kwargs)
            created.append(container_id)
            return container_id

        def record_terminate(container_id: str) -> bool:
            terminated.append(container_id)
            return terminate(container_id)

        docker.start = slow_create  # type: ignore[method-assign]
        docker.terminate = record_terminate  # type: ignore[method-assign]
        count = MAX_CONTAINER_STARTS + 2  # two wait for a turn to create theirs
        rt.manager.register(version(runtime="docker", min_instances=count,
                                    max_instances=count))
        await rt.manager.reconcile()
        rt.manager.ensure_minimums()
        await until(lambda: len(asked) == MAX_CONTAINER_STARTS)
        stopping = asyncio.create_task(rt.manager.shutdown() if stop == "daemon"
                                       else rt.manager.remove_function("fn"))
        await asyncio.sleep(0.05)
        assert not stopping.done()  # the creates under way must end: their containers
        engine_busy.set()  # the engine creates the containers it was asked for
        await stopping
        await rt.manager.drain_background()
        assert len(asked) == MAX_CONTAINER_STARTS  # no create after the stop began
        assert len(created) == MAX_CONTAINER_STARTS
        assert docker.containers == {}  # every one it created is gone
        assert sorted(docker.removed) == sorted(created)
        assert sorted(terminated) == sorted(created)  # each had its stop signal and grace
        assert rt.folders() == []

    run(scenario)


def test_a_stop_stops_an_instance_waiting_for_its_socket_with_the_others() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        docker = rt.docker
        rt.manager.register(version("up", runtime="docker"))
        await rt.manager.reconcile()
        await rt.call("up")  # one instance serving
        serve = docker._serve

        async def silent(container: Any) -> None:
            if container.function != "slow":
                await serve(container)  # "slow" never opens its socket

        docker._serve = silent  # type: ignore[method-assign]
        rt.manager.register(version("slow", runtime="docker", min_instances=2,
                                    max_instances=2))
        rt.manager.ensure_minimums()
        await until(lambda: len(docker.of("slow")) == 2)
        terminated: list[str] = []
        terminate = docker.terminate

        def record_terminate(container_id: str) -> bool:
            terminated.append(container_id)
            return terminate(container_id)

        docker.terminate = record_terminate  # type: ignore[method-assign]
        slow = [c.id for c in docker.of("slow")]
        up = [c.id for c in docker.of("up")]
        await rt.manager.shutdown()
        assert docker.containers == {} and rt.folders() == []
        # Not killed at once as a failed start is: a graceful stop, as the serving one's.
        assert sorted(terminated) == sorted(slow + up)

    run(scenario)
