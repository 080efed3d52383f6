"""AsyncWorker against a real Store on temporary SQLite, with a stand-in delivery and a
clock the test moves: delivery, retries at the policy's backoff, the per-function limit,
the wake-up on enqueue, cancel, a clean stop that leaves attempts to be retried, and the
intake: a burst stored in a few transactions before its callers hear back, a failed one
storing none."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import lambdad.queue.worker as worker_module
from lambdad.queue import AsyncInvocation, AsyncWorker, RetryPolicy
from lambdad.queue.worker import Outcome
from lambdad.store import Store
from tests.support.queue import (
    T0,
    Clock,
    event,
    hanging_delivery,
    new_worker,
    one_queued,
    started_worker,
    succeed,
)
from tests.support.store import StoreBackend, opened_store

GUARD = 10.0  # against a hang, not a speed target


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(worker_module, "time", fake)
    return fake


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(GUARD):
        while not await check():
            await asyncio.sleep(0.01)


async def status_is(store: Store, inv_id: str, status: str) -> bool:
    found: str = await store.invocations.status(inv_id)
    return found == status


def test_a_queued_event_is_delivered_once_and_its_result_kept(store_backend: StoreBackend,
                                                             clock: Clock) -> None:
    delivered: list[AsyncInvocation] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        delivered.append(inv)
        return True, 200, b'{"ok": true}', ""

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            async with started_worker(store.invocations, deliver):
                await until(lambda: status_is(store, queued.id, "succeeded"))
                await asyncio.sleep(0.05)
            done = await store.invocations.get(queued.id)
            assert [(d.id, d.payload, d.attempts) for d in delivered] == [
                (queued.id, b'{"n": 1}', 1)]
            assert (done.status_code, done.result, done.attempts) == (200, b'{"ok": true}', 1)

    asyncio.run(scenario())


def test_failures_retry_at_the_policys_backoff_then_become_dead_letters(
        store_backend: StoreBackend, clock: Clock) -> None:
    attempts: list[float] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        attempts.append(clock.now)
        return False, 500, b"{}", f"failure {len(attempts)}"

    policy = RetryPolicy(retries=2, backoff_s=10.0)

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            async with started_worker(store.invocations, deliver, policy=policy) as worker:
                await until(lambda: asyncio.sleep(0, len(attempts) == 1))
                await until(lambda: status_is(store, queued.id, "queued"))
                first = await store.invocations.get(queued.id)
                assert first.next_attempt_at == T0 + 10.0  # attempt 1 waits 1 x backoff
                clock.now = T0 + 9.9  # not yet due: woken, it must not deliver
                worker.wake()
                await asyncio.sleep(0.2)
                assert attempts == [T0]
                clock.now = T0 + 10.0
                worker.wake()
                await until(lambda: asyncio.sleep(0, len(attempts) == 2))
                await until(lambda: status_is(store, queued.id, "queued"))
                second = await store.invocations.get(queued.id)
                assert second.next_attempt_at == T0 + 10.0 + 20.0  # then 2 x backoff
                clock.now = T0 + 30.0
                worker.wake()
                await until(lambda: status_is(store, queued.id, "failed"))
                await asyncio.sleep(0.1)
            dead = await store.invocations.get(queued.id)
            assert attempts == [T0, T0 + 10.0, T0 + 30.0]  # 1 + 2 retries, no more
            assert (dead.attempts, dead.last_error) == (3, "failure 3")

    asyncio.run(scenario())


def test_a_delivery_that_raises_is_a_failed_attempt_with_its_error(store_backend: StoreBackend,
                                                                  clock: Clock) -> None:
    async def deliver(inv: AsyncInvocation) -> Outcome:
        raise RuntimeError("the instance vanished")

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            async with started_worker(store.invocations, deliver, policy=RetryPolicy(retries=0)):
                await until(lambda: status_is(store, queued.id, "failed"))
            failed = await store.invocations.get(queued.id)
            assert failed.last_error == "RuntimeError: the instance vanished"

    asyncio.run(scenario())


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_deliveries_of_one_function_stay_within_its_limit(store_backend: StoreBackend, clock: Clock,
                                                          limit: int) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def deliver(inv: AsyncInvocation) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            events = [event() for _ in range(6)]
            for queued in events:
                await store.invocations.insert(queued)
            async with started_worker(store.invocations, deliver,
                                      limit=lambda name: limit if name == "f" else 99) as worker:
                try:
                    await until(lambda: asyncio.sleep(0, running == limit))
                    for _ in range(3):  # woken again and again, it still waits for a slot
                        worker.wake()
                        await asyncio.sleep(0.05)
                    assert running == peak == limit
                    release.set()
                    for queued in events:
                        await until(lambda q=queued: status_is(store, q.id, "succeeded"))
                finally:
                    release.set()
            assert peak == limit

    asyncio.run(scenario())


def test_a_new_event_is_taken_when_the_worker_is_woken_not_at_the_next_poll(
        store_backend: StoreBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "POLL_S", 3600.0)  # no poll within the test
    delivered: list[str] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        delivered.append(inv.id)
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            async with started_worker(store.invocations, deliver) as worker:
                await asyncio.sleep(0.1)  # idle: waiting for a wake-up
                queued = event()
                await store.invocations.insert(queued)
                await asyncio.sleep(0.2)
                assert delivered == []  # nobody said
                worker.wake()  # what the control plane does after an enqueue
                await until(lambda: status_is(store, queued.id, "succeeded"))
            assert delivered == [queued.id]

    asyncio.run(scenario())


def test_stop_cancels_attempts_under_way_and_they_are_queued_again_at_the_next_start(
        store_backend: StoreBackend, clock: Clock) -> None:
    """One daemon (SQLite): the cut-short attempt stays running until `recover` at the
    next start. On a shared database (PostgreSQL) the stop hands it back to the queue at
    once, for the other nodes, and this node's next start has nothing of its own to
    recover."""
    started, cancelled, deliver = hanging_delivery()

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            worker = new_worker(store.invocations, deliver)
            worker.start()
            await asyncio.wait_for(started.wait(), GUARD)
            await asyncio.wait_for(worker.stop(), GUARD)
            assert cancelled == [queued.id]
            if store.postgres:  # handed back at once: another node may deliver it now
                assert await status_is(store, queued.id, "queued")
                assert await store.invocations.recover(clock.now) == 0
                return
            assert await status_is(store, queued.id, "running")  # at-least-once
            assert await store.invocations.recover(clock.now) == 1
            assert await status_is(store, queued.id, "queued")

    asyncio.run(scenario())


def test_cancel_ends_a_running_invocation_as_failed_with_the_reason(
        store_backend: StoreBackend, clock: Clock) -> None:
    started = asyncio.Event()

    async def deliver(inv: AsyncInvocation) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            async with started_worker(store.invocations, deliver) as worker:
                await asyncio.wait_for(started.wait(), GUARD)
                await asyncio.wait_for(worker.cancel(queued.id, "replaced"), GUARD)
            ended = await store.invocations.get(queued.id)
            assert (ended.status, ended.last_error) == ("failed", "replaced")

    asyncio.run(scenario())


class Recording:
    """The store facade, recording how many events each cycle stored; `fail_next` makes
    the next cycle's transaction fail."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.inserted: list[int] = []
        self.fail_next = False

    async def cycle(self, *args: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk I/O error")
        self.inserted.append(len(args[5]) if len(args) > 5 else 0)
        return await self._table.cycle(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def test_a_burst_is_stored_in_a_few_transactions_and_each_event_delivered_once(
        store_backend: StoreBackend, clock: Clock) -> None:
    """Fifty events accepted at once: each caller returns once its event is committed, the
    cycles that store them are few (group commit), and each is delivered exactly once."""
    delivered: list[str] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        delivered.append(inv.id)
        await asyncio.sleep(0.001)
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            table = Recording(store.invocations)
            async with started_worker(table, deliver, limit=lambda _: 4) as worker:
                burst = [event() for _ in range(50)]
                assert await asyncio.gather(
                    *[worker.intake.submit(e, 0) for e in burst]) == [True] * 50
                for queued in burst:  # committed before the answer
                    assert (await store.invocations.get(queued.id)).id == queued.id
                await until(lambda: asyncio.sleep(0, len(delivered) >= 50))
                for queued in burst:
                    await until(lambda q=queued: status_is(store, q.id, "succeeded"))
            assert sorted(delivered) == sorted(e.id for e in burst)  # once each
            assert sum(table.inserted) == 50
            assert len([n for n in table.inserted if n]) <= 2, table.inserted

    asyncio.run(scenario())


def test_a_failed_cycle_stores_none_of_its_events_and_their_callers_hear_why(
        store_backend: StoreBackend, clock: Clock) -> None:
    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            table = Recording(store.invocations)
            async with started_worker(table, succeed) as worker:
                await asyncio.sleep(0.05)  # idle, waiting
                table.fail_next = True
                lost, kept = event(), event()
                with pytest.raises(OSError, match="disk I/O error"):
                    await asyncio.wait_for(worker.intake.submit(lost, 0), GUARD)  # no 202
                assert await worker.intake.submit(kept, 0)  # the next cycle works
                await until(lambda: status_is(store, kept.id, "succeeded"))
                assert await store.invocations.status(lost.id) == ""

    asyncio.run(scenario())


def test_a_clean_stop_writes_ended_attempts_so_the_next_start_delivers_nothing_again(
        store_backend: StoreBackend, clock: Clock) -> None:
    ended = asyncio.Event()

    async def deliver(inv: AsyncInvocation) -> Outcome:
        ended.set()
        return True, 200, b'{"done": 1}', ""

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            worker = new_worker(store.invocations, deliver)
            worker.start()
            await asyncio.wait_for(ended.wait(), GUARD)
            await asyncio.sleep(0)  # the attempt has ended; its outcome may be unwritten
            await asyncio.wait_for(worker.stop(), GUARD)
            done = await store.invocations.get(queued.id)
            assert (done.status, done.result) == ("succeeded", b'{"done": 1}')
            assert await store.invocations.recover(clock.now) == 0

    asyncio.run(scenario())


def test_after_stop_an_accepted_event_is_still_stored_before_the_answer(
        store_backend: StoreBackend, clock: Clock) -> None:
    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            async with started_worker(store.invocations, succeed) as worker:
                pass
            late = event()
            assert await worker.intake.submit(late, 0)  # no worker: written on its own
            assert await status_is(store, late.id, "queued")

    asyncio.run(scenario())


def test_a_wake_up_during_the_workers_store_call_is_not_lost(
        store_backend: StoreBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event queued while the worker is inside a store call (its wake-up set then) is
    delivered at once, not at the next poll. The worker used to clear its wake-up after its
    queries, losing this one until POLL_S."""
    monkeypatch.setattr(worker_module, "POLL_S", 3600.0)  # no poll within the test
    delivered: list[str] = []

    async def deliver(inv: AsyncInvocation) -> Outcome:
        delivered.append(inv.id)
        return True, 200, b"{}", ""

    class Gated:
        """Every store call of the worker, while the gate is shut, runs and then waits
        there before it answers."""

        def __init__(self, table: Any) -> None:
            self._table = table
            self.gate = asyncio.Event()
            self.gate.set()
            self.waiting = asyncio.Event()

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._table, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                result = await method(*args, **kwargs)  # the query has run...
                if not self.gate.is_set():
                    self.waiting.set()
                    await self.gate.wait()  # ...its answer is held back
                return result

            return call

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            table = Gated(store.invocations)
            async with started_worker(table, deliver) as worker:
                await asyncio.sleep(0.1)  # idle
                table.gate.clear()
                worker.wake()  # the worker goes into a store call and waits at the gate
                await asyncio.wait_for(table.waiting.wait(), GUARD)
                queued = event()
                await store.invocations.insert(queued)
                worker.wake()  # what an enqueue does, while the worker is in the store
                table.gate.set()
                await until(lambda: asyncio.sleep(0, delivered == [queued.id]))

    asyncio.run(scenario())


def test_an_ended_delivery_with_nothing_queued_is_written_by_the_flush_not_a_cycle_of_its_own(
        store_backend: StoreBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing left queued, a freed slot has nothing to take: while other deliveries
    run, an end is kept in memory (status() sees it) and written FLUSH_S later; the last
    delivery to end is written at once. A lone caller's event is stored by one cycle
    without waiting for company (GATHER_S applies only to several callers)."""
    monkeypatch.setattr(worker_module, "FLUSH_S", 0.3)
    monkeypatch.setattr(worker_module, "GATHER_S", 5.0)  # a wait would show
    gates: dict[str, asyncio.Event] = {}

    async def deliver(inv: AsyncInvocation) -> Outcome:
        await gates.setdefault(inv.id, asyncio.Event()).wait()
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store, \
                started_worker(store.invocations, deliver, limit=lambda _: 4) as worker:
            first, second = event(), event()
            async with asyncio.timeout(2.0):  # far below GATHER_S
                assert await worker.intake.submit(first, 0)
                assert await worker.intake.submit(second, 0)
            for e in (first, second):
                assert (await store.invocations.get(e.id)).status == "running"
            await asyncio.sleep(0.05)
            cycles = worker.cycles
            gates.setdefault(first.id, asyncio.Event()).set()
            await until(lambda: status_is_async(worker, first.id, "succeeded"))
            await asyncio.sleep(0.1)
            assert worker.cycles == cycles  # no cycle yet: the end waits for the flush
            assert (await store.invocations.get(first.id)).status == "running"
            await until(lambda: status_is(store, first.id, "succeeded"))
            assert worker.cycles == cycles + 1
            gates.setdefault(second.id, asyncio.Event()).set()  # the last one: at once
            async with asyncio.timeout(0.2):  # (below FLUSH_S)
                await until(lambda: status_is(store, second.id, "succeeded"))

    asyncio.run(scenario())


async def status_is_async(worker: AsyncWorker, inv_id: str, status: str) -> bool:
    return await worker.status(inv_id) == status


def test_an_event_arriving_during_a_cycle_brings_the_group_commit_window(
        store_backend: StoreBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second caller's event that arrives while the first one's cycle runs shows that
    several callers enqueue at once: the next cycle waits GATHER_S for company, so a third
    event sent meanwhile is stored by the same cycle (one commit for both). It used to count
    as a lone caller's (the last cycle stored one event, one waits) and go alone."""
    monkeypatch.setattr(worker_module, "GATHER_S", 0.5)
    monkeypatch.setattr(worker_module, "POLL_S", 3600.0)
    stored: list[list[str]] = []

    class Gated:
        """The worker's cycles, recorded; while the gate is shut a cycle waits there first."""

        def __init__(self, table: Any) -> None:
            self._table = table
            self.gate = asyncio.Event()
            self.gate.set()
            self.waiting = asyncio.Event()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._table, name)

        async def cycle(self, *args: Any) -> Any:
            inserts = args[5]
            if inserts:
                stored.append([inv.id for inv, _ in inserts])
            if not self.gate.is_set():
                self.waiting.set()
                await self.gate.wait()
            return await self._table.cycle(*args)

    async def scenario() -> None:
        async with opened_store(store_backend.database, "f") as store:
            table = Gated(store.invocations)
            async with started_worker(table, succeed, limit=lambda _: 8) as worker:
                first, second, third = event(), event(), event()
                await asyncio.sleep(0.1)  # the start's cycle has run: idle
                table.gate.clear()
                one = asyncio.create_task(worker.intake.submit(first, 0))
                await asyncio.wait_for(table.waiting.wait(), GUARD)  # first's cycle runs
                two = asyncio.create_task(worker.intake.submit(second, 0))
                await asyncio.sleep(0.01)
                table.gate.set()
                assert await asyncio.wait_for(one, GUARD)
                await asyncio.sleep(0.05)  # within the window: company for the next commit
                three = asyncio.create_task(worker.intake.submit(third, 0))
                assert await asyncio.wait_for(two, GUARD) and await asyncio.wait_for(three, GUARD)
                assert stored == [[first.id], [second.id, third.id]]

    asyncio.run(scenario())


class HeldElsewhere:
    """A shared queue whose due events of `f` this node may not claim: another node holds
    the function's instance (PgInvocationTable reports the function held)."""

    def __init__(self, held: bool) -> None:
        self.held = held
        self.cycles = 0

    async def cycle(self, *args: Any) -> Any:
        from lambdad.queue.store import Claim

        self.cycles += 1
        await asyncio.sleep(0.001)  # (a store call takes a turn of the loop)
        return Claim([], ["f"], None, [], True, frozenset({"f"} if self.held else ()))


@pytest.mark.parametrize("held", [True, False])
def test_a_function_held_by_another_node_costs_no_busy_loop(held: bool) -> None:
    """Due events left because the cluster has no room for them here are retried by the
    poll or another node's wake-up, not by a cycle at once (which finds no room again and
    again: a busy loop of transactions on every node without the instance). A function
    left for another reason (no limit known here yet) is tried again at once."""

    async def scenario() -> int:
        table = HeldElsewhere(held)
        worker = AsyncWorker(table, succeed, lambda _: RetryPolicy(), lambda _: 4)
        worker.start()
        try:
            await asyncio.sleep(0.3)
        finally:
            await worker.stop()
        return table.cycles

    cycles = asyncio.run(scenario())
    if held:
        assert cycles <= 2, cycles
    else:
        assert cycles > 10, cycles  # (why `held` is needed)


def test_a_node_delivering_a_function_says_so_until_its_next_claim_is_due(
        store_backend: StoreBackend) -> None:
    """`delivering_function` (a `slots` ask is refused while it is true): during a
    delivery, and for the poll interval after the last one ended; not for another one."""
    gate = asyncio.Event()

    async def deliver(inv: AsyncInvocation) -> Outcome:
        await gate.wait()
        return True, 200, b"{}", ""

    async def scenario() -> None:
        async with (opened_store(store_backend.database, "f") as store,
                    started_worker(store.invocations, deliver) as worker):
            assert not worker.delivering_function("f")
            await worker.intake.submit(event(), 0)
            await until(lambda: asyncio.sleep(0, worker.delivering_function("f")))
            assert not worker.delivering_function("g")
            gate.set()
            await until(lambda: asyncio.sleep(0, not worker._running))
            assert worker.delivering_function("f")  # its next may be claimed any moment
            await asyncio.sleep(worker_module.POLL_S + 0.1)
            assert not worker.delivering_function("f")

    asyncio.run(scenario())
