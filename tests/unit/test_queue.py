"""The async queue: fair selection (pure), the capped table on real SQLite, and the
worker's dispatch against that table with a stand-in delivery."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import replace as dataclass_replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.queue import AsyncInvocation, AsyncWorker, RetryPolicy
from lambdad.queue.fair import mark_served, newcomer_has_room, select
from lambdad.queue.model import Finish
from lambdad.store import Store
from lambdad.store.migrations import MIGRATIONS, SCHEMA_VERSION
from tests.support.store import StoreBackend


def event(function: str, at: float, status: str = "queued") -> AsyncInvocation:
    return AsyncInvocation(id=str(uuid.uuid4()), function=function, payload=b"{}",
                           source="http", status=status,  # type: ignore[arg-type]
                           attempts=0, created_at=at, next_attempt_at=at)


def functions(chosen: list[AsyncInvocation]) -> list[str]:
    return [e.function for e in chosen]


# --- fair.select: queued events + per-function capacity -> what to deliver next -----------


def test_a_function_at_its_limit_never_blocks_another() -> None:
    hog = [event("hog", t) for t in range(100)]  # the oldest hundred events
    late = event("other", 500)
    chosen = select([*hog, late], {"hog": 1, "other": 1}, {"hog": 1}, 32, {})
    assert chosen == [late]


def test_round_robin_between_functions_oldest_first_inside_each() -> None:
    due = [event("a", t) for t in range(5)] + [event("b", 10 + t) for t in range(5)]
    due += [event("c", 20)]
    chosen = select(list(reversed(due)), {"a": 10, "b": 10, "c": 10}, {}, 6, {})
    assert functions(chosen) == ["a", "b", "c", "a", "b", "a"]
    a_times = [e.next_attempt_at for e in chosen if e.function == "a"]
    assert a_times == sorted(a_times) == [0, 1, 2]


def test_each_function_stays_within_its_own_limit() -> None:
    due = [event("a", t) for t in range(10)] + [event("b", t) for t in range(10)]
    chosen = select(due, {"a": 3, "b": 2}, {"a": 1}, 32, {})
    assert Counter(functions(chosen)) == {"a": 2, "b": 2}
    assert select(due, {}, {}, 32, {}) and Counter(functions(select(due, {}, {}, 32, {}))) == {
        "a": 1, "b": 1}  # an unknown limit counts as 1


def test_the_global_cap_bounds_the_hogs_not_the_newcomers() -> None:
    due = [event("busy", t) for t in range(10)] + [event("new", 50)]
    # No global slot is free: the busy function waits, the idle one still starts one.
    assert select(due, {"busy": 100, "new": 100}, {"busy": 32}, 0, {}) == [due[-1]]
    # One slot free: the newcomer's guaranteed start takes it.
    assert functions(select(due, {"busy": 100, "new": 100}, {"busy": 31}, 1, {})) == ["new"]


def test_across_dispatches_the_function_served_longest_ago_goes_first() -> None:
    served: dict[str, int] = {}
    turn = 0
    backlog = {"a": [event("a", t) for t in range(50)], "b": [event("b", 100 + t)
                                                            for t in range(50)]}
    order = []
    for _ in range(6):  # one free slot at a time, both functions busy
        due = backlog["a"] + backlog["b"]
        chosen = select(due, {"a": 10, "b": 10}, {"a": 1, "b": 1}, 1, served)
        turn = mark_served(served, chosen, turn)
        for e in chosen:
            backlog[e.function].remove(e)
        order += functions(chosen)
    # b's events are all newer than a's fifty, yet it gets every other slot.
    assert order == ["a", "b", "a", "b", "a", "b"]


def test_nothing_due_or_no_room_selects_nothing() -> None:
    assert select([], {}, {}, 32, {}) == []
    assert select([event("a", 1)], {"a": 2}, {"a": 2}, 32, {}) == []


def test_another_cycle_runs_at_once_only_for_a_newcomer_with_room_under_its_real_limit() -> None:
    limits = {"old": 4, "new": 3}.__getitem__
    # select counted "new" as limit 1 (unknown before the cycle): it may take more now.
    assert newcomer_has_room(["new"], {"old": 4}, limits, {"new": 1}, 10)
    assert not newcomer_has_room(["new"], {"old": 4}, limits, {"new": 3}, 10)  # at its limit
    assert not newcomer_has_room(["old"], {"old": 4}, limits, {"old": 1}, 10)  # it was known
    assert not newcomer_has_room(["new"], {"old": 4}, limits, {"new": 1}, 0)  # global cap


# --- the table on real SQLite ------------------------------------------------------------


def _version(name: str) -> FunctionVersion:
    return FunctionVersion(function=name, number=1, image=f"lambda-fn/{name}:v1",
                           image_id="sha256:1", config=FunctionConfig(), code_sha256="ab" * 32,
                           code_size=1, created_at=datetime.now(UTC))


async def _store(backend: StoreBackend, *names: str) -> Store:
    store = Store(backend.database)
    await store.open()
    for name in names:
        await store.add_version(_version(name), activate=True)
    return store


def test_insert_refuses_past_the_cap_and_only_queued_events_count(
        store_backend: StoreBackend) -> None:
    async def scenario() -> None:
        store = await _store(store_backend, "a", "b")
        try:
            table = store.invocations
            now = time.time()
            assert all([await table.insert(event("a", now + i), 3) for i in range(3)])
            assert not await table.insert(event("a", now), 3)
            assert await table.insert(event("b", now), 3)  # per function
            assert await table.queued("a") == 3
            claim = await table.cycle([], now + 10, 1, set(), lambda due: due[:1])
            assert [(e.status, e.attempts) for e in claim.claimed] == [("running", 1)]
            assert await table.queued("a") == 2  # a delivered event leaves room
            assert await table.insert(event("a", now), 3)
            assert await table.insert(event("a", now), 0)  # 0: no cap
            assert await table.queued("a") == 4
        finally:
            await store.close()

    asyncio.run(scenario())


def test_due_is_per_function_so_a_backlog_hides_nobody(store_backend: StoreBackend) -> None:
    async def scenario() -> None:
        store = await _store(store_backend, "hog", "other")
        try:
            table = store.invocations
            now = time.time()
            hog = [event("hog", now - 1000 + i) for i in range(200)]
            for e in hog:
                assert await table.insert(e)
            other = event("other", now)
            await table.insert(other)
            later = event("other", now + 60)  # a retry waiting for its backoff
            await table.insert(later)
            due = await table.due(now, 4, set(), {hog[0].id})
            assert [e.id for e in due if e.function == "hog"] == [e.id for e in hog[1:5]]
            assert [e.id for e in due if e.function == "other"] == [other.id]
            assert [e.id for e in await table.due(now, 4, {"hog"}, set())] == [other.id]
            assert await table.next_due(now) == later.next_attempt_at  # not the due backlog
        finally:
            await store.close()

    asyncio.run(scenario())


# --- the worker: dispatch against the real table, delivery stood in ----------------------


class _Counting:
    """The store facade, counting the queries the worker makes."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self._table, name)


