"""The async facade over the database: SQLite (the default) or PostgreSQL.

Every database call runs on one dedicated thread (one connection, serialized
writes), so the event loop never blocks on disk and SQLite never sees two writers.
On PostgreSQL a lost connection fails the call with DatabaseUnavailable (the URL
redacted) and the next call reconnects (store/database.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import peewee

from lambdad.auth.table import KeyTable
from lambdad.errors import DatabaseUnavailable, NotFound
from lambdad.functions import Activation, FunctionConfig, FunctionVersion
from lambdad.metrics.stats import StatsRow
from lambdad.queue.pg_table import PgInvocationTable
from lambdad.queue.store import InvocationTable
from lambdad.scheduler.table import ScheduleTable
from lambdad.store.database import announce, is_postgres, open_database, redacted, scrub
from lambdad.store.migrations import migrate
from lambdad.store.models import ActivationRow, FunctionRow, VersionRow, database
from lambdad.store.thread import StoreThread

T = TypeVar("T")

# After a failed connection, calls fail at once for this long instead of each waiting
# for libpq's connect timeout (a reconnect is tried by the first call after it).
RECONNECT_PAUSE = 0.5


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    active: FunctionVersion | None


class Store:
    """`database`: a SQLite file's path, or a postgresql:// URL; `node_id` names this
    daemon's connections on PostgreSQL (application_name)."""

    def __init__(self, database: Path | str, node_id: str = "") -> None:
        self.database = database
        self.postgres = is_postgres(database)
        self.path: Path | None = None if self.postgres else Path(database)
        self._node_id = node_id
        self._thread = StoreThread("store")
        self._db: Any = open_database(database, node_id)
        self._retry_at = 0.0  # monotonic; see RECONNECT_PAUSE
        self._down = ""  # why the last connection failed
        # The tables other packages own, there from the start (usable once open), so the
        # parts that hold them (the AsyncWorker, the CronRunner) can be made before it opens.
        self.invocations = _Async(self, PgInvocationTable(self._db, node_id) if self.postgres
                                  else InvocationTable(self._db))
        self.schedules = _Async(self, ScheduleTable(self._db, self.invocations._table))
        self.keys = _Async(self, KeyTable(self._db))
        from lambdad.cluster.table import NodeTable  # (it imports store.database)

        self.nodes = _Async(self, NodeTable(self._db))  # cluster mode's members
        from lambdad.cluster.slots_table import SlotTable

        self.slots = _Async(self, SlotTable(self._db, node_id))  # max_instances (cluster)

    async def open(self) -> None:
        await self._run(self._open)

    @property
    def name(self) -> str:
        """The database as it may be printed: the file, or the URL without its password."""
        return redacted(str(self.database)) if self.postgres else str(self.database)

    async def close(self) -> None:
        def close() -> None:
            if self.postgres:
                self._drop_connection()
            else:
                self._db.close()

        await self._thread.call(close)
        self._thread.shutdown()

    def _open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            migrate(self.path)
        else:
            from lambdad.store.pg_migrations import pg_migrate

            url = str(self.database)
            pg_migrate(url, f"lambdad:{self._node_id}:migrate" if self._node_id
                       else "lambdad:migrate")
        database.initialize(self._db)
        self._db.connect(reuse_if_open=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self.postgres:
            return await self._thread.call(lambda: self._guarded(fn))
        return await self._thread.call(fn)

    def _guarded(self, fn: Callable[[], T]) -> T:
        """Runs `fn` on the store thread; a lost PostgreSQL connection becomes
        DatabaseUnavailable and is dropped, so the next call opens a new one. A write
        whose commit may have happened is not retried: the caller hears UNAVAILABLE."""
        if time.monotonic() < self._retry_at:
            raise DatabaseUnavailable(self._down)
        try:
            return fn()
        except Exception as exc:
            if not self._lost(exc):
                raise
            self._drop_connection()
            self._retry_at = time.monotonic() + RECONNECT_PAUSE
            reason = scrub(str(exc).strip().replace("\n", " "), str(self.database))
            self._down = (f"the database ({self.name}) is unavailable: {reason}; lambdad "
                          "reconnects on its own, try again")
            raise DatabaseUnavailable(self._down) from None

    def _lost(self, exc: BaseException) -> bool:
        import psycopg

        if not isinstance(exc, peewee.OperationalError | peewee.InterfaceError
                          | psycopg.OperationalError | psycopg.InterfaceError):
            return False
        conn = self._db._state.conn
        return bool(self._db.is_closed() or conn is None or conn.closed or conn.broken)

    def _drop_connection(self) -> None:
        conn = self._db._state.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        self._db._state.reset()

    # Reads

    async def list_functions(self) -> list[FunctionRecord]:
        return await self._run(self._list_functions)

    def _list_functions(self) -> list[FunctionRecord]:
        return [self._record(row) for row in FunctionRow.select().order_by(FunctionRow.name)]

    async def get_function(self, name: str) -> FunctionRecord:
        return await self._run(lambda: self._get_function(name))

    def _get_function(self, name: str) -> FunctionRecord:
        row = FunctionRow.get_or_none(FunctionRow.name == name)
        if row is None:
            raise NotFound(f"no function named {name!r}")
        return self._record(row)

    def _record(self, row: FunctionRow) -> FunctionRecord:
        active = None
        if row.active_version is not None:
            version = VersionRow.get_or_none(
                (VersionRow.function == row.name) & (VersionRow.number == row.active_version)
            )
            active = _version(version) if version is not None else None
        return FunctionRecord(name=row.name, active=active)

    async def versions(self, name: str) -> list[FunctionVersion]:
        def query() -> list[FunctionVersion]:
            rows = VersionRow.select().where(VersionRow.function == name).order_by(
                VersionRow.number
            )
            return [_version(row) for row in rows]

        return await self._run(query)

    async def version_images(self) -> set[str]:
        return await self._run(lambda: {
            row.image for row in VersionRow.select(VersionRow.image).where(~VersionRow.pruned)
        })

    async def next_version_number(self, name: str) -> int:
        def query() -> int:
            rows = VersionRow.select().where(VersionRow.function == name)
            return max((row.number for row in rows), default=0) + 1

        return await self._run(query)

    # Writes

    async def add_version(
        self, version: FunctionVersion, *, activate: bool, reason: str = "deploy"
    ) -> None:
        """Records a built version (and its function on first deploy) in one transaction."""

        def write() -> None:
            with self._db.atomic():
                row = FunctionRow.get_or_none(FunctionRow.name == version.function)
                if row is None:
                    row = FunctionRow.create(name=version.function, created_at=_now())
                VersionRow.create(
                    function=version.function,
                    number=version.number,
                    image=version.image,
                    image_id=version.image_id,
                    config=json.dumps(version.config.to_dict(), sort_keys=True),
                    code_sha256=version.code_sha256,
                    code_size=version.code_size,
                    created_at=version.created_at,
                    deployed_by=version.deployed_by,
                    source_version=version.source_version,
                    artifact_sha256=version.artifact_sha256,
                    context_sha256=version.context_sha256,
                )
                if activate:
                    row.active_version = version.number
                    row.save()
                    ActivationRow.create(function=version.function, version=version.number,
                                         activated_at=version.created_at, reason=reason)
                announce(self._db, "fn", version.function)

        await self._run(write)

    async def activate(self, name: str, number: int, *, reason: str) -> int | None:
        """Makes `number` the live version (a rollback); returns the one it replaces."""

        def write() -> int | None:
            with self._db.atomic():
                row = FunctionRow.get_or_none(FunctionRow.name == name)
                if row is None:
                    raise NotFound(f"no function named {name!r}")
                previous: int | None = row.active_version
                row.active_version = number
                row.save()
                ActivationRow.create(function=name, version=number, activated_at=_now(),
                                     reason=reason)
                announce(self._db, "fn", name)
                return previous

        return await self._run(write)

    async def history(self, name: str) -> list[Activation]:
        def query() -> list[Activation]:
            rows = ActivationRow.select().where(ActivationRow.function == name).order_by(
                ActivationRow._meta.primary_key)
            return [Activation(version=r.version, activated_at=_aware(r.activated_at),
                               reason=r.reason) for r in rows]

        return await self._run(query)

    async def mark_pruned(self, name: str, numbers: list[int]) -> None:
        def write() -> None:
            with self._db.atomic():
                VersionRow.update(pruned=True).where(
                    (VersionRow.function == name) & (VersionRow.number.in_(numbers))
                ).execute()
                announce(self._db, "fn", name)

        if numbers:
            await self._run(write)

    async def all_versions(self) -> dict[str, list[FunctionVersion]]:
        """Every function's versions, oldest first (loaded once at start)."""

        def query() -> dict[str, list[FunctionVersion]]:
            result: dict[str, list[FunctionVersion]] = {}
            for row in VersionRow.select().order_by(VersionRow.function, VersionRow.number):
                version = _version(row)
                result.setdefault(version.function, []).append(version)
            return result

        return await self._run(query)

    async def add_stats(self, rows: list[StatsRow]) -> None:
        """Merges per-minute rows into what is stored (they add up).

        In a cluster every node flushes its own rows of the same minutes into the shared
        table: the row is created empty if missing (a concurrent insert waits for the
        other's commit), then read FOR UPDATE, so two nodes' flushes of one minute
        serialize and both count. Sorted, so two flushes lock rows in one order."""
        lock = " FOR UPDATE" if self.postgres else ""  # SQLite: one writer at a time

        def write() -> None:
            with self._db.atomic():
                for row in sorted(rows, key=lambda r: (r.function, r.minute)):
                    self._db.execute_sql(
                        "INSERT INTO invocation_stats VALUES (?, ?, 0, 0, 0, 0, '{}', 0) "
                        "ON CONFLICT (function, minute) DO NOTHING",
                        (row.function, row.minute))
                    found = self._db.execute_sql(
                        "SELECT invocations, errors, cold_starts, duration_sum, buckets, "
                        "instances_max FROM invocation_stats WHERE function = ? AND minute = ?"
                        + lock,
                        (row.function, row.minute),
                    ).fetchone()
                    merged = StatsRow(
                        row.function, row.minute, found[0], found[1], found[2], found[3],
                        {int(k): v for k, v in json.loads(found[4]).items()}, found[5])
                    merged.merge(row)
                    self._db.execute_sql(
                        "UPDATE invocation_stats SET invocations = ?, errors = ?, "
                        "cold_starts = ?, duration_sum = ?, buckets = ?, instances_max = ? "
                        "WHERE function = ? AND minute = ?",
                        (merged.invocations, merged.errors, merged.cold_starts,
                         merged.duration_sum, json.dumps(merged.buckets),
                         merged.instances_max, merged.function, merged.minute),
                    )

        if rows:
            await self._run(write)

    async def stats_since(self, minute: int, function: str | None = None) -> list[StatsRow]:
        def query() -> list[StatsRow]:
            sql = ("SELECT function, minute, invocations, errors, cold_starts, duration_sum, "
                   "buckets, instances_max FROM invocation_stats WHERE minute > ?")
            params: tuple[object, ...] = (minute,)
            if function is not None:
                sql += " AND function = ?"
                params += (function,)
            return [
                StatsRow(r[0], r[1], r[2], r[3], r[4], r[5],
                         {int(k): v for k, v in json.loads(r[6]).items()}, r[7])
                for r in self._db.execute_sql(sql, params).fetchall()
            ]

        return await self._run(query)

    async def prune_stats(self, before_minute: int) -> None:
        await self._run(lambda: self._db.execute_sql(
            "DELETE FROM invocation_stats WHERE minute < ?", (before_minute,)))

    async def delete_function(self, name: str) -> list[FunctionVersion]:
        """Deletes the function and its versions; returns what was deleted."""

        def write() -> list[FunctionVersion]:
            with self._db.atomic():
                row = FunctionRow.get_or_none(FunctionRow.name == name)
                if row is None:
                    raise NotFound(f"no function named {name!r}")
                versions = [_version(v) for v in VersionRow.select().where(
                    VersionRow.function == name)]
                VersionRow.delete().where(VersionRow.function == name).execute()
                self._db.execute_sql("DELETE FROM invocation_stats WHERE function = ?", (name,))
                row.delete_instance()
                announce(self._db, "fn", name)
                return versions

        return await self._run(write)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: Any) -> datetime:
    """SQLite hands datetimes back as naive (or as text); they were stored in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _version(row: Any) -> FunctionVersion:
    created = _aware(row.created_at)
    return FunctionVersion(
        function=row.function_id,
        number=row.number,
        image=row.image,
        image_id=row.image_id,
        config=FunctionConfig.from_dict(json.loads(row.config)),
        code_sha256=row.code_sha256,
        code_size=row.code_size,
        created_at=created,
        deployed_by=row.deployed_by,
        pruned=bool(row.pruned),
        source_version=row.source_version,
        artifact_sha256=row.artifact_sha256 or "",
        context_sha256=row.context_sha256 or "",
    )


class _Async:
    """Runs a table object's blocking methods on the store thread: `await x.method(...)`."""

    def __init__(self, store: Store, table: Any) -> None:
        self._store = store
        self._table = table

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._table, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._store._run(lambda: method(*args, **kwargs))

        return call
