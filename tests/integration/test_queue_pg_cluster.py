"""The async queue's table as competing consumers on a real PostgreSQL, without Docker:
several `PgInvocationTable`s with different node ids (as several nodes run them, each on
its own connection) on one database, driven from threads at once. Claims are disjoint,
the delivery limit and the queue cap hold across the nodes, an attempt's end is recorded
only by its current owner, and a node marked down has its attempts requeued."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from lambdad.cluster import table as nodes_table
from lambdad.cluster.changes import ChangeApplier
from lambdad.cluster.leadership import Leadership
from lambdad.cluster.membership import Membership, NodeInfo
from lambdad.cluster.wiring import queue_across_nodes
from lambdad.queue.model import AsyncInvocation, Finish
from lambdad.queue.pg_table import PgInvocationTable
from lambdad.store.database import open_database
from tests.support.postgres import Postgres
from tests.support.queue import fresh_event, take_all

GUARD = 60.0  # against a hang, not a speed target


class Node:
    """One node's invocation table on its own connection (use it from one thread)."""

    def __init__(self, url: str, node_id: str) -> None:
        self.db: Any = open_database(url, node_id)
        self.table = PgInvocationTable(self.db, node_id)

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:
    name = postgres.create_database()
    for function in ("f", "g"):
        postgres.psql(name, f"INSERT INTO functions (name, created_at) VALUES ('{function}', "
                      "now())")
    try:
        yield name
    finally:
        postgres.drop_database(name)


def _run_together(work: list[Callable[[], None]]) -> None:
    """Runs each callable on its own thread, all released at once; re-raises a failure."""
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            barrier.wait()
            job()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
        assert not thread.is_alive(), "a claimer hung"
    if errors:
        raise errors[0]


def test_concurrent_claims_are_disjoint(postgres: Postgres, database: str) -> None:
    """Three nodes claim from one backlog at once: every event is claimed by exactly one
    node, with that node as its owner, attempt 1."""
    url = postgres.url(database)
    nodes = [Node(url, f"n{k}") for k in range(3)]
    seed = Node(url, "seed")
    try:
        events = [fresh_event(random.choice("fg")) for _ in range(300)]
        seed.table.cycle([], time.time(), 1, set(), None, [(e, 0) for e in events])
        got: dict[str, list[AsyncInvocation]] = {}

        def claimer(node: Node, node_id: str) -> Callable[[], None]:
            def claim() -> None:
                mine: list[AsyncInvocation] = []
                deadline = time.monotonic() + GUARD
                while time.monotonic() < deadline:
                    claim = node.table.cycle([], time.time(), 7, set(), take_all, [])
                    mine += claim.claimed
                    if not claim.claimed and not claim.backlog:
                        break  # nothing left queued (a busy function is backlog)
                got[node_id] = mine
            return claim

        _run_together([claimer(node, f"n{k}") for k, node in enumerate(nodes)])
        ids = [inv.id for claimed in got.values() for inv in claimed]
        assert len(ids) == len(set(ids)) == len(events)  # disjoint, and none left
        assert sum(1 for claimed in got.values() if claimed) >= 2  # they did compete
        owners = dict(row.split("|") for row in postgres.psql(
            database, "SELECT id, owner_node || ':' || attempts FROM invocations").splitlines())
        for node_id, claimed in got.items():
            assert all(owners[inv.id] == f"{node_id}:1" for inv in claimed)
    finally:
        for node in [*nodes, seed]:
            node.close()