def test_worker_delivers_another_function_past_a_stuck_backlog(store_backend: StoreBackend) -> None:
    """The oldest 100 events belong to a function whose one slot is stuck; another
    function's event is still delivered, and the blocked backlog costs no busy loop."""

    async def scenario() -> None:
        store = await _store(store_backend, "slow", "quick")
        stuck = asyncio.Event()
        delivered: list[str] = []

        async def deliver(inv: AsyncInvocation) -> tuple[bool, int | None, bytes | None, str]:
            delivered.append(inv.function)
            if inv.function == "slow":
                await stuck.wait()
            return True, 200, b"{}", ""

        table = _Counting(store.invocations)
        worker = AsyncWorker(table, deliver, lambda _: RetryPolicy(), lambda _: 1,
                             concurrency=4)
        try:
            now = time.time()
            for i in range(100):
                await store.invocations.insert(event("slow", now - 100 + i))
            worker.start()
            while "slow" not in delivered:
                await asyncio.sleep(0.01)
            quick = event("quick", now)
            await store.invocations.insert(quick)
            worker.wake()
            async with asyncio.timeout(5):
                while (await store.invocations.status(quick.id)) != "succeeded":
                    await asyncio.sleep(0.01)
            assert delivered == ["slow", "quick"]
            assert await store.invocations.queued("slow") == 99
            table.calls.clear()
            await asyncio.sleep(0.5)  # blocked: only the 1 s poll may query
            assert table.calls["cycle"] <= 2, table.calls
        finally:
            stuck.set()
            await worker.stop()
            await store.close()

    asyncio.run(scenario())


