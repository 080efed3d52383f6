"""Cluster mode's parts and where they go among the daemon's components.

On SQLite nothing of it runs: `build_cluster` returns a Cluster with no components and
a leadership that leads from the start. On PostgreSQL: `Membership` (the session,
heartbeats, leadership) starts right after the store, so announcements are listened
for before anything is loaded from it; the `ChangeApplier` starts after the functions
are loaded and routed (what arrived meanwhile waits for it, and is harmless to apply
again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdad import __version__
from lambdad.cluster.changes import ChangeApplier, Handler
from lambdad.cluster.leadership import Leadership, LocalLeadership
from lambdad.cluster.membership import Load, Membership, NodeInfo
from lambdad.config import Config
from lambdad.dburl import is_postgres
from lambdad.lifecycle import Component, Step

MIN_CLUSTER_KEY = 16  # characters


def cluster_mode(config: Config) -> bool:
    return is_postgres(config.database)


def check_cluster(config: Config) -> str | None:
    """The cluster settings' rules, before anything starts; returns the cluster key
    (None on SQLite). StartupError says what is missing."""
    from lambdad.host import StartupError

    if not cluster_mode(config):
        return None
    if config.cluster_key_file is None:
        raise StartupError(
            "a postgresql database means cluster mode: set cluster_key_file to a file "
            "holding the secret the nodes share (e.g. 32 random bytes, base64), the same "
            "on every node (docs/cluster.md)")
    key = _read_key(config.cluster_key_file)
    grpc_address(config)  # raises when other nodes could not dial this one
    return key


def _read_key(path: Path) -> str:
    from lambdad.host import StartupError

    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise StartupError(f"cannot read cluster_key_file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise StartupError(f"cluster_key_file {path} is not text") from None
    if len(key) < MIN_CLUSTER_KEY or any(c.isspace() for c in key):
        raise StartupError(f"cluster_key_file {path} must hold one secret of at least "
                           f"{MIN_CLUSTER_KEY} characters without blanks")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:  # warned, not refused: a Docker secret is mounted 0444 by default
        logging.getLogger("lambdad.cluster").warning(
            "cluster_key_file %s has mode %o: other local users can read the cluster key "
            "(it reads every function's logs through any node); chmod 600 it", path, mode)
    return key


def grpc_address(config: Config) -> str:
    """HOST:PORT other nodes dial for this node's control API."""
    from lambdad.host import StartupError

    if config.advertise_address:
        return config.advertise_address
    listen = config.grpc_listen
    if listen is None or listen.host in ("0.0.0.0", "::", ""):
        raise StartupError(
            f"grpc_listen is {'none' if listen is None else listen}, which other nodes "
            "cannot dial: set advertise_address to HOST:PORT of this node's control API")
    return str(listen)


@dataclass
class Cluster:
    leadership: Leadership
    membership: Membership | None = None
    applier: ChangeApplier | None = None
    before_functions: list[Component] = field(default_factory=list)
    after_functions: list[Component] = field(default_factory=list)


def build_cluster(
    config: Config, node_id: str, *, handlers: dict[str, Handler],
    reload: Callable[[], Awaitable[object]], load: Callable[[], Load] = Load,
) -> Cluster:
    """`handlers` apply announced changes by kind (`fn`: sync one function, `keys`:
    reload the keys); `reload` reloads everything after a reconnect."""
    if not cluster_mode(config):
        return Cluster(LocalLeadership())
    leadership = Leadership(stand_back=2 * config.node_down_after / 5)

    applier = ChangeApplier(node_id, handlers, reload)
    node = NodeInfo(node_id, config.node_name, grpc_address(config),
                    str(config.gateway_listen), __version__)
    membership = Membership(config.database, node, down_after=config.node_down_after,
                            applier=applier, leadership=leadership, load=load)

    async def start_applier() -> None:
        applier.start()

    return Cluster(
        leadership, membership, applier,
        before_functions=[membership],
        after_functions=[Step("cluster changes", start_applier, applier.stop)])


def cluster_parts(config: Config, host: Any, parts: Any,
                  load_keys: Callable[[], Awaitable[None]]) -> Cluster:
    """The daemon's cluster parts (lambdad.daemon's `Host` and `Parts`): announced
    function changes re-sync that function, key changes reload the keys (revoked ones
    end the calls they authorized), a reconnect reloads both."""
    runtime = parts.runtime

    async def reload_everything() -> None:
        await parts.control.reload_functions()
        await load_keys()

    def load() -> Load:
        names = runtime.routed()
        return Load(instances=sum(runtime.instance_count(n) for n in names),
                    cells=sum(c.ready for c in runtime.cell_stats()),
                    load=sum(runtime.counts(n).busy for n in names))

    async def keys(_name: str) -> None:
        await load_keys()

    async def slots(name: str) -> None:
        runtime.stop_idle(name)

    async def schedules(_name: str) -> None:  # the leader's runner takes them
        await parts.cron.reload()

    cluster = build_cluster(config, host.daemon_id,
                            handlers={"fn": parts.control.sync_function, "keys": keys,
                                      "slots": slots, "schedules": schedules},
                            reload=reload_everything, load=load)
    if cluster.membership is not None:
        from lambdad.cluster.locks import SessionLocks

        parts.control.locks.remote = SessionLocks(cluster.membership.session)
        queue_across_nodes(cluster.membership, host.daemon_id, parts.worker)
        slots_across_nodes(cluster.membership, host.daemon_id, parts.store, runtime)
    return cluster


def slots_across_nodes(membership: Membership, node_id: str, store: Any,
                       runtime: Any) -> None:
    """max_instances across the cluster: every start holds an instance lease (table
    instance_leases, cluster/slots_table.py); a start waiting for one announces `slots`
    of its function, and the nodes holding an idle instance of it stop one."""
    import contextlib

    from lambdad.cluster import table
    from lambdad.cluster.slots_table import TableSlots

    async def ask(function: str) -> None:
        conn = membership.session.conn
        if conn is not None:
            with contextlib.suppress(Exception):  # an ask is a hint; the wait goes on
                await conn.execute(table.ANNOUNCE,
                                   table.announcement(node_id, "slots", function))

    runtime.use_slots(TableSlots(store.slots), ask)


def queue_across_nodes(membership: Membership, node_id: str, worker: Any) -> None:
    """The async queue's part (queue/pg_table.py): another node's NOTIFY `lambda_queue`
    (events it stored and left, slots it freed, attempts requeued) wakes this node's
    worker; a node marked down has its running attempts requeued in the mark-down's
    transaction, and the others are woken to take them."""
    from lambdad.queue.pg_table import QUEUE_CHANNEL, REQUEUE_OF_NODE

    membership.session.channels += (QUEUE_CHANNEL,)

    def wake(origin: str) -> None:
        if origin != node_id:
            worker.wake()

    async def requeue(cur: Any, dead: str) -> None:
        await cur.execute(REQUEUE_OF_NODE, {"id": dead})
        if cur.rowcount:
            await cur.execute("SELECT pg_notify(%(channel)s, %(id)s)",
                              {"channel": QUEUE_CHANNEL, "id": dead})

    membership.on_notify[QUEUE_CHANNEL] = wake
    membership.releases.append(requeue)
