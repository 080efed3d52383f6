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


def _v2_history_and_retention(db: sqlite3.Connection) -> None:
    """Versions can lose their image to retention (the row stays as history), and a
    config-only version reuses another's image; activations record who was live when."""
    db.execute("ALTER TABLE versions ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE versions ADD COLUMN source_version INTEGER")
    db.execute(
        """
        CREATE TABLE activations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            activated_at DATETIME NOT NULL,
            reason TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX activations_function ON activations(function, id)")
    # Every existing active version became active when it was created.
    db.execute(
        """
        INSERT INTO activations (function, version, activated_at, reason)
        SELECT f.name, f.active_version, v.created_at, 'deploy'
        FROM functions f JOIN versions v ON v.function = f.name AND v.number = f.active_version
        """
    )


def _v3_invocation_stats(db: sqlite3.Connection) -> None:
    """Per-minute invocation counts and duration histograms, for `lambdactl stats`."""
    db.execute(
        """
        CREATE TABLE invocation_stats (
            function TEXT NOT NULL,
            minute INTEGER NOT NULL,
            invocations INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            cold_starts INTEGER NOT NULL,
            duration_sum REAL NOT NULL,
            buckets TEXT NOT NULL,
            instances_max INTEGER NOT NULL,
            PRIMARY KEY (function, minute)
        )
        """
    )


def _v4_async_invocations(db: sqlite3.Connection) -> None:
    """The durable queue of asynchronous invocations (and their dead letters)."""
    db.execute(
        """
        CREATE TABLE invocations (
            id TEXT PRIMARY KEY NOT NULL,
            function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
            payload BLOB NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            status_code INTEGER,
            result BLOB,
            last_error TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX invocations_due ON invocations(status, next_attempt_at)")
    db.execute("CREATE INDEX invocations_function ON invocations(function, created_at)")


def _v5_schedules(db: sqlite3.Connection) -> None:
    """Cron schedules; each run enqueues an asynchronous invocation."""
    db.execute(
        """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY NOT NULL,
            function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
            cron TEXT NOT NULL,
            tz TEXT NOT NULL,
            data BLOB NOT NULL,
            overlap TEXT NOT NULL,
            created_at REAL NOT NULL,
            last_run REAL,
            last_result TEXT NOT NULL DEFAULT '',
            last_invocation TEXT NOT NULL DEFAULT ''
        )
        """
    )


def _v6_api_keys(db: sqlite3.Connection) -> None:
    """API keys for the TCP control API: salted digests only, never the secrets."""
    db.execute(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            salt TEXT NOT NULL,
            digest TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """
    )


def _v7_invocation_queue_index(db: sqlite3.Connection) -> None:
    """Each function's queued events in delivery order: the worker reads the head of every
    function's queue and the enqueue cap counts one function's events, both without
    scanning the other functions' backlogs (invocations_due orders by time only)."""
    db.execute("CREATE INDEX invocations_queue ON invocations("
               "status, function, next_attempt_at, created_at)")


def _v8_shared_blobs(db: sqlite3.Connection) -> None:
    """Cluster mode's shared artifacts (build/blobs.py): each version names the blob of its
    artifact (a standard runtime) or of its build context (a Dockerfile function), and
    the blobs themselves, content-addressed and chunked. SQLite never writes them; they
    exist so both engines have one schema."""
    db.execute("ALTER TABLE versions ADD COLUMN artifact_sha256 TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE versions ADD COLUMN context_sha256 TEXT NOT NULL DEFAULT ''")
    db.execute(
        """
        CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('artifact', 'context')),
            size INTEGER NOT NULL,
            chunks INTEGER NOT NULL,
            created_at DATETIME NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE blob_chunks (
            sha256 TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (sha256, seq)
        )
        """
    )


def _v9_cluster_nodes(db: sqlite3.Connection) -> None:
    """Cluster mode's members (lambdad/cluster) and the instances they hold. Written only on
    PostgreSQL; here too so that both engines have one schema."""
    for statement in CLUSTER_V9:
        db.execute(statement)


# The same statements on both engines (their types are portable).
CLUSTER_V9 = (
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        grpc_address TEXT NOT NULL,
        gateway_address TEXT NOT NULL,
        software_version TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('up', 'down', 'left')),
        started_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL,
        heartbeat_seq BIGINT NOT NULL DEFAULT 0,
        instances INTEGER NOT NULL DEFAULT 0,
        cells INTEGER NOT NULL DEFAULT 0,
        load INTEGER NOT NULL DEFAULT 0,
        down_at TIMESTAMP
    )
    """,
    """
    CREATE TABLE instance_leases (
        instance TEXT PRIMARY KEY NOT NULL,
        function TEXT NOT NULL,
        node TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        purpose TEXT NOT NULL DEFAULT 'demand',
        acquired_at TIMESTAMP NOT NULL
    )
    """,
    "CREATE INDEX instance_leases_function ON instance_leases(function)",
)


def _v10_queue_owners(db: sqlite3.Connection) -> None:
    """Cluster mode's competing consumers (queue/pg_table.py): the node running each
    attempt, so that only it may record its end and a dead node's attempts can be found."""
    for statement in QUEUE_V10:
        db.execute(statement)


# The same statements on both engines. invocations_running: a node's own running rows
# (recover, hand back, mark-down) and one function's running count (the delivery limit
# across the cluster), without reading the history.
QUEUE_V10 = (
    "ALTER TABLE invocations ADD COLUMN owner_node TEXT",
    "CREATE INDEX invocations_running ON invocations(function, owner_node) "
    "WHERE status = 'running'",
)


def _v11_schedule_fires(db: sqlite3.Connection) -> None:
    """One row per fired cron tick (scheduler/table.py): its key refuses a second fire of a
    tick, on one daemon and across a cluster's nodes (issue 18)."""
    for statement in SCHEDULE_FIRES:
        db.execute(statement)


SCHEDULE_FIRES = (
    """
    CREATE TABLE schedule_fires (
        schedule_id TEXT NOT NULL,
        tick BIGINT NOT NULL,
        node TEXT NOT NULL,
        invocation TEXT NOT NULL,
        fired_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (schedule_id, tick)
    )
    """,
)


MIGRATIONS: list[Migration] = [
    _v1_functions_and_versions,
    _v2_history_and_retention,
    _v3_invocation_stats,
    _v4_async_invocations,
    _v5_schedules,
    _v6_api_keys,
    _v7_invocation_queue_index,
    _v8_shared_blobs,
    _v9_cluster_nodes,
    _v10_queue_owners,
    _v11_schedule_fires,
]
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
