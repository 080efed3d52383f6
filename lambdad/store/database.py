"""Which engine the store runs on, and the little that differs between them.

`database = "sqlite"` (the default) keeps the embedded file STATE_DIR/lambda.db;
`database = "postgresql://..."` puts the same tables in a PostgreSQL database (cluster
mode, DESIGN "Many nodes"), through Peewee on psycopg 3.

The tables write their SQL once, with SQLite's `?` placeholders; on PostgreSQL the
database object rewrites them to psycopg's `%s` (outside quoted text), so a statement
that is portable SQL needs no second copy. What is not portable (the queue's index
hints, json_each, rowid) has its own PostgreSQL class (queue/pg_table.py).

A URL may carry a password: `redacted` (lambdad/dburl.py) is the only form of it that
is ever printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peewee import PostgresqlDatabase, SqliteDatabase

from lambdad.dburl import SQLITE, is_postgres, redacted, scrub

__all__ = ["CHANGES_CHANNEL", "SQLITE", "Postgres", "Sqlite", "announce", "is_postgres",
           "open_database", "redacted", "scrub"]

# libpq defaults lambdad changes unless the URL sets them: a dead server is noticed in
# seconds, not after the kernel's two hours of TCP silence.
CONNECT_DEFAULTS = {"connect_timeout": "3", "keepalives": "1", "keepalives_idle": "5",
                    "keepalives_interval": "2", "keepalives_count": "2"}


def qmark_to_format(sql: str) -> str:
    """`?` placeholders to `%s`, and literal `%` to `%%`, outside quoted text and
    identifiers: the one spelling of a statement made fit for psycopg."""
    out: list[str] = []
    quote_char = ""
    for ch in sql:
        if quote_char:
            if ch == quote_char:
                quote_char = ""
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote_char = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Sqlite(SqliteDatabase):
    """SQLite, with the same `executemany` the PostgreSQL class offers the tables."""

    engine = SQLITE

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> Any:
        db: Any = self
        return db.cursor().executemany(sql, rows)


# The channel every node LISTENs on for changes to what it routes (lambdad/cluster).
CHANGES_CHANNEL = "lambda_changes"


def announce(db: Any, kind: str, name: str = "") -> None:
    """Tells the other nodes that `kind` (`fn`, `keys`, ...) of `name` changed: a NOTIFY
    in the caller's transaction, so it is delivered only if that commits. The payload is
    a name, never data: each node reads the rows itself. Nothing on SQLite."""
    if isinstance(db, Postgres):
        payload = json.dumps({"o": db.node_id, "k": kind, "n": name}, separators=(",", ":"))
        db.execute_sql("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, payload))


class Postgres(PostgresqlDatabase):
    """PostgreSQL on psycopg 3; statements written with `?` are rewritten to `%s`."""

    engine = "postgresql"
    node_id = ""  # who announces (lambdad/cluster ignores its own announcements)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if "?" in sql:
            sql = qmark_to_format(sql)
        parent: Any = super()
        return parent.execute_sql(sql, params)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> Any:
        import peewee

        db: Any = self
        with peewee.__dict__["__exception_wrapper__"]:  # driver errors as Peewee's
            cursor = db.cursor()
            cursor.executemany(qmark_to_format(sql), rows)
        return cursor


def connect_params(url: str, application_name: str) -> dict[str, Any]:
    """libpq keywords lambdad adds to the URL's (the URL's own win)."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    params = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    if "application_name" not in given:
        params["application_name"] = application_name
    return params


def open_database(database: str | Path, node_id: str = "") -> SqliteDatabase | Postgres:
    """The Peewee database for a `database` setting: a path is a SQLite file, a
    postgresql:// URL a PostgreSQL database (not connected yet)."""
    if is_postgres(database):
        url = str(database)
        name = f"lambdad:{node_id}:data" if node_id else "lambdad:data"
        params: dict[str, Any] = connect_params(url, name)
        db = Postgres(url, **params)
        db.node_id = node_id
        return db
    return Sqlite(
        str(database),
        pragmas={"journal_mode": "wal", "foreign_keys": 1, "synchronous": "normal",
                 "busy_timeout": 5000},
    )
