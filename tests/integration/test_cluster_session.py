"""Membership on a real PostgreSQL, without Docker: several `Membership`s (as several
nodes would run them) on one database. Heartbeats advance; the leader lock moves when
the leader's session backend is killed; observers racing to mark one silent node down
are exactly one winner, which releases the node's leases once; a session that lost its
connection reconnects and asks for a full reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg

from lambdad.cluster import table
from lambdad.cluster.changes import ChangeApplier
from lambdad.cluster.leadership import Leadership
from lambdad.cluster.membership import Membership, NodeInfo
from tests.support.postgres import Postgres

GUARD = 20.0  # against a hang, not a speed target
DOWN_AFTER = 1.5


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = GUARD) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        await asyncio.sleep(0.05)
    return False


class Node:
    def __init__(self, url: str, node_id: str) -> None:
        self.reloads = 0
        self.synced: list[str] = []

        async def fn(name: str) -> None:
            self.synced.append(name)

        async def reload() -> None:
            self.reloads += 1

        self.applier = ChangeApplier(node_id, {"fn": fn}, reload)
        self.leadership = Leadership(stand_back=2 * DOWN_AFTER / 5)
        self.membership = Membership(
            url, NodeInfo(node_id, f"name-{node_id}", "127.0.0.1:1", "127.0.0.1:2", "t"),
            down_after=DOWN_AFTER, applier=self.applier, leadership=self.leadership)

    async def start(self) -> Node:
        await self.membership.start()
        self.applier.start()
        return self

    async def stop(self) -> None:
        await self.applier.stop()
        await self.membership.stop()


@asynccontextmanager
async def nodes(postgres: Postgres, *ids: str) -> AsyncIterator[tuple[str, list[Node]]]:
    db = postgres.create_database()
    url = postgres.url(db)
    started: list[Node] = []
    try:
        for node_id in ids:
            started.append(await Node(url, node_id).start())
        yield db, started
    finally:
        for node in started:
            await node.stop()
        postgres.drop_database(db)


def test_heartbeats_advance(postgres: Postgres) -> None:
    async def main() -> None:
        async with nodes(postgres, "a1") as (db, _):
            first = int(postgres.psql(db, "SELECT heartbeat_seq FROM nodes WHERE id = 'a1'"))
            assert await until(lambda: int(postgres.psql(
                db, "SELECT heartbeat_seq FROM nodes WHERE id = 'a1'")) >= first + 3)
            assert postgres.psql(db, "SELECT state FROM nodes") == "up"

    asyncio.run(main())


def test_a_clean_stop_marks_the_node_left(postgres: Postgres) -> None:
    async def main() -> None:
        db = postgres.create_database()
        try:
            node = await Node(postgres.url(db), "c1").start()
            await node.stop()
            assert postgres.psql(db, "SELECT state FROM nodes WHERE id = 'c1'") == "left"
        finally:
            postgres.drop_database(db)

    asyncio.run(main())


def test_killing_the_leaders_session_moves_leadership(postgres: Postgres) -> None:
    async def main() -> None:
        async with nodes(postgres, "l1", "l2") as (db, (one, two)):
            assert await until(lambda: one.leadership.leader or two.leadership.leader)
            leader, other = (one, two) if one.leadership.leader else (two, one)
            assert not other.leadership.leader
            killed = postgres.psql(db, "SELECT count(pg_terminate_backend(pid)) FROM "
                                       "pg_stat_activity WHERE application_name = "
                                       f"'lambdad:{leader.membership.node.id}:session'")
            assert killed == "1"
            assert await until(lambda: other.leadership.leader)
            assert await until(lambda: leader.membership.session.connects >= 2)
            await asyncio.sleep(3 * DOWN_AFTER / 5)  # a few beats: it does not take it back
            assert other.leadership.leader and not leader.leadership.leader
            # one holder only, as the server sees it
            assert postgres.psql(db, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                     "'advisory' AND classid = 1279348034 AND objid = 2 "
                                     "AND granted") == "1"
            # The reconnected session asked for a full reload.
            assert await until(lambda: leader.reloads >= 1)

    asyncio.run(main())


def test_racing_observers_mark_a_silent_node_down_exactly_once(postgres: Postgres) -> None:
    """Four observers see the same silent node at the same sequence and all try to mark
    it down at once: one wins, its leases are released once, one announcement."""

    async def main() -> None:
        async with nodes(postgres, "o1", "o2", "o3", "o4") as (db, observers):
            url = postgres.url(db)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(table.REGISTER, {
                    "id": "dead", "name": "dead", "grpc": "x:1", "gateway": "x:2",
                    "version": "t"})
                await conn.execute(
                    "INSERT INTO instance_leases (instance, function, node, acquired_at) "
                    "VALUES ('i1', 'f', 'dead', now()), ('i2', 'f', 'dead', now()), "
                    "('i3', 'f', 'o1', now())")
                await conn.execute("LISTEN lambda_changes")
                sessions = [o.membership.session.conn for o in observers]
                results = await asyncio.gather(*(
                    o.membership.mark_down(c, "dead", 0)
                    for o, c in zip(observers, sessions, strict=True)))
                assert sorted(results) == [False, False, False, True]
                assert postgres.psql(db, "SELECT state FROM nodes WHERE id = 'dead'") == "down"
                assert postgres.psql(db, "SELECT string_agg(instance, ',') FROM "
                                         "instance_leases") == "i3"
                notes = [n.payload async for n in conn.notifies(timeout=1.0)]
                assert sum('"k":"node","n":"dead"' in n for n in notes) == 1
            # A stale sequence never marks a node that beat meanwhile.
            assert await observers[0].membership.mark_down(sessions[0], "o2", 0) is False

    asyncio.run(main())


def test_a_silent_node_is_marked_down_by_its_peers(postgres: Postgres) -> None:
    async def main() -> None:
        async with nodes(postgres, "s1", "s2") as (db, (one, two)):
            # s2 stops beating (its loop cancelled) but its sessions stay open.
            beating = two.membership._beating
            assert beating is not None
            beating.cancel()
            assert await until(lambda: postgres.psql(
                db, "SELECT state FROM nodes WHERE id = 's2'") == "down",
                timeout=DOWN_AFTER + 5)
            assert one.membership.marked_down == ["name-s2"]
            # its connections were terminated, so it reconnects, rejoins and is up again
            assert await until(lambda: two.membership.session.connects >= 2)
            two.membership._beating = asyncio.create_task(two.membership._beat_forever())
            assert await until(lambda: postgres.psql(
                db, "SELECT state FROM nodes WHERE id = 's2'") == "up")

    asyncio.run(main())


def test_function_locks_span_the_nodes(postgres: Postgres) -> None:
    from lambdad.cluster.locks import SessionLocks
    from lambdad.control.locks import FunctionLocks

    async def main() -> None:
        async with nodes(postgres, "f1", "f2") as (_, (one, two)):
            locks_one = FunctionLocks(SessionLocks(one.membership.session))
            locks_two = FunctionLocks(SessionLocks(two.membership.session))
            order: list[str] = []
            async with locks_one.of("greet"):
                order.append("one in")
                waiting = asyncio.create_task(_hold(locks_two, "greet", order))
                await asyncio.sleep(0.4)
                assert order == ["one in"]  # two waits for one's lock
                async with locks_two.of("other"):  # another function is free
                    pass
                order.append("one out")
            await asyncio.wait_for(waiting, GUARD)
            assert order == ["one in", "one out", "two in"]

    asyncio.run(main())


async def _hold(locks: object, name: str, order: list[str]) -> None:
    async with locks.of(name):  # type: ignore[attr-defined]
        order.append("two in")


def test_the_nodes_table_reads(postgres: Postgres) -> None:
    from lambdad.store import Store

    async def main() -> None:
        async with nodes(postgres, "r1", "r2") as (db, _):
            store = Store(postgres.url(db), node_id="reader")
            await store.open()
            try:
                rows = await store.nodes.all()
                assert [(r.id, r.state) for r in rows] == [("r1", "up"), ("r2", "up")]
                assert rows[0].name == "name-r1" and rows[0].grpc_address == "127.0.0.1:1"
            finally:
                await store.close()

    asyncio.run(main())


def test_a_database_restart_reconnects_reloads_and_marks_nobody_down(
        postgres: Postgres) -> None:
    async def main() -> None:
        async with nodes(postgres, "p1", "p2") as (db, both):
            await asyncio.sleep(2 * DOWN_AFTER / 5)
            await asyncio.to_thread(postgres.restart)
            for node in both:
                assert await until(lambda n=node: n.membership.session.connects >= 2)
                assert await until(lambda n=node: n.reloads >= 1)
            await asyncio.sleep(DOWN_AFTER + 1)  # more than a window after the outage
            assert [n.membership.marked_down for n in both] == [[], []]
            assert postgres.psql(db, "SELECT string_agg(state, ',') FROM nodes") == "up,up"
            assert await until(lambda: any(n.leadership.leader for n in both))

    asyncio.run(main())


def test_a_leader_whose_heartbeat_hangs_steps_down(postgres: Postgres) -> None:
    """Its session's backend stops answering (SIGSTOP: as a partition looks from the
    node, before TCP keepalives tell, and a Unix socket has none): within
    node_down_after/2 it leads no more, by itself (no peer here to mark it down)."""
    import os
    import signal

    async def main() -> None:
        async with nodes(postgres, "h1") as (db, (alone,)):
            assert await until(lambda: alone.leadership.leader)
            pid = int(postgres.psql(db, "SELECT pid FROM pg_stat_activity WHERE "
                                        "application_name = 'lambdad:h1:session'"))
            os.kill(pid, signal.SIGSTOP)
            try:
                stopped = time.monotonic()
                bound = DOWN_AFTER / 2 + DOWN_AFTER / 5
                assert await until(lambda: not alone.leadership.leader, bound + 2)
                assert time.monotonic() - stopped < bound + 1
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await until(lambda: alone.membership.session.connects >= 2)
            assert await until(lambda: alone.leadership.leader)

    asyncio.run(main())
