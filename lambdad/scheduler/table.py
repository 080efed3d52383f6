"""SQL for the schedules table, run on the store's thread (through Store.schedules)."""

from __future__ import annotations

from typing import Any

from lambdad.idprefix import row_by_prefix
from lambdad.scheduler.cron import Schedule

_COLUMNS = ("id, function, cron, tz, data, overlap, created_at, last_run, last_result, "
            "last_invocation")


def _row(r: Any) -> Schedule:
    return Schedule(id=r[0], function=r[1], cron=r[2], tz=r[3], data=bytes(r[4]),
                    overlap=r[5], created_at=r[6], last_run=r[7], last_result=r[8],
                    last_invocation=r[9])


class ScheduleTable:
    def __init__(self, db: Any) -> None:
        self._db = db

    def insert(self, schedule: Schedule) -> None:
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
        self._db.execute_sql("DELETE FROM schedules WHERE id = ?", (schedule_id,))