def test_a_cycle_stores_records_and_claims_in_one_transaction(store_backend: StoreBackend) -> None:
    """Inserts (the cap counting the batch's own events), ended attempts and a claim of the
    picked due events, marked running with the attempt counted; a claimed event is never
    claimed again while it runs, and its recorded end frees it."""

    async def scenario() -> None:
        store = await _store(store_backend, "a", "b")
        try:
            table = store.invocations
            now = time.time()
            batch = [event("a", now + i / 1000) for i in range(5)] + [event("b", now)]
            claim = await table.cycle([], now + 1, 2, set(),
                                      lambda due: [e for e in due if e.function == "a"],
                                      [(e, 3) for e in batch])
            assert claim.accepted == [True, True, True, False, False, True]
            assert await table.queued("a") + await table.queued("b") == 4 - 2
            claimed = {e.id for e in claim.claimed}
            assert claimed == {batch[0].id, batch[1].id}  # a's oldest, per_function of them
            assert all(e.status == "running" and e.attempts == 1 and e.started_at == now + 1
                       for e in claim.claimed)
            for e in claim.claimed:
                assert (await table.get(e.id)).status == "running"
            assert claim.left == ["b"]  # due, not picked
            again = await table.cycle([], now + 1, 10, set(), lambda due: due, [])
            assert not claimed & {e.id for e in again.claimed}  # running: not claimed twice
            assert {e.id for e in again.claimed} == {batch[2].id, batch[5].id}
            assert again.left == []
            done = [Finish(i, "succeeded", now + 2, now + 2, 200, b"{}", "", 1) for i in claimed]
            retry = Finish(again.claimed[0].id, "queued", now + 60, now + 2, 500, b"", "boom", 1)
            last = await table.cycle([*done, retry], now + 2, 10, set(), lambda due: due, [])
            assert last.claimed == [] and last.next_due == now + 60  # the retry's backoff
            assert {(await table.get(i)).status for i in claimed} == {"succeeded"}
            assert (await table.get(retry.id)).last_error == "boom"
            # Writing an end twice, or over a row no longer running, changes nothing.
            await table.cancel(retry.id, "replaced", now + 3)
            await table.settle([dataclass_replace(retry, status="succeeded")])
            assert (await table.get(retry.id)).status == "failed"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_queue_written_before_migration_7_is_claimed_after_it(tmp_path: Path) -> None:
    """An existing database (schema 6) with queued events gets invocations_queue and its
    events are found and claimed through it."""
    path = tmp_path / "lambda.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(6):
        MIGRATIONS[number](db)
    db.execute("PRAGMA user_version = 6")
    db.execute("INSERT INTO functions (name, created_at) VALUES ('old', '2026-01-01')")
    waiting = event("old", 100.0)
    db.execute("INSERT INTO invocations (id, function, payload, source, status, attempts, "
               "created_at, next_attempt_at) VALUES (?, 'old', X'7B7D', 'api', 'queued', 0, "
               "100.0, 100.0)", (waiting.id,))
    db.close()

    async def scenario() -> None:
        store = Store(path)
        await store.open()
        try:
            table = store.invocations
            assert await table.queued("old") == 1
            claim = await table.cycle([], 200.0, 4, set(), lambda due: due, [])
            assert [(e.id, e.payload, e.attempts) for e in claim.claimed] == [
                (waiting.id, b"{}", 1)]
        finally:
            await store.close()

    asyncio.run(scenario())
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                             "name = 'invocations_queue'").fetchone() is not None


