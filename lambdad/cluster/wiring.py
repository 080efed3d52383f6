"""Cluster mode's parts and where they go among the daemon's components.

On SQLite nothing of it runs: `build_cluster` returns a Cluster with no components and
a leadership that leads from the start. On PostgreSQL: `Membership` (the session,
heartbeats, leadership) starts right after the store, so announcements are listened
for before anything is loaded from it; the `ChangeApplier` starts after the functions
are loaded and routed (what arrived meanwhile waits for it, and is harmless to apply
again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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

log = logging.getLogger("lambdad.cluster")

MIN_CLUSTER_KEY = 16  # characters
REJOIN_TRIES = 10  # a rejoin's lease retake: tries, REJOIN_PAUSE apart
REJOIN_PAUSE = 0.6  # s (the store reconnects 0.5 s after a failure)


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
    end the calls they authorized), a cancelled run delivered here stops, a reconnect
    reloads both and looks for cancels it missed."""
    runtime = parts.runtime

    stop_cancelled = functools.partial(cancel_here, parts.worker,
                                       parts.store.invocations.status)

    async def reload_everything() -> None:
        await parts.control.reload_functions()
        await load_keys()
        # a `cancel` announced while this node was not listening
        for invocation_id in parts.worker.deliveries():
            await stop_cancelled(invocation_id)

    def load() -> Load:
        names = runtime.routed()
        return Load(instances=sum(runtime.instance_count(n) for n in names),
                    cells=sum(c.ready for c in runtime.cell_stats()),
                    load=sum(runtime.counts(n).busy for n in names))

    async def keys(_name: str) -> None:
        await load_keys()

    async def slots(name: str) -> None:
        # Not while this node delivers its events: the asker's start would take the
        # lease they need, and the instance would move from node to node.
        if not parts.worker.delivering_function(name):
            runtime.stop_idle(name)

    async def schedules(_name: str) -> None:  # the leader's runner takes them
        await parts.cron.reload()

    cluster = build_cluster(config, host.daemon_id,
                            handlers={"fn": parts.control.sync_function, "keys": keys,
                                      "slots": slots, "schedules": schedules,
                                      "cancel": stop_cancelled},
                            reload=reload_everything, load=load)
    if cluster.membership is not None:
        from lambdad.cluster.locks import SessionLocks

        parts.control.locks.remote = SessionLocks(cluster.membership.session)
        queue_across_nodes(cluster.membership, host.daemon_id, parts.worker)
        parts.cron.cancel_elsewhere = functools.partial(
            announce_cancel, cluster.membership, host.daemon_id)
        slots_across_nodes(cluster.membership, host.daemon_id, parts.store, runtime)
    return cluster


def slots_across_nodes(membership: Membership, node_id: str, store: Any,
                       runtime: Any) -> None:
    """max_instances across the cluster: every start holds an instance lease (table
    instance_leases, cluster/slots_table.py); a start waiting for one announces `slots`
    of its function, and the nodes holding an idle instance of it stop one (unless they
    deliver its events); on a rejoin this node leases its running instances again."""
    from lambdad.cluster import table
    from lambdad.cluster.slots_table import TableSlots

    async def ask(function: str) -> None:
        conn = membership.session.conn
        if conn is not None:
            with contextlib.suppress(Exception):  # an ask is a hint; the wait goes on
                await conn.execute(table.ANNOUNCE,
                                   table.announcement(node_id, "slots", function))

    retaking: set[asyncio.Task[None]] = set()

    async def retake() -> None:
        # The store's connection was likely terminated with the mark-down: its first call
        # fails, and the next one (after RECONNECT_PAUSE) reconnects.
        for attempt in range(REJOIN_TRIES):
            try:
                stopped = await runtime.keep_leased()
            except Exception as exc:
                if attempt == REJOIN_TRIES - 1:
                    log.warning("cluster: could not lease this node's instances again "
                                "after a rejoin: %s", exc)
                    return
                await asyncio.sleep(REJOIN_PAUSE)
                continue
            if stopped:
                log.warning("cluster: %d instance(s) stopped on rejoin: their leases were "
                            "taken by other nodes meanwhile", stopped)
            return

    async def rejoin(_conn: Any) -> None:
        # Marked down while alive (a partition), its leases were released: it takes them
        # again for its running instances, and stops those beyond max_instances. In a
        # task of its own: the heartbeat that found this node up again goes on meanwhile.
        task = asyncio.create_task(retake(), name="lease-rejoin")
        retaking.add(task)
        task.add_done_callback(retaking.discard)

    runtime.use_slots(TableSlots(store.slots), ask)
    membership.rejoins.append(rejoin)


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


async def announce_cancel(membership: Membership, node_id: str, invocation_id: str) -> None:
    """The leader cancelled a `replace` schedule's previous run (its row now says failed):
    the node delivering it, whichever it is, stops (`cancel_here`). Sent after the
    cancel's commit; lost if the session is down, and then that delivery runs on until its
    end, which is refused (the row is no longer running): the outcome stands either way."""
    from lambdad.cluster import table

    conn = membership.session.conn
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.execute(table.ANNOUNCE,
                               table.announcement(node_id, "cancel", invocation_id))


async def cancel_here(worker: Any, status_of: Callable[[str], Awaitable[str]],
                      invocation_id: str) -> None:
    """Another node announced that it cancelled `invocation_id`: if this node delivers
    it, and the row says it has ended (read here: an announcement is a hint, never the
    truth), this node's delivery stops. A row queued or running again (requeued after a
    mark-down, redriven) is left alone."""
    if not invocation_id or len(invocation_id) > 64:
        return
    if not worker.delivering(invocation_id):
        return
    status = await status_of(invocation_id)
    if status in ("queued", "running", ""):
        return
    if await worker.abandon(invocation_id):
        log.info("async invocation %s cancelled here: ended by another node (%s)",
                 invocation_id, status)
