"""SQL of the nodes table.

Membership runs these on its session connection (psycopg, async): a heartbeat then
proves the session is alive, which is what other nodes' liveness is about.
`NodeTable` reads the table on the store's thread, for `lambdactl nodes`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lambdad.store.database import CHANGES_CHANNEL

REGISTER = """
INSERT INTO nodes (id, name, grpc_address, gateway_address, software_version, state,
                   started_at, heartbeat_at)
VALUES (%(id)s, %(name)s, %(grpc)s, %(gateway)s, %(version)s, 'up', now(), now())
ON CONFLICT (id) DO UPDATE SET name = excluded.name, grpc_address = excluded.grpc_address,
    gateway_address = excluded.gateway_address,
    software_version = excluded.software_version, state = 'up', started_at = now(),
    heartbeat_at = now(), down_at = NULL
"""

HEARTBEAT = """
UPDATE nodes SET heartbeat_at = now(), heartbeat_seq = heartbeat_seq + 1,
       instances = %(instances)s, cells = %(cells)s, load = %(load)s
 WHERE id = %(id)s RETURNING state
"""

# A node marked down while it was alive (a partition, a stall) comes back up.
REJOIN = "UPDATE nodes SET state = 'up', down_at = NULL WHERE id = %(id)s"

LIVE_SEQS = "SELECT id, heartbeat_seq FROM nodes WHERE state = 'up' AND id <> %(id)s"

# Conditional: only if nobody marked it down first and it has not beaten since.
MARK_DOWN = """
UPDATE nodes SET state = 'down', down_at = now()
 WHERE id = %(id)s AND state = 'up' AND heartbeat_seq = %(seq)s RETURNING name
"""

RELEASE_LEASES = "DELETE FROM instance_leases WHERE node = %(id)s"

ANNOUNCE = "SELECT pg_notify(%(channel)s, %(payload)s)"

# Its connections left behind (a half-open TCP keeps a backend, and its advisory locks).
TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE application_name LIKE %(pattern)s AND pid <> pg_backend_pid()
"""

LEAVE = "UPDATE nodes SET state = 'left', down_at = now() WHERE id = %(id)s"


def backends_of(node_id: str) -> str:
    """The LIKE pattern of a node's connections' application_name (lambdad:<id>:<role>)."""
    escaped = node_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"lambdad:{escaped}:%"


def announcement(origin: str, kind: str, name: str = "") -> dict[str, str]:
    import json

    return {"channel": CHANGES_CHANNEL,
            "payload": json.dumps({"o": origin, "k": kind, "n": name}, separators=(",", ":"))}


@dataclass(frozen=True)
class NodeRow:
    id: str
    name: str
    grpc_address: str
    gateway_address: str
    software_version: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_seq: int
    instances: int
    cells: int
    load: int
    down_at: datetime | None


_COLUMNS = ("id, name, grpc_address, gateway_address, software_version, state, started_at, "
            "heartbeat_at, heartbeat_seq, instances, cells, load, down_at")


class NodeTable:
    """Reads of the nodes table, on the store's thread (Store.nodes)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def all(self) -> list[NodeRow]:
        rows = self._db.execute_sql(
            f"SELECT {_COLUMNS} FROM nodes ORDER BY name, id").fetchall()
        return [NodeRow(*row) for row in rows]

    def leader(self) -> str:
        """The id of the node whose session holds the leader lock ("" if none)."""
        row = self._db.execute_sql(
            "SELECT split_part(a.application_name, ':', 2) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = 1279348034 AND l.objid = 2 AND l.granted LIMIT 1").fetchone()
        return str(row[0]) if row else ""
