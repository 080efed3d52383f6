"""`stops.finish`: a cancelled start lets the Docker call that creates its container end,
so it knows the container to stop; the cancellation comes right after."""

from __future__ import annotations

import asyncio

import pytest

from lambdad.runtime.stops import finish


def test_a_cancel_during_the_work_lets_it_end_then_cancels_the_next_await() -> None:
    async def scenario() -> None:
        created: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def start() -> None:
            container = await finish(created)
            seen.append(container)  # known, so the start's unwinding can stop it
            await asyncio.sleep(0)  # the cancellation lands here
            seen.append("went on")

        task = asyncio.create_task(start())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for the container
        created.set_result("c1")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["c1"] and task.cancelled()

    asyncio.run(scenario())


def test_without_a_cancel_it_is_a_plain_await() -> None:
    async def scenario() -> None:
        async def work() -> int:
            await asyncio.sleep(0)
            return 7

        assert await finish(work()) == 7

        async def refused() -> int:
            raise RuntimeError("the engine refused")

        with pytest.raises(RuntimeError, match="refused"):
            await finish(refused())

    asyncio.run(scenario())


def test_a_cancelled_start_whose_work_fails_raises_the_failure() -> None:
    async def scenario() -> None:
        failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(finish(failed))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        failed.set_exception(RuntimeError("no container"))
        with pytest.raises(RuntimeError, match="no container"):
            await task

    asyncio.run(scenario())