def test_the_delivery_limit_holds_across_four_claimers(postgres: Postgres,
                                                        database: str) -> None:
    """Four nodes each claim and finish as fast as they can with a limit of 5 running
    deliveries of `f`: a sampler never sees more than 5 running, and all are delivered."""
    url = postgres.url(database)
    limit = 5
    nodes = [Node(url, f"c{k}") for k in range(4)]
    seed = Node(url, "seed")
    sampler = psycopg.connect(url, autocommit=True)
    try:
        events = [fresh_event("f") for _ in range(160)]
        seed.table.cycle([], time.time(), 1, set(), None, [(e, 0) for e in events])
        done = threading.Event()
        peak = [0]

        def sample() -> None:
            while not done.is_set():
                row = sampler.execute("SELECT count(*) FROM invocations WHERE "
                                      "status = 'running' AND function = 'f'").fetchone()
                assert row is not None
                peak[0] = max(peak[0], int(row[0]))

        def pick(due: list[AsyncInvocation]) -> list[AsyncInvocation]:
            return random.sample(due, min(len(due), limit))

        def claimer(node: Node) -> Callable[[], None]:
            def run() -> None:
                running: list[AsyncInvocation] = []
                deadline = time.monotonic() + GUARD
                while time.monotonic() < deadline:
                    # Each node ends one of its deliveries per cycle, as a worker would.
                    ending = running[:1]
                    running = running[1:]
                    finishes = [Finish(inv.id, "succeeded", time.time(), time.time(), 200,
                                       b"{}", "", inv.attempts) for inv in ending]
                    # Each picks at random among 40 heads, as nodes whose reads differ
                    # would (the same heads everywhere would hide a race behind SKIP
                    # LOCKED); the limit is the table's to keep.
                    claim = node.table.cycle(finishes, time.time(), 40, set(), pick, [],
                                             lambda _name: limit)
                    running += claim.claimed
                    if not running and not claim.backlog:
                        return
            return run

        watcher = threading.Thread(target=sample)
        watcher.start()
        try:
            _run_together([claimer(node) for node in nodes])
        finally:
            done.set()
            watcher.join(GUARD)
        assert 0 < peak[0] <= limit
        statuses = postgres.psql(database, "SELECT status, count(*) FROM invocations "
                                           "GROUP BY status")
        assert statuses == f"succeeded|{len(events)}"
    finally:
        sampler.close()
        for node in [*nodes, seed]:
            node.close()


def test_a_stale_owners_finish_is_refused(postgres: Postgres, database: str) -> None:
    """A claims an event; A is marked down (its attempt requeued), B takes the event again;
    A's late end of attempt 1 is refused, B's end of attempt 2 is recorded."""
    url = postgres.url(database)
    a, b = Node(url, "a"), Node(url, "b")
    try:
        event = fresh_event("f")
        first = a.table.cycle([], time.time(), 1, set(), take_all, [(event, 0)])
        assert [inv.id for inv in first.claimed] == [event.id]
        with psycopg.connect(url, autocommit=True) as conn:
            from lambdad.queue.pg_table import REQUEUE_OF_NODE

            assert conn.execute(REQUEUE_OF_NODE, {"id": "a"}).rowcount == 1
        again = b.table.cycle([], time.time(), 1, set(), take_all, [])
        assert [(inv.id, inv.attempts) for inv in again.claimed] == [(event.id, 2)]
        stale = Finish(event.id, "failed", time.time(), time.time(), 500, b"", "late", 1)
        a.table.cycle([stale], time.time(), 1, set(), None, [])
        assert a.table.refused == 1
        assert postgres.psql(database, "SELECT status || ':' || owner_node FROM invocations"
                             ) == "running:b"
        # Even a finish naming the current attempt is refused from a node that is not
        # its owner.
        a.table.cycle([Finish(event.id, "failed", time.time(), time.time(), 500, b"", "x", 2)],
                      time.time(), 1, set(), None, [])
        assert a.table.refused == 2
        b.table.cycle([Finish(event.id, "succeeded", time.time(), time.time(), 200, b"{}", "",
                              2)], time.time(), 1, set(), None, [])
        assert b.table.refused == 0
        assert postgres.psql(database, "SELECT status FROM invocations") == "succeeded"
    finally:
        a.close()
        b.close()


def test_marking_a_node_down_requeues_its_attempts_and_wakes_the_others(
        postgres: Postgres, database: str) -> None:
    """Through Membership.mark_down with the queue's release hook: the dead node's running
    attempts are queued again in that transaction (others' stay), once, and a NOTIFY
    lambda_queue wakes the observing node's worker."""
    url = postgres.url(database)
    dead, alive = Node(url, "dead"), Node(url, "alive")

    class Worker:
        woken = 0

        def wake(self) -> None:
            self.woken += 1

    async def main() -> None:
        worker = Worker()
        applier = ChangeApplier("observer", {}, _nothing)
        membership = Membership(
            url, NodeInfo("observer", "observer", "127.0.0.1:1", "127.0.0.1:2", "t"),
            down_after=1.5, applier=applier, leadership=Leadership(stand_back=0.6))
        queue_across_nodes(membership, "observer", worker)
        await membership.start()
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(nodes_table.REGISTER, {
                    "id": "dead", "name": "dead", "grpc": "x:1", "gateway": "x:2",
                    "version": "t"})
                theirs = [fresh_event("f") for _ in range(3)]
                mine = [fresh_event("g") for _ in range(2)]
                await asyncio.to_thread(dead.table.cycle, [], time.time(), 5, set(), take_all,
                                        [(e, 0) for e in theirs])
                await asyncio.to_thread(alive.table.cycle, [], time.time(), 5, set(),
                                        take_all, [(e, 0) for e in mine])
                session = membership.session.conn
                assert session is not None
                assert await membership.mark_down(session, "dead", 0) is True
                assert await membership.mark_down(session, "dead", 0) is False  # once
                rows = await (await conn.execute(
                    "SELECT function, status, coalesce(owner_node, '-'), last_error "
                    "FROM invocations ORDER BY function")).fetchall()
                assert [r[:3] for r in rows] == [("f", "queued", "-")] * 3 + [
                    ("g", "running", "alive")] * 2
                assert all("went down" in r[3] for r in rows[:3])
                deadline = time.monotonic() + GUARD
                while worker.woken == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert worker.woken >= 1
                taken = await asyncio.to_thread(alive.table.cycle, [], time.time(), 5, set(),
                                                take_all, [])
                assert sorted(inv.id for inv in taken.claimed) == sorted(e.id for e in theirs)
                assert all(inv.attempts == 2 for inv in taken.claimed)
        finally:
            await membership.stop()

    try:
        asyncio.run(main())
    finally:
        dead.close()
        alive.close()


