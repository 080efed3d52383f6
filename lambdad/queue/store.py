"""SQL for the invocations table, run on the store's thread (see lambdad.store.Store)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lambdad.idprefix import row_by_prefix
from lambdad.queue.model import AsyncInvocation, Finish
from lambdad.queue.room import Capacity

_COLUMNS = ("id, function, payload, source, status, attempts, created_at, next_attempt_at, "
            "started_at, finished_at, status_code, result, last_error")
_HEAD_COLUMNS = ", ".join(f"i.{name.strip()}" for name in _COLUMNS.split(","))


# SQLite's hint for the reads of queued rows (its planner may otherwise walk the full
# index); PostgreSQL has no hints, and its partial index serves them (queue/pg_table.py).
SQLITE_QUEUE_INDEX = " INDEXED BY invocations_queue"


def queued_functions_cte(hint: str) -> str:
    """The functions with queued events as the recursive CTE `f(name)` (a loose index
    scan: one probe of invocations_queue per function, so one function's backlog costs
    nothing); its last row is NULL, so a reader keeps `WHERE name IS NOT NULL`. Follows
    `WITH RECURSIVE`; `hint`: SQLITE_QUEUE_INDEX or ""."""
    return ("f(name) AS ("
            f"SELECT (SELECT MIN(function) FROM invocations{hint} WHERE status = 'queued') "
            f"UNION ALL SELECT (SELECT MIN(function) FROM invocations{hint} "
            "WHERE status = 'queued' AND function > f.name) "
            "FROM f WHERE f.name IS NOT NULL)")


# 13 columns each: 64 rows stay under SQLite's oldest limit of 999 variables a statement.
_ROWS_PER_INSERT = 64


def _heads_of(rows: Sequence[Any]
              ) -> tuple[list[str], list[AsyncInvocation], float | None, dict[str, int]]:
    """`_heads`' rows (name, later, queued, the due event's columns or NULLs) as
    (functions with queued events, due events, next waiting time, queued per function)."""
    functions: list[str] = []
    counted: dict[str, int] = {}
    due: list[AsyncInvocation] = []
    later: float | None = None
    for r in rows:
        if r[0] not in counted:
            functions.append(r[0])
            counted[r[0]] = int(r[2])
            if r[1] is not None and (later is None or r[1] < later):
                later = float(r[1])
        if r[3] is not None:
            due.append(_row(r[3:]))
    due.sort(key=lambda inv: inv.next_attempt_at)
    return functions, due, later, counted


def _fresh(inserts: Sequence[tuple[AsyncInvocation, int]], accepted: Sequence[bool],
           due: Sequence[AsyncInvocation], skip: set[str], now: float,
           per_function: int) -> list[AsyncInvocation]:
    """The accepted events of a cycle that are candidates as they are: due, of a function
    not skipped, within `per_function` with the stored due events of their function."""
    room = {name: per_function for name in {inv.function for inv, _ in inserts}}
    for inv in due:
        if inv.function in room:
            room[inv.function] -= 1
    fresh: list[AsyncInvocation] = []
    for (inv, _), ok in zip(inserts, accepted, strict=True):
        if (ok and inv.function not in skip and inv.next_attempt_at <= now
                and room[inv.function] > 0):
            room[inv.function] -= 1
            fresh.append(inv)
    return fresh


def _started(chosen: Sequence[AsyncInvocation], now: float) -> list[AsyncInvocation]:
    """The chosen events as claimed: running from `now`, their attempt counted."""
    return [dataclasses.replace(inv, status="running", attempts=inv.attempts + 1,
                                started_at=now) for inv in chosen]


def _row(r: Any) -> AsyncInvocation:
    return AsyncInvocation(
        id=r[0], function=r[1], payload=bytes(r[2]), source=r[3], status=r[4],
        attempts=r[5], created_at=r[6], next_attempt_at=r[7], started_at=r[8],
        finished_at=r[9], status_code=r[10], result=bytes(r[11]) if r[11] is not None else None,
        last_error=r[12],
    )


@dataclass(frozen=True)
class Claim:
    """What one worker cycle got: the events it now owns (marked running, attempts counted),
    the functions of due events it left (no room for them), when the next waiting event
    becomes due, and which of the events it was given to insert were stored."""

    claimed: list[AsyncInvocation]
    left: list[str]
    next_due: float | None
    accepted: list[bool] = dataclasses.field(default_factory=list)  # per insert: stored?
    backlog: bool = True  # queued events may be left in the store (due or not)
    # Functions of `left` this node may not deliver more of now because the cluster has
    # no room for them here (queue/room.py): another node's NOTIFY or the poll retries
    # them, not an immediate cycle (which would only find no room again).
    held: frozenset[str] = frozenset()


Choose = Callable[[list[AsyncInvocation]], list[AsyncInvocation]]


class InvocationTable:
    """Blocking calls; the async Store facade runs them on its single thread."""

    _hint = SQLITE_QUEUE_INDEX  # (PostgreSQL: none)
    _rows_per_insert = _ROWS_PER_INSERT
    _extra_columns: tuple[str, ...] = ()  # written after _COLUMNS (PostgreSQL: owner_node)

    def __init__(self, db: Any) -> None:
        self._db = db
        # Whether the table may hold queued rows. Every write that can leave one sets it
        # (an insert of a queued event, a retry's end, recover, redrive; this table is the
        # only writer of invocations); a committed cycle that read the queue and left
        # nothing queued clears it. While it is clear a cycle skips its reads (the cap's
        # count, the functions with queued events, their heads, the next due time): each
        # statement is a round of the GIL between this thread and the busy event loop, and
        # an event stored running and delivered at once never needs them (issue 16).
        self._maybe_queued = True

    def insert(self, inv: AsyncInvocation, max_queued: int = 0) -> bool:
        """Stores the event unless its function already has `max_queued` queued ones
        (0: no cap); False when refused."""
        with self._db.atomic():
            return self._insert([(inv, max_queued)])[0]

    def _insert(self, items: Sequence[tuple[AsyncInvocation, int]]) -> list[bool]:
        """Inside the caller's transaction: checks the caps (`_admit`) and writes the
        accepted events as they are."""
        accepted = self._admit(items)
        self._write([inv for (inv, _), ok in zip(items, accepted, strict=True) if ok])
        return accepted

    def _admit(self, items: Sequence[tuple[AsyncInvocation, int]],
               counted: dict[str, int] | None = None) -> list[bool]:
        """Inside the caller's transaction. Each event's cap counts its function's queued
        events, those of the batch included; count and insert are one transaction on the
        store's one thread, so concurrent enqueues cannot overshoot the cap. `counted`: the
        queued events per function, already read in this transaction (`_heads`; a function
        missing has none)."""
        queued: dict[str, int] = {}
        accepted: list[bool] = []
        for inv, max_queued in items:
            if inv.function not in queued:
                if counted is not None:
                    queued[inv.function] = counted.get(inv.function, 0)
                else:
                    queued[inv.function] = (self.queued(inv.function, max_queued)
                                            if max_queued > 0 and self._maybe_queued else 0)
            if 0 < max_queued <= queued[inv.function]:
                accepted.append(False)
                continue
            queued[inv.function] += 1
            accepted.append(True)
        return accepted

    def _write(self, invocations: Sequence[AsyncInvocation]) -> None:
        """One INSERT statement per `_rows_per_insert` events, not one per event: each
        statement the sqlite3 module runs lets go of the GIL and takes it back, and with the
        event loop busy each take is a hand-over between threads (issue 16)."""
        if any(inv.status == "queued" for inv in invocations):
            self._maybe_queued = True
        columns = _COLUMNS + "".join(f", {name}" for name in self._extra_columns)
        row = "(" + ",".join("?" * (13 + len(self._extra_columns))) + ")"
        for at in range(0, len(invocations), self._rows_per_insert):
            chunk = invocations[at:at + self._rows_per_insert]
            self._db.execute_sql(
                f"INSERT INTO invocations ({columns}) VALUES " + ",".join([row] * len(chunk)),
                [value for inv in chunk for value in (
                    inv.id, inv.function, inv.payload, inv.source, inv.status, inv.attempts,
                    inv.created_at, inv.next_attempt_at, inv.started_at, inv.finished_at,
                    inv.status_code, inv.result, inv.last_error, *self._extra_values(inv))])

    def _extra_values(self, inv: AsyncInvocation) -> tuple[Any, ...]:
        """The values of `_extra_columns` for a row written (a subclass's columns)."""
        return ()

    def queued(self, function: str, at_most: int = -1) -> int:
        """Events of `function` not yet delivered (waiting to start, or for a retry),
        counted up to `at_most` (-1: all; the cap check needs no more)."""
        row = self._db.execute_sql(
            "SELECT COUNT(*) FROM (SELECT 1 FROM invocations INDEXED BY invocations_queue "
            "WHERE status = 'queued' AND function = ? LIMIT ?)", (function, at_most)).fetchone()
        return int(row[0])

    def queued_functions(self) -> list[str]:
        """The functions with queued events, one index probe each (a loose index scan:
        a backlog of one function costs nothing here)."""
        rows = self._db.execute_sql(
            f"WITH RECURSIVE {queued_functions_cte(self._hint)} "
            "SELECT name FROM f WHERE name IS NOT NULL").fetchall()
        return [r[0] for r in rows]

    def due(self, now: float, per_function: int, skip: set[str],
            exclude: set[str], functions: Sequence[str] | None = None
            ) -> list[AsyncInvocation]:
        """The oldest `per_function` due events of every function not in `skip` (those at
        their limit), leaving out the ids in `exclude`. Per function, so a long backlog
        of one function never hides another's events from the worker, and each function's
        head is read from invocations_queue without touching the rest of its backlog."""
        found: list[AsyncInvocation] = []
        for function in self.queued_functions() if functions is None else functions:
            if function in skip:
                continue
            rows = self._db.execute_sql(
                f"SELECT {_COLUMNS} FROM invocations{self._hint} "
                "WHERE status = 'queued' AND function = ? AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, created_at LIMIT ?",
                (function, now, per_function + len(exclude))).fetchall()
            found += [inv for inv in map(_row, rows) if inv.id not in exclude][:per_function]
        found.sort(key=lambda inv: inv.next_attempt_at)
        return found

    def _heads(self, now: float, per_function: int, skip: set[str], cap: int,
               counting: set[str]
               ) -> tuple[list[str], list[AsyncInvocation], float | None, dict[str, int]]:
        """What a cycle reads, in one statement: the functions with queued events (a loose
        index scan), per function in `counting` (those the cycle inserts for) its queued
        events counted up to `cap` (for `_admit`; 0 for the others),
        its next waiting time (`next_due`) and, unless in `skip`, its `per_function` oldest
        due events (`due`); each an index range of invocations_queue. One statement, not
        three plus one per function: each statement is a round of the GIL between this
        thread and the busy event loop, and the cycle's wall time is how long freed
        delivery slots wait when events are queued (issue 16)."""
        rows = self._db.execute_sql(
            f"WITH RECURSIVE {queued_functions_cte(SQLITE_QUEUE_INDEX)}, "
            "g AS MATERIALIZED (SELECT name, "
            "(SELECT MIN(next_attempt_at) FROM invocations INDEXED BY invocations_queue "
            "WHERE status = 'queued' AND function = f.name AND next_attempt_at > ?1) AS later, "
            "CASE WHEN name IN (SELECT value FROM json_each(?5)) THEN "
            "(SELECT COUNT(*) FROM (SELECT 1 FROM invocations INDEXED BY invocations_queue "
            "WHERE status = 'queued' AND function = f.name LIMIT ?4)) ELSE 0 END AS queued "
            "FROM f WHERE name IS NOT NULL) "
            f"SELECT g.name, g.later, g.queued, {_HEAD_COLUMNS} FROM g "
            "LEFT JOIN invocations AS i ON g.name NOT IN (SELECT value FROM json_each(?3)) "
            "AND i.rowid IN (SELECT rowid FROM invocations INDEXED BY invocations_queue "
            "WHERE status = 'queued' AND function = g.name AND next_attempt_at <= ?1 "
            "ORDER BY next_attempt_at, created_at LIMIT ?2) ORDER BY g.name",
            (now, per_function, json.dumps(sorted(skip)), cap,
             json.dumps(sorted(counting)))).fetchall()
        return _heads_of(rows)

    def next_due(self, after: float) -> float | None:
        """When the next event waiting for its time (a retry's backoff) becomes due.

        Events already due but not started wait for a slot, and a freed slot wakes the
        worker; counting them here would make it poll in a busy loop."""
        row = self._db.execute_sql(
            "SELECT MIN(next_attempt_at) FROM invocations WHERE status = 'queued' "
            "AND next_attempt_at > ?", (after,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def cycle(self, finished: Sequence[Finish], now: float, per_function: int,
              skip: set[str], choose: Choose | None,
              inserts: Sequence[tuple[AsyncInvocation, int]] = (),
              limit_for: Callable[[str], int] | None = None,
              capacity_for: Callable[[str], Capacity] | None = None) -> Claim:
        """One worker cycle in one transaction: stores the accepted events given (each with
        its function's cap), records the attempts that ended, then takes the due events
        `choose` picks (of the oldest `per_function` per function not in `skip`) and marks
        them running with their attempt counted, before any delivery starts (a crash turns
        them back into queued events: at-least-once). `choose` is pure (fair.select over a
        snapshot): it runs here so that reading and claiming are one transaction. None:
        store and record only.

        The events given are candidates as they are, after the stored ones of their
        function (they are the newest): one picked is written running at once, so an event
        accepted and claimed by the same cycle costs one INSERT, not an INSERT, a read
        back and an UPDATE.

        `limit_for` (a function's delivery limit) and `capacity_for` (its instances and
        their concurrency) are for a shared database, where other nodes' deliveries and
        instances count (PgInvocationTable); here the worker's own count is all."""
        with self._db.atomic():
            self._finish(finished)
            if choose is None:
                return Claim([], [], None, self._insert(inserts))
            if self._maybe_queued:
                cap = max((max_queued for _, max_queued in inserts), default=0)
                queued, due, later, counted = self._heads(
                    now, per_function, skip, cap,
                    {inv.function for inv, max_queued in inserts if max_queued > 0})
            else:  # writes only (see _maybe_queued)
                queued, due, later, counted = [], [], None, {}
            accepted = self._admit(inserts, counted)
            stored = {inv.id for inv in due}
            fresh = _fresh(inserts, accepted, due, skip, now, per_function)
            candidates = due + fresh
            chosen = choose(candidates) if candidates else []
            taken = {inv.id for inv in chosen}
            claimed = _started(chosen, now)
            self._write([inv for inv in claimed if inv.id not in stored] + [
                inv for (inv, _), ok in zip(inserts, accepted, strict=True)
                if ok and inv.id not in taken])
            again = [(now, inv.id) for inv in chosen if inv.id in stored]
            if again:
                self._db.executemany(
                    "UPDATE invocations SET status = 'running', attempts = attempts + 1, "
                    "started_at = ? WHERE id = ? AND status = 'queued'", again)
            left = sorted({inv.function for inv in candidates if inv.id not in taken})
            # Whether the store may still hold queued events (due or not): if not, an ended
            # delivery frees a slot nothing waits for, and need not start a cycle at once.
            backlog = (bool(queued) or len(taken) < len(candidates)
                       or sum(accepted) > len(fresh))
            # (`later` was read before this cycle's writes: what they add is due now or
            # running, so the next waiting event's time is unchanged.)
            claim = Claim(claimed, left, later if backlog else None, accepted, backlog)
        self._maybe_queued = backlog  # committed: what this cycle read and left
        return claim

    def settle(self, finished: Sequence[Finish]) -> None:
        """Records ended attempts (a stop writes what the last cycle did not)."""
        with self._db.atomic():
            self._finish(finished)

    def _finish(self, finished: Sequence[Finish]) -> None:
        """Only over a running row: one cancelled meanwhile (a `replace` schedule) keeps
        its cancellation, and writing the same outcome twice changes nothing."""
        if not finished:
            return
        if any(f.status == "queued" for f in finished):  # a retry waits for its time
            self._maybe_queued = True
        self._db.executemany(
            "UPDATE invocations SET status = ?, next_attempt_at = ?, finished_at = ?, "
            "status_code = ?, result = ?, last_error = ? WHERE id = ? AND status = 'running'",
            [(f.status, f.next_attempt_at,
              f.finished_at if f.status in ("succeeded", "failed") else None,
              f.status_code, f.result, f.error, f.id) for f in finished])

    def cancel(self, inv_id: str, reason: str, now: float) -> None:
        self._db.execute_sql(
            "UPDATE invocations SET status = 'failed', finished_at = ?, last_error = ? "
            "WHERE id = ? AND status IN ('queued', 'running')", (now, reason, inv_id))

    def status(self, inv_id: str) -> str:
        row = self._db.execute_sql(
            "SELECT status FROM invocations WHERE id = ?", (inv_id,)).fetchone()
        return str(row[0]) if row is not None else ""

    def recover(self, now: float) -> int:
        """Attempts cut short by a crash go back to the queue (at-least-once)."""
        self._maybe_queued = True
        cursor = self._db.execute_sql(
            "UPDATE invocations SET status = 'queued', next_attempt_at = ?, "
            "last_error = 'the daemon stopped during the attempt' WHERE status = 'running'",
            (now,))
        return int(cursor.rowcount)

    def hand_back(self, ids: Sequence[str], now: float) -> int:
        """A clean stop's cut-short attempts: here they stay running until `recover` at
        the next start (one daemon: nobody else could deliver them meanwhile)."""
        return 0

    def of_function(self, function: str, status: str, limit: int) -> list[AsyncInvocation]:
        """Newest first. Queued and running events are few (bounded by the cap and the
        concurrency): they are read from invocations_queue instead of walking back through
        the function's whole history (a poll for "is the queue empty" stays cheap)."""
        small = status in ("queued", "running")
        sql = (f"SELECT {_COLUMNS} FROM invocations"
               f"{self._hint if small else ''} WHERE function = ?")
        params: tuple[Any, ...] = (function,)
        if status:
            sql += " AND status = ?"
            params += (status,)
        sql += " ORDER BY created_at DESC LIMIT ?"
        return [_row(r) for r in self._db.execute_sql(sql, (*params, limit)).fetchall()]

    def get(self, prefix: str) -> AsyncInvocation:
        return _row(row_by_prefix(self._db, "invocations", _COLUMNS, prefix, "invocation"))

    def redrive(self, ids: list[str], now: float) -> int:
        self._maybe_queued = True
        count = 0
        for inv_id in ids:
            cursor = self._db.execute_sql(
                "UPDATE invocations SET status = 'queued', attempts = 0, next_attempt_at = ?, "
                "finished_at = NULL WHERE id = ? AND status = 'failed'", (now, inv_id))
            count += int(cursor.rowcount)
        return count

    def failed_ids(self, function: str) -> list[str]:
        rows = self._db.execute_sql(
            "SELECT id FROM invocations WHERE function = ? AND status = 'failed'", (function,))
        return [r[0] for r in rows.fetchall()]
