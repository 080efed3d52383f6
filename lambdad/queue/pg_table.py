"""The invocations table on PostgreSQL: InvocationTable's methods, with the reads that are
SQLite-only (index hints, json_each, rowid, numbered placeholders) written for PostgreSQL.

Everything else is inherited: its SQL is portable and the database object turns its `?`
into `%s` (store/database.py). The partial index invocations_queue (only queued rows, by
function and delivery order) serves the same reads SQLite's full index does.

`_maybe_queued` (skip the queue's reads while this table knows nothing is queued) is
always set here: on a shared database another node may queue events this table never saw.

Competing consumers (cluster mode: several nodes, one table each, on one database):
- a claim marks the rows running with `owner_node` = this node, by an UPDATE over
  `SELECT ... FOR UPDATE SKIP LOCKED` (a row another node is taking is skipped, never
  waited for; one it took meanwhile is no longer queued and is not returned);
- the limits hold across the cluster: per function, a transaction advisory lock
  (QUEUE_LOCK_CLASS, fkey(function)) is held around the count of its running rows and
  the claim, and around the count of its queued rows and the insert; under READ
  COMMITTED a plain count-then-write lets two nodes both see room and both write;
- a node claims only what it can run without taking an instance lease away from
  another node (queue/room.py, with the running rows and the leases read under that
  lock): the free slots of its own instances and the leases nobody holds or needs;
- an attempt's end is recorded only by its owner and only for that attempt (`Finish.
  attempt`): an attempt requeued meanwhile (its node was marked down) and claimed again
  elsewhere keeps the new owner's run;
- `recover` at start takes back only this node's running rows; `hand_back` (a clean
  stop) queues this node's cut-short attempts at once; a node marked down has its running
  rows requeued by REQUEUE_OF_NODE in the mark-down transaction (cluster/membership.py);
- a cycle that leaves due events for others (stored queued, or a freed slot with a
  backlog) sends NOTIFY `lambda_queue` with this node's id; every node's worker wakes;
- times are the database's clock (queue/clock.py): a transaction reads it (or its
  offset read within the last second, while this node's clock was not set), moves the
  node's times given (events, ended attempts, `now`) onto it and the times it returns
  (events claimed, the next due time) back, so a node whose clock is off neither hides
  its events from the others nor sees theirs late.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from lambdad.queue.clock import Offset, offset, shifted, shifted_finish
from lambdad.queue.model import AsyncInvocation, Finish
from lambdad.queue.room import Capacity, room
from lambdad.queue.store import (
    _COLUMNS,
    Choose,
    Claim,
    InvocationTable,
    _fresh,
    _heads_of,
    _started,
    queued_functions_cte,
)

log = logging.getLogger("lambdad.queue")

QUEUE_CHANNEL = "lambda_queue"
# Advisory lock class of a function's claim and cap (two-int form, 'LAMB' + 2).
QUEUE_LOCK_CLASS = 1279348036

# What a mark-down also does in its transaction: the dead node's attempts back to the
# queue (at-least-once; the attempt stays counted).
REQUEUE_OF_NODE = """
UPDATE invocations SET status = 'queued', owner_node = NULL,
       next_attempt_at = extract(epoch FROM now()),
       last_error = 'its node went down during the attempt'
 WHERE status = 'running' AND owner_node = %(id)s
"""

# What a claim reads under the functions' queue locks (queue/room.py): their running
# attempts per owner node ('r') and their instance leases per node ('l'), cluster-wide.
_USAGE = """
SELECT 'r', function, owner_node, count(*) FROM invocations
 WHERE status = 'running' AND function = ANY(%(functions)s::text[]) GROUP BY 2, 3
UNION ALL
SELECT 'l', function, node, count(*) FROM instance_leases
 WHERE function = ANY(%(functions)s::text[]) GROUP BY 2, 3
