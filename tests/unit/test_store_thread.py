"""StoreThread: the store's one thread, in place of a one-worker ThreadPoolExecutor."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lambdad.store.thread import StoreThread


def test_calls_run_in_order_on_one_thread_and_errors_reach_the_caller() -> None:
    worker = StoreThread("store-test")
    seen: list[tuple[int, str]] = []

    def step(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 2

    def boom() -> None:
        raise ValueError("disk I/O error")

    async def scenario() -> None:
        assert await asyncio.gather(*[worker.call(lambda n=n: step(n)) for n in range(20)]
                                    ) == [n * 2 for n in range(20)]
        with pytest.raises(ValueError, match="disk I/O error"):
            await worker.call(boom)
        assert await worker.call(lambda: step(99)) == 198  # the thread survived the error

    asyncio.run(scenario())
    asyncio.run(scenario())  # another loop: results go back to whoever asked
    assert [n for n, _ in seen] == [*range(20), 99, *range(20), 99]
    assert {name for _, name in seen} == {"store-test"}
    worker.shutdown()
    with pytest.raises(RuntimeError):
        asyncio.run(worker.call(lambda: 1))


def test_a_cancelled_caller_leaves_the_call_to_finish_and_the_next_one_answered() -> None:
    worker = StoreThread()
    release = threading.Event()
    done: list[str] = []

    def slow() -> str:
        release.wait(5)
        done.append("slow")
        return "slow"

    async def scenario() -> None:
        task = asyncio.create_task(worker.call(slow))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await worker.call(lambda: "next") == "next"

    asyncio.run(scenario())
    assert done == ["slow"]  # (a call under way is not cut short)
    worker.shutdown()


def test_shutdown_runs_what_was_queued_before_the_thread_ends() -> None:
    worker = StoreThread()
    ran: list[int] = []

    async def scenario() -> None:
        await worker.call(lambda: time.sleep(0))
        loop = asyncio.get_running_loop()
        pending = [asyncio.ensure_future(worker.call(lambda n=n: ran.append(n)))
                   for n in range(5)]
        await asyncio.sleep(0)  # queued
        await loop.run_in_executor(None, worker.shutdown)
        await asyncio.gather(*pending)

    asyncio.run(scenario())
    assert ran == list(range(5))
