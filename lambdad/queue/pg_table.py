"""The invocations table on PostgreSQL: InvocationTable's methods, with the reads that are
SQLite-only (index hints, json_each, rowid, numbered placeholders) written for PostgreSQL.

Everything else is inherited: its SQL is portable and the database object turns its `?`
into `%s` (store/database.py). The partial index invocations_queue (only queued rows, by
function and delivery order) serves the same reads SQLite's full index does.

`_maybe_queued` (skip the queue's reads while this table knows nothing is queued) is
always set here: on a shared database another node may queue events this table never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lambdad.queue.model import AsyncInvocation
from lambdad.queue.store import _COLUMNS, InvocationTable, _row

_I_COLUMNS = ", ".join(f"i.{name.strip()}" for name in _COLUMNS.split(","))

# The functions with queued events, one probe of invocations_queue each (a loose index
# scan, as SQLite's): the recursive CTE `f(name)`, whose last row is NULL.
_QUEUED_FUNCTIONS_CTE = (
    "f(name) AS ("
    "SELECT (SELECT MIN(function) FROM invocations WHERE status = 'queued') "
    "UNION ALL SELECT (SELECT MIN(function) FROM invocations "
    "WHERE status = 'queued' AND function > f.name) "
    "FROM f WHERE f.name IS NOT NULL)")


class PgInvocationTable(InvocationTable):
    """Blocking calls on the store's thread, as InvocationTable's."""

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

    def queued_functions(self) -> list[str]:
        rows = self._db.execute_sql(
            f"WITH RECURSIVE {_QUEUED_FUNCTIONS_CTE} "
            "SELECT name FROM f WHERE name IS NOT NULL").fetchall()
        return [r[0] for r in rows]

    def due(self, now: float, per_function: int, skip: set[str],
            exclude: set[str], functions: Sequence[str] | None = None
            ) -> list[AsyncInvocation]:
        found: list[AsyncInvocation] = []
        for function in self.queued_functions() if functions is None else functions:
            if function in skip:
                continue
            rows = self._db.execute_sql(
                f"SELECT {_COLUMNS} FROM invocations WHERE status = 'queued' "
                "AND function = %s AND next_attempt_at <= %s "
                "ORDER BY next_attempt_at, created_at LIMIT %s",
                (function, now, per_function + len(exclude))).fetchall()
            found += [inv for inv in map(_row, rows) if inv.id not in exclude][:per_function]
        found.sort(key=lambda inv: inv.next_attempt_at)
        return found

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

    def of_function(self, function: str, status: str, limit: int) -> list[AsyncInvocation]:
        sql = f"SELECT {_COLUMNS} FROM invocations WHERE function = %s"
        params: tuple[Any, ...] = (function,)
        if status:
            sql += " AND status = %s"
            params += (status,)
        sql += " ORDER BY created_at DESC LIMIT %s"
        return [_row(r) for r in self._db.execute_sql(sql, (*params, limit)).fetchall()]
