"""Finding one row by a prefix of its id, as users type ids (`lambdactl invocation ab12`).

Shared by the invocations and schedules tables; runs on the store's thread. No LIKE: its
`_` and `%` are wildcards, and a typed prefix must match literally.
"""

from __future__ import annotations

from typing import Any

from lambdad.errors import InvalidArgument, NotFound

MIN_PREFIX = 4


def row_by_prefix(db: Any, table: str, columns: str, prefix: str, noun: str) -> Any:
    """The one row of `table` whose id starts with `prefix`; `table` and `columns` are ours."""
    if len(prefix) < MIN_PREFIX:
        raise InvalidArgument(f"give at least {MIN_PREFIX} characters of the {noun} id")
    rows = db.execute_sql(
        f"SELECT {columns} FROM {table} WHERE substr(id, 1, length(?)) = ? LIMIT 2",
        (prefix.lower(), prefix.lower())).fetchall()
    if not rows:
        raise NotFound(f"no {noun} with id {prefix!r}")
    if len(rows) > 1:
        raise InvalidArgument(f"{noun} id prefix {prefix!r} is ambiguous")
    return rows[0]