async def _nothing(*_args: object) -> None:
    return None


def test_attack_two_nodes_flooding_one_function_stop_at_the_cap(
        postgres: Postgres, database: str) -> None:
    """Two nodes enqueue 400 events for one function at once (200 each, max_queued_events
    200), in a worker's batch (cycle inserts) and one by one (insert), five rounds each:
    exactly 200 are stored every time. With a plain count-then-insert (no queue lock)
    both count the other's uncommitted batch as absent under READ COMMITTED and the cap
    is overshot."""
    url = postgres.url(database)
    a, b = Node(url, "qa"), Node(url, "qb")
    cap = 200
    accepted: list[int] = []
    try:
        def batch(node: Node) -> Callable[[], None]:
            def run() -> None:
                claim = node.table.cycle([], time.time(), 1, set(), None,
                                         [(fresh_event("f"), cap) for _ in range(200)])
                accepted.append(sum(claim.accepted))
            return run

        def singles(node: Node) -> Callable[[], None]:
            def run() -> None:
                accepted.append(sum(node.table.insert(fresh_event("f"), cap) for _ in range(200)))
            return run

        for way in [batch] * 5 + [singles]:
            accepted.clear()
            _run_together([way(a), way(b)])
            assert sum(accepted) == cap
            assert postgres.psql(database, "SELECT count(*) FROM invocations") == str(cap)
            postgres.psql(database, "DELETE FROM invocations")
    finally:
        a.close()
        b.close()


def test_slot_leases_never_exceed_max_instances_with_three_racing_nodes(
        postgres: Postgres, database: str) -> None:
    """Three nodes take and give back instance leases of one function as fast as they can,
    max_instances 3: a sampler never sees more than 3 leases, and each node got some. With
    a plain count-then-insert (no slot lock) they overshoot."""
    from lambdad.cluster.slots_table import SlotTable

    url = postgres.url(database)
    limit = 3
    ids = ["s0", "s1", "s2"]
    for node_id in ids:
        postgres.psql(database, "INSERT INTO nodes (id, name, grpc_address, gateway_address, "
                      "software_version, state, started_at, heartbeat_at) VALUES "
                      f"('{node_id}', '{node_id}', 'x:1', 'x:2', 't', 'up', now(), now())")
    dbs = [open_database(url, node_id) for node_id in ids]
    tables = [SlotTable(db, node_id) for db, node_id in zip(dbs, ids, strict=True)]
    sampler = psycopg.connect(url, autocommit=True)
    done = threading.Event()
    peak = [0]
    granted: dict[str, int] = {}
    try:
        def sample() -> None:
            while not done.is_set():
                row = sampler.execute("SELECT count(*) FROM instance_leases "
                                      "WHERE function = 'f'").fetchone()
                assert row is not None
                peak[0] = max(peak[0], int(row[0]))

        def racer(slots: SlotTable) -> Callable[[], None]:
            def run() -> None:
                held: list[str] = []
                count = 0
                for _ in range(150):
                    lease = uuid.uuid4().hex
                    if slots.acquire("f", lease, limit):
                        held.append(lease)
                        count += 1
                    if len(held) >= 2 or (held and random.random() < 0.5):
                        slots.release(held.pop(0))
                for lease in held:
                    slots.release(lease)
                granted[slots.node_id] = count
            return run

        watcher = threading.Thread(target=sample)
        watcher.start()
        try:
            _run_together([racer(t) for t in tables])
        finally:
            done.set()
            watcher.join(GUARD)
        assert 0 < peak[0] <= limit
        assert all(granted[node_id] > 0 for node_id in ids)
        assert postgres.psql(database, "SELECT count(*) FROM instance_leases") == "0"
        # A node restarting drops what its last run held; others' leases stay.
        assert tables[0].acquire("f", "old", limit) and tables[1].acquire("f", "b", limit)
        assert tables[0].reset() == 1 and tables[0].held("f") == 1
    finally:
        sampler.close()
        for db in dbs:
            db.close()


