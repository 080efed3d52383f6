"""Function locks across nodes: a session advisory lock per function on this node's
session connection (control/locks.py takes it after the node's own lock).

Keys in the two-int form: class 1279348035 and a stable int4 of the name (zlib.crc32, not
PostgreSQL's undocumented hashtext); a collision only serializes two functions."""

from __future__ import annotations

import contextlib
import zlib

from lambdad.cluster.session import Session
from lambdad.errors import DatabaseUnavailable

FUNCTION_LOCK_CLASS = 1279348035


def fkey(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31


class SessionLocks:
    def __init__(self, session: Session) -> None:
        self._session = session

    async def try_lock(self, name: str) -> bool:
        conn = self._session.conn
        if conn is None:
            raise DatabaseUnavailable(
                "this node's cluster session is reconnecting to the database; try again")
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                     (FUNCTION_LOCK_CLASS, fkey(name)))
            row = await cur.fetchone()
        except Exception as exc:
            self._session.broken(f"function lock failed: {exc}")
            raise DatabaseUnavailable(
                "this node's cluster session lost the database; try again") from None
        return bool(row and row[0])

    async def unlock(self, name: str) -> None:
        conn = self._session.conn
        if conn is None:
            return  # the session is gone, and its locks with it
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock(%s, %s)",
                               (FUNCTION_LOCK_CLASS, fkey(name)))
