"""Which engine the store runs on, and the little that differs between them.

`database = "sqlite"` (the default) keeps the embedded file STATE_DIR/lambda.db;
`database = "postgresql://..."` puts the same tables in a PostgreSQL database (cluster
mode, DESIGN "Many nodes"), through Peewee on psycopg 3.

The tables write their SQL once, with SQLite's `?` placeholders; on PostgreSQL the
database object rewrites them to psycopg's `%s` (outside quoted text), so a statement
that is portable SQL needs no second copy. What is not portable (the queue's index
hints, json_each, rowid) has its own PostgreSQL class (queue/pg_table.py).

A URL may carry a password: `redacted` is the only form of it that is ever printed.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from peewee import PostgresqlDatabase, SqliteDatabase

SQLITE = "sqlite"
_SCHEMES = ("postgresql://", "postgres://")

# libpq defaults lambdad changes unless the URL sets them: a dead server is noticed in
# seconds, not after the kernel's two hours of TCP silence.
CONNECT_DEFAULTS = {"connect_timeout": "3", "keepalives": "1", "keepalives_idle": "5",
                    "keepalives_interval": "2", "keepalives_count": "2"}


def is_postgres(database: str | Path) -> bool:
    return isinstance(database, str) and database.startswith(_SCHEMES)


def parse_setting(text: str) -> str:
    """The `database` setting: 'sqlite' or a postgresql:// URL (checked, not connected)."""
    value = text.strip()
    if value == SQLITE:
        return value
    if not is_postgres(value):
        raise ValueError("expected 'sqlite' or a postgresql://USER@HOST/DBNAME URL, got "
                         f"{redacted(value)!r}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"not a usable PostgreSQL URL ({exc}): {redacted(value)}") from None
    return value


def _password(url: str) -> str | None:
    """The password the URL carries, in its userinfo or as a `password=` parameter."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            return parts.password
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password" and value:
                return value
    return None


def redacted(url: str) -> str:
    """The URL with its password replaced by `***`: the only form logs, errors and
    --check-config show. Text that is not a URL is redacted as a whole when it might
    hold a `password=` (a libpq key=value string)."""
    if not url.startswith(_SCHEMES):
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs],
                          safe="/*", quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """`text` (a driver's message) without the URL's password, however it got there."""
    password = _password(url)
    if password:
        text = text.replace(password, "***")
        text = text.replace(quote(password, safe=""), "***")
    return text.replace(url, redacted(url))


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


class Postgres(PostgresqlDatabase):
    """PostgreSQL on psycopg 3; statements written with `?` are rewritten to `%s`."""

    engine = "postgresql"

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
        return Postgres(url, **params)
    return Sqlite(
        str(database),
        pragmas={"journal_mode": "wal", "foreign_keys": 1, "synchronous": "normal",
                 "busy_timeout": 5000},
    )