def _register(postgres: Postgres, database: str, *ids: str) -> None:
    for node_id in ids:
        postgres.psql(database, "INSERT INTO nodes (id, name, grpc_address, gateway_address, "
                      "software_version, state, started_at, heartbeat_at) VALUES "
                      f"('{node_id}', '{node_id}', 'x:1', 'x:2', 't', 'up', now(), now())")


def test_a_node_without_a_lease_leaves_a_capped_functions_events_to_the_holder(
        postgres: Postgres, database: str) -> None:
    """max_instances 1 (concurrency 1), its lease held by A: B and C claim none of the
    function's events (reported held, so their workers do not cycle again at once), A
    claims one at a time. Once A's instance is gone (its lease given back) the first node
    to claim takes the lease's worth, and the next finds that lease needed. With the
    delivery limit alone (running rows, not leases) B claims while A holds the only
    instance, and its start then waits for A's lease: the instance moves between nodes."""
    from lambdad.cluster.slots_table import SlotTable
    from lambdad.queue.room import Capacity

    url = postgres.url(database)
    _register(postgres, database, "A", "B", "C")
    a, b, c = (Node(url, node_id) for node_id in "ABC")
    slots = SlotTable(a.db, "A")
    one = {"capacity_for": lambda _name: Capacity(1, 1)}
    try:
        assert slots.acquire("f", "lease-a", 1)
        events = [fresh_event("f", time.time() - 10 + i) for i in range(6)]
        a.table.cycle([], time.time(), 1, set(), None, [(e, 0) for e in events])
        for other in (b, c):
            got = other.table.cycle([], time.time(), 5, set(), take_all, [], None, **one)
            assert got.claimed == [] and got.held == {"f"} and got.backlog
        first = a.table.cycle([], time.time(), 5, set(), take_all, [], None, **one)
        assert [inv.id for inv in first.claimed] == [events[0].id]
        assert a.table.cycle([], time.time(), 5, set(), take_all, [], None,
                             **one).claimed == []  # its one slot is busy
        done = Finish(events[0].id, "succeeded", time.time(), time.time(), 200, b"{}", "", 1)
        second = a.table.cycle([done], time.time(), 5, set(), take_all, [], None, **one)
        assert [inv.id for inv in second.claimed] == [events[1].id]
        assert b.table.cycle([], time.time(), 5, set(), take_all, [], None,
                             **one).claimed == []
        # A's instance stops: its lease is free; B claims its worth, C finds it needed.
        a.table.cycle([Finish(events[1].id, "succeeded", time.time(), time.time(), 200,
                              b"{}", "", 1)], time.time(), 1, set(), None, [])
        slots.release("lease-a")
        third = b.table.cycle([], time.time(), 5, set(), take_all, [], None, **one)
        assert [inv.id for inv in third.claimed] == [events[2].id]
        for other in (c, a):
            assert other.table.cycle([], time.time(), 5, set(), take_all, [], None,
                                     **one).claimed == []
    finally:
        for node in (a, b, c):
            node.close()


def test_a_rejoining_node_retakes_its_leases_only_where_there_is_room(
        postgres: Postgres, database: str) -> None:
    """SlotTable.retake: a lease still there is kept (a reconnect); after a mark-down
    released it, it is taken again while the function has room, refused once another
    node took the last one."""
    from lambdad.cluster import table as cluster_table
    from lambdad.cluster.slots_table import SlotTable

    url = postgres.url(database)
    _register(postgres, database, "r1", "r2")
    dbs = [open_database(url, node_id) for node_id in ("r1", "r2")]
    mine, theirs = SlotTable(dbs[0], "r1"), SlotTable(dbs[1], "r2")
    try:
        assert mine.acquire("f", "one", 2) and mine.acquire("f", "two", 2)
        assert mine.retake("f", "one", 2) and mine.retake("f", "two", 2)  # kept
        assert mine.held("f") == 2
        postgres.psql(database, cluster_table.RELEASE_LEASES.replace("%(id)s", "'r1'"))
        assert theirs.acquire("f", "other", 2)
        assert mine.retake("f", "one", 2) is True
        assert mine.retake("f", "two", 2) is False
        assert postgres.psql(database, "SELECT string_agg(instance || ':' || node, ' ' "
                             "ORDER BY instance) FROM instance_leases") == "one:r1 other:r2"
    finally:
        for db in dbs:
            db.close()