"""

_ROWS_PER_INSERT = 256  # 14 columns: far under PostgreSQL's 65535 parameters

_I_COLUMNS = ", ".join(f"i.{name.strip()}" for name in _COLUMNS.split(","))

# The functions with queued events, one probe of invocations_queue each (a loose index
# scan, as SQLite's): the recursive CTE `f(name)`, whose last row is NULL.
_QUEUED_FUNCTIONS_CTE = queued_functions_cte("")


def fkey(name: str) -> int:
    """A stable int4 of a function name (not PostgreSQL's undocumented hashtext); a
    collision only serializes two functions."""
    return zlib.crc32(name.encode()) - 2**31


class PgInvocationTable(InvocationTable):
    """Blocking calls on the store's thread, as InvocationTable's. `node_id`: this node,
    the owner of the attempts it claims."""

    _hint = ""  # no index hints: the partial index invocations_queue serves
    _rows_per_insert = _ROWS_PER_INSERT
    _extra_columns = ("owner_node",)

    def __init__(self, db: Any, node_id: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        """`clock`: this node's wall clock, the one the times handed in are read from."""
        super().__init__(db)
        self.node_id = node_id
        self.refused = 0  # ends of attempts this node no longer owned (logs, tests)
        self._clock = clock
        self._offset = Offset()

    def _shift(self) -> float:
        """The database's clock less this node's: what moves this node's times onto the
        database's. Read from the database (in the caller's transaction where there is
        one) unless the last reading still serves (clock.Offset)."""
        before, mono = self._clock(), time.monotonic()
        known = self._offset.current(before, mono)
        if known is not None:
            return known
        row = self._db.execute_sql(
            "SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        return self._offset.read(offset(before, float(row[0]), self._clock()), before, mono)

    # Writes

    def _lock(self, functions: set[str], wait: bool) -> set[str]:
        """Takes the queue lock of each function (sorted: two waiters never deadlock) for
        the rest of the transaction; with wait=False only those free now. Returns those
        held."""
        held: set[str] = set()
        for name in sorted(functions):
            if wait:
                self._db.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)",
                                     (QUEUE_LOCK_CLASS, fkey(name)))
                held.add(name)
            else:
                row = self._db.execute_sql("SELECT pg_try_advisory_xact_lock(%s, %s)",
                                           (QUEUE_LOCK_CLASS, fkey(name))).fetchone()
                if row[0]:
                    held.add(name)
        return held

    def insert(self, inv: AsyncInvocation, max_queued: int = 0) -> bool:
        with self._db.atomic():
            return self._insert([(inv, max_queued)])[0]

    def _insert(self, items: Sequence[tuple[AsyncInvocation, int]],
                shift: float | None = None) -> list[bool]:
        """As InvocationTable's, with the events' times moved onto the database's clock
        (`shift`; None: read it now) and the capped functions' queue locks taken first
        (held to the end of the caller's transaction), so that another node's count and
        insert cannot interleave: every path in (insert, a cycle's batch, a cron fire)
        caps right and stores the database's times."""
        if items:
            moved = self._shift() if shift is None else shift
            items = [(shifted(inv, moved), cap) for inv, cap in items]
        self._lock({inv.function for inv, cap in items if cap > 0}, wait=True)
        return super()._insert(items)

    def _extra_values(self, inv: AsyncInvocation) -> tuple[Any, ...]:
        """The owner of a row written running (a cycle's claim of a fresh event)."""
        return (self.node_id if inv.status == "running" else None,)

    def _finish(self, finished: Sequence[Finish]) -> None:
        """Fenced: only this node's run of that very attempt is recorded."""
        if not finished:
            return
        done = 0
        for f in finished:
            cursor = self._db.execute_sql(
                "UPDATE invocations SET status = %s, next_attempt_at = %s, finished_at = %s, "
                "status_code = %s, result = %s, last_error = %s, "
                "owner_node = CASE WHEN %s::text = 'queued' THEN NULL ELSE owner_node END "
                "WHERE id = %s AND status = 'running' AND owner_node = %s AND attempts = %s",
                (f.status, f.next_attempt_at,
                 f.finished_at if f.status in ("succeeded", "failed") else None,
                 f.status_code, f.result, f.error, f.status, f.id, self.node_id, f.attempt))
            done += max(0, int(cursor.rowcount))
        if done < len(finished):
            self.refused += len(finished) - done
            log.warning("async: %d ended attempt(s) not recorded: no longer this node's "
                        "(requeued while it ran, or cancelled)", len(finished) - done)

    def cycle(self, finished: Sequence[Finish], now: float, per_function: int,
              skip: set[str], choose: Choose | None,
              inserts: Sequence[tuple[AsyncInvocation, int]] = (),
              limit_for: Callable[[str], int] | None = None,
              capacity_for: Callable[[str], Capacity] | None = None) -> Claim:
        """InvocationTable.cycle for competing consumers: the capped functions' queue
        locks are taken before their count (waiting: an insert must not be refused for a
        busy lock); after `choose`, each chosen function's lock is tried (busy: another
        node is claiming it, skip it this cycle), its running rows and instance leases
        across the cluster are read and this node takes only its room (`room.room` with
        `capacity_for`; with `limit_for` alone, the delivery limit less the running rows),
        and the stored rows are claimed with SKIP LOCKED. `limit_for` and `capacity_for`
        run on the store thread: they must only read.

        The times given (`now`, the ended attempts', the events') are this node's clock;
        they are stored in the database's, and the events claimed and the next due time
        come back in this node's (queue/clock.py)."""
        with self._db.atomic():
            shift = self._shift()
            now += shift
            finished = [shifted_finish(f, shift) for f in finished]
            inserts = [(shifted(inv, shift), cap) for inv, cap in inserts]
            self._finish(finished)
            self._lock({inv.function for inv, cap in inserts if cap > 0}, wait=True)
            if choose is None:
                accepted = self._insert(inserts, 0.0)
                self._wake_others(any(accepted) or bool(finished))
                return Claim([], [], None, accepted)
            cap = max((max_queued for _, max_queued in inserts), default=0)
            queued, due, later, counted = self._heads(
                now, per_function, skip, cap,
                {inv.function for inv, max_queued in inserts if max_queued > 0})
            accepted = self._admit(inserts, counted)
            stored = {inv.id for inv in due}
            fresh = _fresh(inserts, accepted, due, skip, now, per_function)
            candidates = due + fresh
            chosen, held = self._within_limits(choose(candidates) if candidates else [],
                                               self._capacities(limit_for, capacity_for))
            ids = [inv.id for inv in chosen if inv.id in stored]
            won: set[str] = set()
            if ids:
                rows = self._db.execute_sql(
                    "UPDATE invocations i SET status = 'running', attempts = i.attempts + 1, "
                    "started_at = %s, owner_node = %s FROM (SELECT id FROM invocations "
                    "WHERE id = ANY(%s::text[]) AND status = 'queued' "
                    "FOR UPDATE SKIP LOCKED) p WHERE i.id = p.id RETURNING i.id",
                    (now, self.node_id, ids)).fetchall()
                won = {r[0] for r in rows}
            chosen = [inv for inv in chosen if inv.id in won or inv.id not in stored]
            taken = {inv.id for inv in chosen}
            claimed = _started(chosen, now)
            self._write([inv for inv in claimed if inv.id not in stored] + [
                inv for (inv, _), ok in zip(inserts, accepted, strict=True)
                if ok and inv.id not in taken])
            left = sorted({inv.function for inv in candidates if inv.id not in taken})
            backlog = (bool(queued) or len(taken) < len(candidates)
                       or sum(accepted) > len(fresh))
            # Others may deliver what this cycle stored and did not take, or what waited
            # for the slots its ended attempts freed.
            self._wake_others(sum(accepted) > len([i for i in fresh if i.id in taken])
                              or (bool(finished) and backlog))
            return Claim([shifted(inv, -shift) for inv in claimed], left,
                         later - shift if backlog and later is not None else None,
                         accepted, backlog, frozenset(held))

    def settle(self, finished: Sequence[Finish]) -> None:
        with self._db.atomic():
            shift = self._shift()
            self._finish([shifted_finish(f, shift) for f in finished])

    def cancel(self, inv_id: str, reason: str, now: float) -> None:
        super().cancel(inv_id, reason, now + self._shift())

    def redrive(self, ids: list[str], now: float) -> int:
        return super().redrive(ids, now + self._shift())

    @staticmethod
    def _capacities(limit_for: Callable[[str], int] | None,
                    capacity_for: Callable[[str], Capacity] | None
                    ) -> Callable[[str], Capacity] | None:
        if capacity_for is not None:
            return capacity_for
        if limit_for is not None:  # deliveries only: one slot per lease, none leased
            return lambda name: Capacity(max(1, limit_for(name)), 1)
        return None

    def _within_limits(self, chosen: list[AsyncInvocation],
                       capacity_for: Callable[[str], Capacity] | None
                       ) -> tuple[list[AsyncInvocation], set[str]]:
        """The chosen events whose function's queue lock this transaction got and that
        fit in this node's room (queue/room.py: its own instances' free slots and the
        leases nobody needs, read here under that lock), in start order; and the
        functions whose events were cut for lack of room."""
        if not chosen:
            return chosen, set()
        functions = {inv.function for inv in chosen}
        held = self._lock(functions, wait=False)
        left: dict[str, int] = {}
        if capacity_for is not None and held:
            running: dict[str, dict[str, int]] = {name: {} for name in held}
            leases: dict[str, dict[str, int]] = {name: {} for name in held}
            for kind, function, node, count in self._db.execute_sql(
                    _USAGE, {"functions": sorted(held)}).fetchall():
                (running if kind == "r" else leases)[function][node or ""] = int(count)
            left = {name: room(self.node_id, capacity_for(name), running[name], leases[name])
                    for name in held}
        kept: list[AsyncInvocation] = []
        full: set[str] = set()
        for inv in chosen:
            if inv.function not in held:
                continue
            if capacity_for is not None:
                if left[inv.function] <= 0:
                    full.add(inv.function)
                    continue
                left[inv.function] -= 1
            kept.append(inv)
        return kept, full

    def _wake_others(self, needed: bool) -> None:
        if needed:
            self._db.execute_sql("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, self.node_id))

    def recover(self, now: float) -> int:
        """This node's attempts cut short by its crash or stop (others' are theirs, or
        requeued when they were marked down)."""
        cursor = self._db.execute_sql(
            "UPDATE invocations SET status = 'queued', next_attempt_at = %s, owner_node = NULL, "
            "last_error = 'the daemon stopped during the attempt' "
            "WHERE status = 'running' AND owner_node = %s", (now + self._shift(), self.node_id))
        if cursor.rowcount:
            self._wake_others(True)
        return int(cursor.rowcount)

    def hand_back(self, ids: Sequence[str], now: float) -> int:
        """A clean stop's cut-short attempts go back to the queue at once, for the other
        nodes (the attempt stays counted: it may have run in part)."""
        if not ids:
            return 0
        with self._db.atomic():
            cursor = self._db.execute_sql(
                "UPDATE invocations SET status = 'queued', next_attempt_at = %s, "
                "owner_node = NULL, last_error = 'its node stopped during the attempt' "
                "WHERE id = ANY(%s::text[]) AND status = 'running' AND owner_node = %s",
                (now + self._shift(), list(ids), self.node_id))
            count = int(cursor.rowcount)
            self._wake_others(count > 0)
        return count

    @property
    def _maybe_queued(self) -> bool:
        return True

    @_maybe_queued.setter
    def _maybe_queued(self, value: bool) -> None:
        pass  # see the module's docstring

    def queued(self, function: str, at_most: int = -1) -> int:
        row = self._db.execute_sql(
            "SELECT COUNT(*) FROM (SELECT 1 FROM invocations WHERE status = 'queued' "
            "AND function = %s LIMIT %s) q", (function, at_most if at_most >= 0 else None)
        ).fetchone()
        return int(row[0])

    def _heads(self, now: float, per_function: int, skip: set[str], cap: int,
               counting: set[str]
               ) -> tuple[list[str], list[AsyncInvocation], float | None, dict[str, int]]:
        """InvocationTable._heads in one PostgreSQL statement: a LATERAL join takes each
        function's oldest due events where SQLite's reads them by rowid."""
        rows = self._db.execute_sql(
            f"WITH RECURSIVE {_QUEUED_FUNCTIONS_CTE}, "
            "g AS MATERIALIZED (SELECT name, "
            "(SELECT MIN(next_attempt_at) FROM invocations WHERE status = 'queued' "
            "AND function = f.name AND next_attempt_at > %(now)s) AS later, "
            "CASE WHEN name = ANY(%(counting)s::text[]) THEN "
            "(SELECT COUNT(*) FROM (SELECT 1 FROM invocations WHERE status = 'queued' "
            "AND function = f.name LIMIT %(cap)s) c) ELSE 0 END AS queued "
            "FROM f WHERE name IS NOT NULL) "
            f"SELECT g.name, g.later, g.queued, {_I_COLUMNS} FROM g "
            "LEFT JOIN LATERAL (SELECT * FROM invocations "
            "WHERE status = 'queued' AND function = g.name AND next_attempt_at <= %(now)s "
            "AND NOT (g.name = ANY(%(skip)s::text[])) "
            "ORDER BY next_attempt_at, created_at LIMIT %(per)s) i ON TRUE ORDER BY g.name",
            {"now": now, "per": per_function, "skip": sorted(skip), "cap": cap,
             "counting": sorted(counting)}).fetchall()
        return _heads_of(rows)
