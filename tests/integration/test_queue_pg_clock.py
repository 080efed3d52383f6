"""The async queue's times on a real PostgreSQL are the database's clock, not a node's: a
node whose wall clock is off by an hour (handed to its table, as its worker hands
`time.time()`) neither hides the events and retries it stores from the other nodes nor
sees theirs late, and max_event_age is not judged across two clocks (queue/clock.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambdad.queue.model import AsyncInvocation, RetryPolicy, finish_of
from lambdad.queue.pg_table import PgInvocationTable
from lambdad.store.database import open_database
from tests.support.postgres import Postgres
from tests.support.queue import fresh_event, take_all

SKEW = 3600.0
GUARD = 10.0  # far under the skew: a claim within it is "at once", not after the hour


def _ahead() -> float:
    return time.time() + SKEW


def _behind() -> float:
    return time.time() - SKEW


class Node:
    """One node's invocation table on its own connection, with its own wall clock."""

    def __init__(self, url: str, node_id: str, clock: Callable[[], float]) -> None:
        self.db: Any = open_database(url, node_id)
        self.clock = clock
        self.table = PgInvocationTable(self.db, node_id, clock=clock)

    def claim(self, until: Callable[[list[AsyncInvocation]], bool]) -> list[AsyncInvocation]:
        """Cycles as a worker does (`now` from its clock) until `until(claimed so far)`."""
        got: list[AsyncInvocation] = []
        deadline = time.monotonic() + GUARD
        while not until(got) and time.monotonic() < deadline:
            got += self.table.cycle([], self.clock(), 10, set(), take_all, []).claimed
            time.sleep(0.05)
        return got

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def url(postgres: Postgres) -> Iterator[str]:
    name = postgres.create_database()
    postgres.psql(name, "INSERT INTO functions (name, created_at) VALUES ('f', now())")
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)


def test_events_stored_by_a_node_an_hour_ahead_are_due_at_once_for_the_others(
        url: str) -> None:
    """The skewed node stores one event through a worker's batch and one on its own
    (`insert`, the path of a stopped worker's intake); a node with the right clock claims
    both at once, and their stored times are the database's (within seconds of it)."""
    skewed, right = Node(url, "ahead", _ahead), Node(url, "right", time.time)
    try:
        batched, alone = fresh_event("f", skewed.clock()), fresh_event("f", skewed.clock())
        skewed.table.cycle([], skewed.clock(), 1, set(), None, [(batched, 0)])
        assert skewed.table.insert(alone, 10)
        stored = right.db.execute_sql(
            "SELECT max(abs(next_attempt_at - extract(epoch FROM now()))), "
            "max(abs(created_at - extract(epoch FROM now()))) FROM invocations").fetchone()
        assert float(stored[0]) < GUARD and float(stored[1]) < GUARD
        got = right.claim(lambda got: len(got) == 2)
        assert sorted(inv.id for inv in got) == sorted([batched.id, alone.id])
        # Handed back in the claimer's clock: created just now, not an hour from now.
        assert all(abs(inv.created_at - time.time()) < GUARD for inv in got)
    finally:
        skewed.close()
        right.close()


def test_a_node_an_hour_behind_claims_the_others_events_at_once(url: str) -> None:
    """Events stored by a node with the right clock are due for a node an hour behind
    (before, they were "not due yet" to it for an hour), and come back in its clock."""
    right, late = Node(url, "right", time.time), Node(url, "behind", _behind)
    try:
        events = [fresh_event("f", right.clock()) for _ in range(3)]
        right.table.cycle([], right.clock(), 1, set(), None, [(e, 0) for e in events])
        got = late.claim(lambda got: len(got) == 3)
        assert sorted(inv.id for inv in got) == sorted(e.id for e in events)
        assert all(abs(inv.started_at - late.clock()) < GUARD for inv in got
                   if inv.started_at is not None)
    finally:
        right.close()
        late.close()


def test_a_retry_from_a_node_an_hour_ahead_waits_its_backoff_not_the_skew(url: str) -> None:
    """An event accepted by a node with the right clock fails on a node an hour ahead:
    its retry (backoff 1 s, max_event_age 60 s) is not a dead letter for being "an hour
    old" (the event's creation comes back in the failing node's clock), its next due time
    is 1 s away for that node, and the right-clock node claims the retry within seconds,
    not after the hour."""
    right, skewed = Node(url, "right", time.time), Node(url, "ahead", _ahead)
    try:
        event = fresh_event("f", right.clock())
        right.table.cycle([], right.clock(), 1, set(), None, [(event, 0)])
        [claimed] = skewed.claim(lambda got: len(got) == 1)
        policy = RetryPolicy(retries=2, max_event_age_s=60, backoff_s=1.0)
        finish = finish_of(claimed, policy, ok=False, now=skewed.clock(), status_code=500,
                           result=None, error="boom")
        assert finish.status == "queued"  # not failed as too old
        after = skewed.table.cycle([finish], skewed.clock(), 1, set(), take_all, [])
        assert after.claimed == []  # its backoff has not passed
        assert after.next_due is not None and 0 < after.next_due - skewed.clock() <= 1.5
        [again] = right.claim(lambda got: len(got) == 1)
        assert again.id == event.id and again.attempts == 2
    finally:
        right.close()
        skewed.close()
