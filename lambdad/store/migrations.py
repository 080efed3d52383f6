"""Ordered schema migrations, tracked in PRAGMA user_version.

Migration N brings the schema from version N-1 to N. Append, never edit: a database
file written by any earlier release must migrate forward.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

Migration = Callable[[sqlite3.Connection], None]


def _v1_functions_and_versions(db: sqlite3.Connection) -> None:
    # One execute per statement: executescript would COMMIT the migration's transaction.
    db.execute(
        """
        CREATE TABLE functions (
            name TEXT PRIMARY KEY NOT NULL,
            active_version INTEGER,
            created_at DATETIME NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE versions (
            function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            image TEXT NOT NULL,
            image_id TEXT NOT NULL,
            config TEXT NOT NULL,
            code_sha256 TEXT NOT NULL,
            code_size INTEGER NOT NULL,
            created_at DATETIME NOT NULL,
            deployed_by TEXT NOT NULL DEFAULT 'local',
            PRIMARY KEY (function, number)
        )
        """
    )


MIGRATIONS: list[Migration] = [_v1_functions_and_versions]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(path: Path) -> int:
    """Brings the file at `path` to SCHEMA_VERSION; returns the version it found.

    An existing database is copied to `<name>.bak-v<old>` first, so a failed
    migration never costs data. A file from a newer release is refused.
    """
    existed = path.exists() and path.stat().st_size > 0
    db = sqlite3.connect(path, isolation_level=None)
    try:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has schema version {found}, newer than this lambdad ({SCHEMA_VERSION})"
            )
        if found == SCHEMA_VERSION:
            return found
        if existed and found > 0:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copy2(path, path.with_name(f"{path.name}.bak-v{found}"))
        for number in range(found, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[number](db)
                db.execute(f"PRAGMA user_version = {number + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return found
    finally:
        db.close()