def test_an_event_stored_and_claimed_by_one_cycle_is_written_running_after_older_ones(
        store_backend: StoreBackend) -> None:
    """The events given to a cycle are candidates after the stored ones of their function:
    a stored event is claimed first; a picked new one is written running with its attempt
    counted (as a stored one is updated); one not picked is written queued. Claim.backlog
    says whether queued events may be left, so an ended delivery need not start a cycle."""

    async def scenario() -> None:
        store = await _store(store_backend, "a")
        try:
            table = store.invocations
            now = time.time()
            old = event("a", now - 5)
            assert await table.insert(old)
            new = [event("a", now + i / 1000) for i in range(3)]
            claim = await table.cycle([], now + 1, 2, set(), lambda due: due,
                                      [(e, 0) for e in new])
            assert claim.accepted == [True] * 3
            assert [e.id for e in claim.claimed] == [old.id, new[0].id]  # oldest first
            for e in (old, new[0]):
                row = await table.get(e.id)
                assert (row.status, row.attempts, row.started_at) == ("running", 1, now + 1)
            assert [(await table.get(e.id)).status for e in new[1:]] == ["queued", "queued"]
            assert claim.backlog  # (not in `left`: per_function bounded the candidates)
            rest = await table.cycle([], now + 1, 5, set(), lambda due: due, [])
            assert {e.id for e in rest.claimed} == {e.id for e in new[1:]}
            assert rest.backlog  # (it read queued events: one more cycle finds none)
            fresh = event("a", now + 1)
            done = await table.cycle([], now + 2, 5, set(), lambda due: due, [(fresh, 0)])
            assert [e.id for e in done.claimed] == [fresh.id]
            assert (await table.get(fresh.id)).status == "running"
            assert not done.backlog and done.next_due is None  # nothing left queued
            # A function at its limit (skip): its new event is stored queued, a backlog.
            late = event("a", now + 2)
            held = await table.cycle([], now + 3, 5, {"a"}, lambda due: due, [(late, 0)])
            assert held.claimed == [] and held.backlog
            assert (await table.get(late.id)).status == "queued"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_cycle_stores_more_events_than_one_insert_statement_holds(
        store_backend: StoreBackend) -> None:
    """Events are written in multi-row INSERTs of at most 64 rows (SQLite's variable
    limit): a batch of 150, none claimed, is stored whole."""

    async def scenario() -> None:
        store = await _store(store_backend, "a")
        try:
            table = store.invocations
            now = time.time()
            batch = [event("a", now + i / 1e4) for i in range(150)]
            claim = await table.cycle([], now + 1, 1, {"a"}, lambda due: due,
                                      [(e, 0) for e in batch])
            assert claim.accepted == [True] * 150 and claim.claimed == []
            assert await table.queued("a") == 150
            assert (await table.get(batch[149].id)).created_at == batch[149].created_at
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_cycle_reads_the_queue_only_while_queued_events_may_be_stored(tmp_path: Path) -> None:
    """A cycle after one that left nothing queued runs no SELECT (the cap's count, the
    functions with queued events, their heads, the next due time): it stores, records and
    claims with writes only. Every write that can leave a queued event (a retry's end, an
    event no slot took, a redrive) makes the next cycle read again, so nothing is missed.
    SQLite only: on PostgreSQL another node may queue events, so every cycle reads."""

    async def scenario() -> None:
        store = await _store(StoreBackend("sqlite", tmp_path / "lambda.db"), "a")
        try:
            table = store.invocations
            selects: list[str] = []

            def trace(sql: str) -> None:
                if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    selects.append(sql)

            def tracing() -> None:
                store._db.connection().set_trace_callback(trace)

            await store._run(tracing)
            now = time.time()
            first = event("a", now)
            claim = await table.cycle([], now, 5, set(), lambda due: due, [(first, 1000)])
            assert [e.id for e in claim.claimed] == [first.id] and not claim.backlog
            selects.clear()
            second = event("a", now + 1)
            done = Finish(first.id, "succeeded", now + 1, now + 1, 200, b"{}", "", 1)
            claim = await table.cycle([done], now + 1, 5, set(), lambda due: due,
                                      [(second, 1000)])
            assert [e.id for e in claim.claimed] == [second.id]
            assert selects == []  # nothing queued: writes only
            assert (await table.get(first.id)).status == "succeeded"
            # A retry's end is a queued event: the next cycle reads it and its due time.
            retry = Finish(second.id, "queued", now + 60, now + 2, 500, b"", "boom", 1)
            claim = await table.cycle([retry], now + 2, 5, set(), lambda due: due, [])
            assert claim.claimed == [] and claim.next_due == now + 60 and claim.backlog
            claim = await table.cycle([], now + 61, 5, set(), lambda due: due, [])
            assert [(e.id, e.attempts) for e in claim.claimed] == [(second.id, 2)]
            # An event no slot took is stored queued: the next cycle claims it.
            held = event("a", now + 62)
            claim = await table.cycle([], now + 62, 5, {"a"}, lambda due: due, [(held, 1000)])
            assert claim.claimed == [] and claim.backlog
            claim = await table.cycle([], now + 62, 5, set(), lambda due: due, [])
            assert [e.id for e in claim.claimed] == [held.id]
            # A redrive after a cycle that left nothing queued.
            await table.cancel(held.id, "gave up", now + 63)
            claim = await table.cycle([], now + 63, 5, set(), lambda due: due, [])
            assert claim.claimed == [] and not claim.backlog
            assert await table.redrive([held.id], now + 64) == 1
            claim = await table.cycle([], now + 64, 5, set(), lambda due: due, [])
            assert [e.id for e in claim.claimed] == [held.id]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_cycles_one_read_counts_the_cap_skips_full_functions_and_finds_the_next_retry(
        store_backend: StoreBackend) -> None:
    """The cycle's reads are one statement (`_heads`): per function with queued events the
    cap's count (the stored events), the due heads of those not skipped, and the earliest
    not yet due; each as the separate queries said."""

    async def scenario() -> None:
        store = await _store(store_backend, "a", "b")
        try:
            table = store.invocations
            now = time.time()
            stored = [event("a", now - 3), event("a", now - 2)]
            waiting = dataclass_replace(event("a", now - 1), next_attempt_at=now + 30)
            other = event("b", now - 5)
            later_b = dataclass_replace(event("b", now - 4), next_attempt_at=now + 20)
            for e in (*stored, waiting, other, later_b):
                assert await table.insert(e)
            reads: list[str] = []

            # Every statement the tables run goes through execute_sql, on both engines.
            # (On PostgreSQL the cluster's coordination, advisory locks and NOTIFY, and
            # the database's clock (queue/clock.py) read no table.)
            store._db.query_hooks.append(
                lambda query: reads.append(query.sql) if query.sql.lstrip().upper().startswith(
                    ("SELECT", "WITH")) and "SELECT pg_" not in query.sql
                and "clock_timestamp()" not in query.sql else None)
            fresh = [event("a", now), event("a", now + 0.001)]
            claim = await table.cycle([], now + 1, 1, {"b"}, lambda due: due,
                                      [(e, 4) for e in fresh])
            assert len(reads) == 1  # count, functions, heads and next due: one statement
            assert claim.accepted == [True, False]  # 3 stored + 1 reach the cap of 4
            assert [e.id for e in claim.claimed] == [stored[0].id]  # per_function 1, b full
            assert claim.next_due == now + 20 and claim.backlog
            assert await table.queued("a") == 3 and await table.queued("b") == 2
            rest = await table.cycle([], now + 1, 5, set(), lambda due: due, [])
            assert {e.id for e in rest.claimed} == {stored[1].id, fresh[0].id, other.id}
        finally:
            await store.close()

    asyncio.run(scenario())
