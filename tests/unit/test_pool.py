"""The instance pool's rules, with instant fake starts (no Docker: the logic only)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from datetime import UTC, datetime

import pytest

from lambdad.errors import InstanceFailed, Throttled
from lambdad.functions import FunctionConfig, FunctionVersion, Scaling
from lambdad.runtime.pool import Instance, InstancePool


def _version(number: int = 1, **scaling: int) -> FunctionVersion:
    return FunctionVersion(
        function="f", number=number, image="img", image_id="id",
        config=FunctionConfig(timeout_s=5, scaling=Scaling(**scaling)),
        code_sha256="0" * 64, code_size=1, created_at=datetime.now(UTC),
    )


class Harness:
    """Drives a pool with starts that finish when the test says so."""

    def __init__(self, version: FunctionVersion, *, fail_starts: int = 0) -> None:
        self.now = 0.0
        self.started: list[Instance] = []
        self.destroyed: list[Instance] = []
        self.gates: list[asyncio.Event] = []
        self.auto = True
        self.fail_starts = fail_starts
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids = itertools.count(1)
        self.pool = InstancePool(version, start=self.start, destroy=self.destroy,
                                 spawn=self.spawn, clock=lambda: self.now)

    async def start(self, version: FunctionVersion, wanted: object = None) -> Instance:
        gate = asyncio.Event()
        self.gates.append(gate)
        if self.auto:
            gate.set()
        await gate.wait()
        if self.fail_starts:
            self.fail_starts -= 1
            raise InstanceFailed("exited with code 1 during start")
        n = next(self.ids)
        instance = Instance(f"i{n}", version, f"c{n}", None)  # the pool never uses the folder
        self.started.append(instance)
        return instance

    async def destroy(self, instance: Instance) -> None:
        self.destroyed.append(instance)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_first_request_on_an_empty_pool_is_a_cold_start() -> None:
    async def scenario() -> None:
        h = Harness(_version())
        instance, cold = await h.pool.acquire(1)
        assert cold is True and instance.owner is h.pool and instance.in_flight == 1
        h.pool.release(instance)
        again, cold = await h.pool.acquire(1)
        assert again is instance and cold is False

    run(scenario())


def test_max_instances_is_never_exceeded_and_extra_requests_queue() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=2))
        grants = [asyncio.create_task(h.pool.acquire(5)) for _ in range(5)]
        await h.settle()
        assert len(h.started) == 2
        done = [t for t in grants if t.done()]
        assert len(done) == 2 and h.pool.queued == 3
        for task in done:
            instance, _ = task.result()
            h.pool.release(instance)
        await h.settle()
        assert len([t for t in grants if t.done()]) == 4
        assert len(h.started) == 2  # freed slots served the queue; no third instance

    run(scenario())


def test_concurrency_lets_one_instance_take_several_requests() -> None:
    async def scenario() -> None:
        h = Harness(_version(concurrency=3))
        grants = [asyncio.create_task(h.pool.acquire(5)) for _ in range(3)]
        await h.settle()
        assert len(h.started) == 1
        assert all(t.done() for t in grants)
        assert h.pool.instances[0].in_flight == 3
        fourth = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        assert fourth.done() and len(h.started) == 2

    run(scenario())


def test_a_request_served_by_a_freed_slot_starts_no_second_instance() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=5))
        first, _ = await h.pool.acquire(5)
        h.auto = False  # the next start hangs until the gate opens
        waiting = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        assert h.pool.starting == 1  # one start for the one queued request
        h.pool.release(first)  # ...but the busy instance frees up first
        await h.settle()
        assert waiting.done() and waiting.result() == (first, False)
        third = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        assert h.pool.starting == 1  # the start already under way covers it
        h.gates[-1].set()
        await h.settle()
        assert third.done() and third.result()[1] is True
        assert len(h.started) == 2

    run(scenario())


def test_queue_timeout_throttles_and_gives_back_nothing() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=1))
        held, _ = await h.pool.acquire(1)
        with pytest.raises(Throttled, match="maximum of 1 instance"):
            await h.pool.acquire(0.05)
        assert h.pool.queued == 0
        h.pool.release(held)
        assert held.in_flight == 0

    run(scenario())


def test_a_cancelled_waiter_does_not_leak_the_slot_it_was_given() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=1))
        held, _ = await h.pool.acquire(1)
        waiter = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        h.pool.release(held)  # hands the slot to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert held.in_flight == 0

    run(scenario())


def test_a_failed_start_fails_the_request_it_was_for() -> None:
    async def scenario() -> None:
        h = Harness(_version(), fail_starts=1)
        with pytest.raises(InstanceFailed, match="during start"):
            await h.pool.acquire(1)
        instance, cold = await h.pool.acquire(1)  # the next request starts a fresh one
        assert cold is True and h.pool.instances == [instance]

    run(scenario())


def test_idle_instances_beyond_the_minimum_are_reaped() -> None:
    async def scenario() -> None:
        h = Harness(_version(min_instances=1, idle_timeout_s=10, max_instances=3))
        grants = [await h.pool.acquire(1) for _ in range(3)]
        for instance, _ in grants:
            h.pool.release(instance)
        h.now = 5
        assert h.pool.reap_idle() == 0
        h.now = 20
        assert h.pool.reap_idle() == 2
        await h.settle()
        assert len(h.pool.instances) == 1 and len(h.destroyed) == 2

    run(scenario())


def test_an_added_instance_is_idle_from_when_it_joined_not_from_its_start() -> None:
    """A deploy's (pre-warmed) instance whose import took longer than idle_timeout is
    not reaped the moment traffic moves to it."""
    async def scenario() -> None:
        h = Harness(_version(idle_timeout_s=2))
        h.now = 0  # the start began: Instance() is made then
        instance = Instance("i1", h.pool.version, "c1", None)
        instance.last_used = h.now
        h.now = 5  # its import took 5 s; the deploy switches traffic now
        h.pool.add(instance)
        h.now = 6
        assert h.pool.reap_idle() == 0 and h.pool.instances == [instance]
        h.now = 7
        assert h.pool.reap_idle() == 1

    run(scenario())


def test_busy_instances_are_never_reaped() -> None:
    async def scenario() -> None:
        h = Harness(_version(idle_timeout_s=1))
        await h.pool.acquire(1)
        h.now = 100
        assert h.pool.reap_idle() == 0

    run(scenario())


def test_minimum_is_started_and_restored_after_a_death() -> None:
    async def scenario() -> None:
        h = Harness(_version(min_instances=2))
        assert h.pool.ensure_minimum() == 2
        await h.settle()
        assert len(h.pool.instances) == 2
        assert h.pool.discard(h.pool.instances[0], "exited with code 1")
        await h.settle()
        assert len(h.pool.instances) == 2 and len(h.started) == 3
        assert not h.pool.discard(h.destroyed[0], "again")

    run(scenario())


def test_retire_hands_queued_requests_to_the_new_version() -> None:
    async def scenario() -> None:
        old = Harness(_version(1, max_instances=1))
        busy, _ = await old.pool.acquire(5)
        queued = asyncio.create_task(old.pool.acquire(5))
        await old.settle()
        new = Harness(_version(2))
        old.pool.retire(new.pool)
        await new.settle()
        instance, _ = queued.result()
        assert instance.version.number == 2
        assert old.destroyed == []  # still serving a request
        old.pool.release(busy)
        await old.settle()
        assert old.destroyed == [busy] and old.pool.drained

    run(scenario())


def test_close_fails_queued_requests_and_returns_every_instance() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=1))
        held, _ = await h.pool.acquire(5)
        queued = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        assert h.pool.close("was deleted") == [held]
        with pytest.raises(Exception, match="was deleted"):
            await queued

    run(scenario())


def test_close_cancels_the_starts_in_flight_and_none_starts_after_it() -> None:
    async def scenario() -> None:
        h = Harness(_version(min_instances=3, max_instances=3))
        h.auto = False  # every start hangs (say, its runtime still loading the code)
        assert h.pool.ensure_minimum() == 3
        await h.settle()
        starts = h.pool.starts
        assert len(starts) == 3 and h.pool.starting == 3
        assert h.pool.close("is stopping with the daemon") == []
        results = await asyncio.gather(*starts, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert h.pool.starts == [] and h.pool.starting == 0
        for gate in h.gates:  # a start that would have ended now adds nothing
            gate.set()
        await h.settle()
        assert h.started == [] and h.pool.instances == []
        assert h.pool.ensure_minimum() == 0 and h.pool.idle_and_empty

    run(scenario())


def test_a_start_launched_just_before_close_never_begins() -> None:
    async def scenario() -> None:
        h = Harness(_version(min_instances=2, max_instances=2))
        assert h.pool.ensure_minimum() == 2  # spawned, not yet run
        h.pool.close("is stopping with the daemon")
        await h.settle()
        assert h.gates == [] and h.started == []  # `start` was never called
        assert h.pool.starting == 0 and h.pool.starts == []

    run(scenario())


def test_close_cancels_the_start_a_queued_request_was_waiting_for() -> None:
    async def scenario() -> None:
        h = Harness(_version(max_instances=2))
        h.auto = False
        queued = asyncio.create_task(h.pool.acquire(5))
        await h.settle()
        (start,) = h.pool.starts
        h.pool.close("was deleted")
        with pytest.raises(Exception, match="was deleted"):
            await queued
        await asyncio.gather(start, return_exceptions=True)
        assert start.cancelled() and h.started == [] and h.pool.starting == 0

    run(scenario())


def test_close_never_cancels_the_destroy_of_an_instance_started_after_a_retire() -> None:
    async def scenario() -> None:
        h = Harness(_version(min_instances=1))
        h.auto = False
        h.pool.ensure_minimum()
        await h.settle()
        finishing = asyncio.Event()

        async def slow_destroy(instance: Instance) -> None:
            await finishing.wait()  # its grace
            h.destroyed.append(instance)

        h.pool._destroy = slow_destroy  # type: ignore[method-assign]
        (start,) = h.pool.starts
        # a pinned version becoming the active one: this pool is retired, its start goes
        # on (a redeploy's retire cancels it instead), and its instance is then stopped
        h.pool.transfer_to(Harness(_version()).pool)
        h.gates[0].set()
        await h.settle()
        assert h.pool.starts == [] and not start.done()  # in its destroy now
        h.pool.close("is stopping with the daemon")
        finishing.set()
        await start
        assert len(h.destroyed) == 1 and h.pool.starting == 0

    run(scenario())


def test_a_redeploy_cancels_the_starts_of_the_version_it_retires() -> None:
    """Its queued requests move to the successor, which starts what they need: a start
    here would only be destroyed once done, after holding a container start's slot, CPU
    and memory for its whole import (once per deploy of a redeploy storm)."""
    async def scenario() -> None:
        old = Harness(_version(1, min_instances=3, max_instances=3))
        old.auto = False  # every start hangs (its import takes long)
        assert old.pool.ensure_minimum() == 3
        await old.settle()
        starts = old.pool.starts
        assert len(starts) == 3
        assert old.pool.ensure_minimum() == 0  # counted as starting: none more launched
        old.pool._launch(fresh=False)  # one spawned, not yet run, when the retire comes
        new = Harness(_version(2))
        old.pool.retire(new.pool)
        _, hanging = await asyncio.wait(starts, timeout=5)  # not cancelled: they hang
        assert not hanging
        assert all(start.cancelled() for start in starts)
        for gate in old.gates:  # a start that would have ended now adds nothing
            gate.set()
        await old.settle()
        assert len(old.gates) == 3 and old.started == [] and old.destroyed == []
        assert old.pool.starting == 0 and old.pool.starts == [] and old.pool.drained

    run(scenario())


def test_an_instance_takes_only_the_requests_its_memory_holds_workers_for() -> None:
    """The attack's reproduction in memory: concurrency 6, 128 MiB, a handler that holds
    40 MiB: the instance's runtime says 2 workers fit, so of 6 requests 2 go to it and the
    others start instances (at 2 slots each, the last figure heard), not queue behind it."""
    async def scenario() -> None:
        h = Harness(_version(concurrency=6, max_instances=3))
        first, _ = await h.pool.acquire(5)
        h.pool.set_workers(first, 2)
        h.pool.release(first)
        assert h.pool.slots(first) == 2 and h.pool.slots() == 2
        h.auto = False
        grants = [asyncio.create_task(h.pool.acquire(5)) for _ in range(6)]
        await h.settle()
        assert first.in_flight == 2 and h.pool.queued == 4
        assert h.pool.starting == 2  # 4 queued, 2 slots per new instance
        for gate in h.gates:
            gate.set()
        await h.settle()
        assert all(t.done() for t in grants)
        assert [i.in_flight for i in h.pool.instances] == [2, 2, 2]

    run(scenario())


def test_a_figure_above_the_concurrency_is_ignored_and_below_one_means_one() -> None:
    async def scenario() -> None:
        h = Harness(_version(concurrency=3))
        instance, _ = await h.pool.acquire(5)
        h.pool.set_workers(instance, 1000)
        assert h.pool.slots(instance) == 3 and h.pool.slots() == 3
        h.pool.set_workers(instance, 0)
        assert instance.workers == 1 and h.pool.slots(instance) == 1
        h.pool.release(instance)

    run(scenario())


def test_an_instance_that_said_nothing_takes_the_last_figure_and_its_own_wins() -> None:
    async def scenario() -> None:
        h = Harness(_version(concurrency=4, max_instances=2))
        grants = [await h.pool.acquire(5) for _ in range(5)]
        a, b = h.pool.instances
        h.pool.set_workers(a, 2)
        assert h.pool.slots(b) == 2  # b has not said: a's figure
        h.pool.set_workers(b, 3)
        assert h.pool.slots(b) == 3 and h.pool.slots(a) == 2 and h.pool.slots() == 3
        for instance, _ in grants:
            h.pool.release(instance)

    run(scenario())


def test_a_rising_figure_takes_queued_requests_at_once() -> None:
    """The runtime says more room (a worker that cost much ended): queued requests go to
    that instance without waiting for a release or a start."""
    async def scenario() -> None:
        h = Harness(_version(concurrency=4, max_instances=1))
        first, _ = await h.pool.acquire(5)
        h.pool.set_workers(first, 1)
        waiting = [asyncio.create_task(h.pool.acquire(5)) for _ in range(2)]
        await h.settle()
        assert h.pool.queued == 2 and len(h.started) == 1
        h.pool.set_workers(first, 3)
        await h.settle()
        assert all(t.done() for t in waiting) and first.in_flight == 3

    run(scenario())
