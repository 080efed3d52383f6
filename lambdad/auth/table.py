"""SQL for the api_keys table, run on the store's thread (through Store.keys)."""

from __future__ import annotations

from typing import Any

from lambdad.auth.keys import ApiKey
from lambdad.errors import AlreadyExists, NotFound

_COLUMNS = "id, name, role, salt, digest, created_at, revoked_at"


def announce(db: Any, kind: str) -> None:
    from lambdad.store.database import announce as notify  # lambdad.store imports this module

    notify(db, kind)


class KeyTable:
    def __init__(self, db: Any) -> None:
        self._db = db

    def insert(self, key: ApiKey) -> None:
        with self._db.atomic():
            self._insert(key)
            announce(self._db, "keys")

    def _insert(self, key: ApiKey) -> None:
        exists = self._db.execute_sql(
            "SELECT 1 FROM api_keys WHERE name = ?", (key.name,)).fetchone()
        if exists:
            raise AlreadyExists(f"an API key named {key.name!r} exists; revoke it or pick "
                                "another name")
        self._db.execute_sql(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
            (key.id, key.name, key.role, key.salt, key.digest, key.created_at, key.revoked_at))

    def all(self) -> list[ApiKey]:
        rows = self._db.execute_sql(
            f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, name_or_id: str, now: float) -> ApiKey:
        with self._db.atomic():
            key = self._revoke(name_or_id, now)
            announce(self._db, "keys")
            return key

    def _revoke(self, name_or_id: str, now: float) -> ApiKey:
        row = self._db.execute_sql(
            f"SELECT {_COLUMNS} FROM api_keys WHERE name = ? OR id = ?",
            (name_or_id, name_or_id)).fetchone()
        if row is None:
            raise NotFound(f"no API key named or with id {name_or_id!r}")
        self._db.execute_sql(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            (now, row[0]))
        key = ApiKey(*row)
        return ApiKey(key.id, key.name, key.role, key.salt, key.digest, key.created_at,
                      key.revoked_at or now)
