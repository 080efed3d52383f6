"""SQL for the schedules table, run on the store's thread (through Store.schedules).

A fire is one transaction: the (schedule, tick) row, the invocation and the schedule's
last run. The row's primary key makes a tick fire at most once, whoever fires it: two
nodes that both believe they lead (a split brain, a takeover's catch-up overlapping the
old leader's last fires) get one invocation, because the second insert does nothing and
its transaction stops there. Creating or deleting a schedule is announced (`schedules`)
so the leader's runner, on whatever node, reloads it."""

from __future__ import annotations

import time
from typing import Any

from lambdad.idprefix import row_by_prefix
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule

_COLUMNS = ("id, function, cron, tz, data, overlap, created_at, last_run, last_result, "
            "last_invocation")


def _row(r: Any) -> Schedule:
    return Schedule(id=r[0], function=r[1], cron=r[2], tz=r[3], data=bytes(r[4]),
                    overlap=r[5], created_at=r[6], last_run=r[7], last_result=r[8],
                    last_invocation=r[9])


def announce(db: Any, name: str) -> None:
    from lambdad.store.database import announce as notify  # lambdad.store imports this module

    notify(db, "schedules", name)


class ScheduleTable:
    def __init__(self, db: Any, invocations: Any = None) -> None:
        self._db = db
        self._invocations = invocations  # the store's InvocationTable (fire inserts with it)

    def insert(self, schedule: Schedule) -> None:
        with self._db.atomic():
            self._insert(schedule)
            announce(self._db, schedule.id)

    def _insert(self, schedule: Schedule) -> None:
        self._db.execute_sql(
            f"INSERT INTO schedules ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (schedule.id, schedule.function, schedule.cron, schedule.tz, schedule.data,
             schedule.overlap, schedule.created_at, schedule.last_run, schedule.last_result,
             schedule.last_invocation))

    def all(self, function: str = "") -> list[Schedule]:
        sql = f"SELECT {_COLUMNS} FROM schedules"
        params: tuple[Any, ...] = ()
        if function:
            sql += " WHERE function = ?"
            params = (function,)
        return [_row(r) for r in self._db.execute_sql(sql + " ORDER BY created_at",
                                                       params).fetchall()]

    def get(self, prefix: str) -> Schedule:
        return _row(row_by_prefix(self._db, "schedules", _COLUMNS, prefix, "schedule"))

    def record_run(self, schedule_id: str, when: float, result: str, invocation: str) -> None:
        self._db.execute_sql(
            "UPDATE schedules SET last_run = ?, last_result = ?, last_invocation = ? "
            "WHERE id = ?", (when, result, invocation, schedule_id))

    def record_skip(self, schedule_id: str, when: float) -> None:
        self._db.execute_sql(
            "UPDATE schedules SET last_run = ?, last_result = 'skipped' WHERE id = ?",
            (when, schedule_id))

    def delete(self, schedule_id: str) -> None:
        with self._db.atomic():
            self._db.execute_sql("DELETE FROM schedules WHERE id = ?", (schedule_id,))
            self._db.execute_sql("DELETE FROM schedule_fires WHERE schedule_id = ?",
                                 (schedule_id,))
            announce(self._db, schedule_id)

    def fire(self, schedule_id: str, when: float, invocation: AsyncInvocation | None,
             max_queued: int, node: str, result: str) -> str:
        """Fires tick `when` of the schedule, once: "fired" (the invocation is stored),
        "skipped" (no invocation: its overlap rule said so), "full" (the function's queue
        is full: recorded as skipped), "duplicate" (this tick had fired: nothing written)
        or "gone" (the schedule was deleted meanwhile)."""
        tick = round(when)
        with self._db.atomic():
            if self._db.execute_sql("SELECT 1 FROM schedules WHERE id = ?",
                                    (schedule_id,)).fetchone() is None:
                return "gone"
            row = self._db.execute_sql(
                "INSERT INTO schedule_fires (schedule_id, tick, node, invocation, fired_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (schedule_id, tick) DO NOTHING RETURNING tick",
                (schedule_id, tick, node, invocation.id if invocation else "",
                 time.time())).fetchone()
            if row is None:
                return "duplicate"
            if invocation is not None:
                if self._invocations._insert([(invocation, max_queued)])[0]:
                    self.record_run(schedule_id, when, result, invocation.id)
                    return "fired"
                self._db.execute_sql("UPDATE schedule_fires SET invocation = '' "
                                     "WHERE schedule_id = ? AND tick = ?", (schedule_id, tick))
            self.record_skip(schedule_id, when)
            return "skipped" if invocation is None else "full"

    def last_ticks(self) -> dict[str, float]:
        """Each schedule's newest fired tick (where a takeover's catch-up starts)."""
        return {r[0]: float(r[1]) for r in self._db.execute_sql(
            "SELECT schedule_id, MAX(tick) FROM schedule_fires GROUP BY schedule_id").fetchall()}

    def fires(self, schedule_id: str) -> list[tuple[int, str, str]]:
        """(tick, node, invocation) of each fire row, oldest first."""
        return [(int(r[0]), r[1], r[2]) for r in self._db.execute_sql(
            "SELECT tick, node, invocation FROM schedule_fires WHERE schedule_id = ? "
            "ORDER BY tick", (schedule_id,)).fetchall()]

    def prune_fires(self, before: float) -> int:
        """Forgets fire rows older than `before` (they no longer bound any catch-up)."""
        cursor = self._db.execute_sql("DELETE FROM schedule_fires WHERE tick < ?",
                                      (round(before),))
        return int(cursor.rowcount or 0)
