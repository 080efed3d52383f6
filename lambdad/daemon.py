"""The composition root: checks the host, builds every part, starts the components in
order, serves until a signal, then stops them in reverse (see `components`)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import grpc
from grpc_health.v1 import health

from lambdad.api.interceptors import BearerAuthInterceptor
from lambdad.api.server import build_server
from lambdad.auth import KeyRing
from lambdad.build import ArtifactStore, BuildLimits, DepsCache, ImageBuilder, TarLimits
from lambdad.build.blobs import BlobStore
from lambdad.build.localize import Localizer
from lambdad.cluster.peers import Peers, observe
from lambdad.cluster.singletons import singleton_jobs
from lambdad.cluster.wiring import check_cluster, cluster_parts
from lambdad.components import (
    Database,
    Delivery,
    Functions,
    Housekeeping,
    Logs,
    Ready,
    Singletons,
)
from lambdad.config import Config
from lambdad.control import AsyncQueue, ControlPlane, Invoker
from lambdad.dburl import SQLITE
from lambdad.errors import LambdaError
from lambdad.gateway import admission
from lambdad.gateway.server import Gateway
from lambdad.host.credentials import read_api_keys, tls_credentials
from lambdad.host.engine import DockerEngine, docker_client
from lambdad.host.exits import ExitWatcher
from lambdad.host.listeners import Listeners, Serving
from lambdad.host.nofile import gateway_connection_cap
from lambdad.host.pidfile import PidFile, clear_stale_pid_file
from lambdad.host.state import claim_socket, prepare_state_dir
from lambdad.lifecycle import Component, Lifecycle, Step
from lambdad.logs import LogCapture, LogStore
from lambdad.logs.capture import Source
from lambdad.metrics import AdminServer, Metrics
from lambdad.metrics.registry import CellSample, GatewaySample, PoolSample
from lambdad.notify import Notifier
from lambdad.queue import AsyncWorker
from lambdad.queue.intake import Intake
from lambdad.runtime.docker_backend import DockerBackend
from lambdad.runtime.manager import RuntimeManager
from lambdad.runtime.pool import Instance
from lambdad.scheduler import Housekeeper
from lambdad.scheduler.runner import CronRunner, scheduled_invocation
from lambdad.store import Store

__all__ = ["Daemon", "Host", "check_host", "components",
           "install_signal_handlers"]

log = logging.getLogger("lambdad")


@dataclass(frozen=True)
class Host:
    """What the checks before the start found: nothing here needs stopping."""

    daemon_id: str
    keys: list[str]
    credentials: grpc.ServerCredentials | None
    max_connections: int
    cluster_key: str | None = None  # cluster mode's shared secret (lambdad/cluster)


def check_host(config: Config) -> Host:
    """The checks that start nothing: limits, the state folder, no live daemon on the
    socket, readable keys and TLS files. StartupError says what is wrong.

    Once the socket is claimed, a killed daemon's pid file goes before the keys and TLS
    files are read: a start that fails on them must not leave that pid for scripts to
    signal (`PidFile` removes this daemon's own at the end)."""
    max_connections = gateway_connection_cap(config)
    daemon_id = prepare_state_dir(config)
    claim_socket(config.socket)
    if config.pid_file is not None:
        clear_stale_pid_file(config.pid_file)
    return Host(daemon_id, read_api_keys(config.api_key_file), tls_credentials(config),
                max_connections, check_cluster(config))


Assemble = Callable[[Config, Host, DockerEngine], Sequence[Component]]


class Daemon:
    """Runs lambdad: `run` starts every component, serves until `request_stop`, then
    stops them in reverse.

    A failure anywhere in the start (a busy port, an engine that goes away) stops just
    the components that started, containers included, and `run` raises at once; a stop
    asked for during the start does the same and `run` returns. Every listener is bound
    before anything that needs stopping starts: a busy address fails at once.
    `connect_docker` and `assemble` are injectable so the lifecycle is unit-tested.
    """

    def __init__(self, config: Config, *,
                 connect_docker: Callable[[], docker.DockerClient] = docker_client,
                 assemble: Assemble | None = None) -> None:
        self.config = config
        self._connect_docker = connect_docker
        self._assemble: Assemble = assemble or components
        self._stop = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        self._stop.set()
        if self._starting is not None:  # a stop during the start unwinds what started
            self._starting.cancel()

    async def run(self) -> None:
        host = check_host(self.config)
        async with Lifecycle() as life:
            task = asyncio.current_task()
            self._starting = task
            try:
                await life.start(PidFile(self.config.pid_file))  # cleared now, removed last
                engine = await life.start(DockerEngine(self._connect_docker))
                for component in self._assemble(self.config, host, engine):
                    await life.start(component)
            except asyncio.CancelledError:
                if task is None or not self._stop.is_set():
                    raise
                task.uncancel()
                log.info("lambdad stopping: asked to stop while starting")
                return
            finally:
                self._starting = None
            # What start-up built (modules, the store, the routes) lives as long as the
            # daemon: kept out of the collector, a full collection under load scans only
            # what requests made (one took 28 ms at one connection: a p99 spike).
            gc.freeze()
            await self._stop.wait()
        log.info("lambdad stopped")


def components(config: Config, host: Host, engine: DockerEngine) -> list[Component]:
    """Builds every part (nothing runs, listens or starts a container yet) and returns
    them in start order; they stop in the reverse order."""
    p = build_parts(config, host, engine)
    listeners = Listeners(config, p.local, p.remote, host.credentials, p.gateway, p.admin)
    functions = Functions(p.control.load, p.runtime, p.control.prune_orphan_images)

    async def load_keys() -> None:
        p.keyring.load(await p.store.keys.all())

    cluster = cluster_parts(config, host, p, load_keys)

    def describe() -> str:
        return (f"functions={functions.loaded} database={p.store.name} "
                f"control=unix://{config.socket} "
                f"tcp={config.grpc_listen or 'off'} gateway=http://{config.gateway_listen} "
                f"api_key={'none (TCP refuses calls)' if p.keyring.empty else 'configured'}")

    return [
        # First, so its stop comes last: the channels to the other nodes close once no
        # call (a `logs -f` fanned out) can use them.
        *([Step("peer channels", stop=p.peers.close)] if p.peers is not None else []),
        listeners,                              # bound, serving none: a busy address fails here
        Database(p.store, p.control.flush_stats),
        *cluster.before_functions,              # listening before anything is loaded
        Logs(p.logs, p.capture),
        Step("api keys", load_keys),
        # Before functions, so it stops after them: their stop's graces end at each
        # container's die event (stopped first, every instance took its whole grace).
        ExitWatcher(p.backend.watch_exits, p.backend.stop_watching, p.runtime.instance_exited),
        functions,                              # routes, reconciled containers, minimums
        *cluster.after_functions,               # then other nodes' changes are applied
        Delivery(p.store.invocations, p.worker),
        # cron (with its catch-up of missed runs) and shared clean-ups: on the leader
        Singletons(cluster.leadership, singleton_jobs(
            p.store, p.cron, p.blobs, catch_up_window_s=config.catch_up_window)),
        Serving(config, listeners, p.health),   # start-up work done: now answer
        Housekeeping(p.housekeeper),
        Ready(config, p.health, p.notifier, p.status_line, describe),
    ]


@dataclass
class Parts:
    store: Store
    metrics: Metrics
    logs: LogStore
    capture: LogCapture
    backend: DockerBackend
    runtime: RuntimeManager
    keyring: KeyRing
    control: ControlPlane
    worker: AsyncWorker
    cron: CronRunner
    health: Any
    gateway: Gateway
    admin: AdminServer
    local: grpc.aio.Server
    remote: grpc.aio.Server | None
    notifier: Notifier
    housekeeper: Housekeeper
    status_line: Callable[[], str]
    blobs: BlobStore | None = None
    peers: Peers | None = None  # cluster mode: channels to the other nodes


def build_parts(config: Config, host: Host, engine: DockerEngine) -> Parts:
    client = engine.client
    state = config.state_dir
    store = Store(state / "lambda.db" if config.database == SQLITE else config.database,
                  node_id=host.daemon_id)
    # Cluster mode: every sample of this node's /metrics carries node="<node_name>".
    metrics = Metrics(node=config.node_name if store.postgres else "")
    logs = LogStore(state / "logs", max_file_bytes=config.log_file_bytes,
                    files_kept=config.log_files,
                    on_dropped=functools.partial(metrics.log_dropped, "daemon"))
    metrics.log_followers.set_function(logs.subscriber_count)
    capture = LogCapture(client.api.api_version, logs.append,
                         congested=logs.congested_for,
                         on_dropped=functools.partial(metrics.log_dropped, "runtime"),
                         encoded=logs)
    backend = DockerBackend(client, daemon_id=host.daemon_id)
    artifacts = ArtifactStore(state / "artifacts")
    artifacts.prepare()
    builder = ImageBuilder(
        client, runtime_image=config.runtime_image, spool_dir=state / "spool",
        daemon_id=host.daemon_id, wheelhouse=config.wheelhouse, artifacts=artifacts,
        limits=BuildLimits(
            timeout_s=config.build_timeout, memory_bytes=config.build_memory_bytes,
            user=config.build_user, max_image_bytes=config.build_max_image_bytes,
            min_free_disk_bytes=config.build_min_free_disk_bytes),
        cache=DepsCache(state / "build-cache", config.build_cache_bytes))
    # Cluster mode: versions deployed through other nodes are fetched or built here at
    # their first use (build/localize.py); on SQLite there is nothing to fetch.
    blobs = BlobStore(config.database, host.daemon_id) if store.postgres else None
    localizer = None if blobs is None else Localizer(
        blobs, artifacts, image_prefix=config.image_prefix, spool_dir=state / "spool",
        tar_limits=TarLimits(max_unpacked_bytes=config.max_unpacked_bytes), builder=builder,
        image_id=backend.image_id, image_stamp=backend.image_stamp,
        observe=lambda kind, seconds: metrics.artifact_fetch.labels(kind).observe(seconds))
    runtime = RuntimeManager(
        backend, instances_dir=state / "i", start_timeout=config.start_timeout,
        on_instance=instance_observer(capture, metrics), artifacts=artifacts,
        cells_dir=state / "c", cell_pool_size=config.cell_pool_size,
        runtime_image=config.runtime_image, pause_after=config.pause_after,
        freeze_window=config.freeze_window, frozen_memory=config.frozen_memory_bytes,
        localize=localizer.ensure if localizer is not None else None,
    )
    metrics.watch_pools(lambda: [
        PoolSample(name, *astuple(runtime.counts(name))) for name in runtime.routed()
    ])
    metrics.watch_cells(lambda: [
        CellSample(c.cell_class.label(), c.ready, c.starting) for c in runtime.cell_stats()
    ])
    keyring = KeyRing(host.keys, cluster_key=host.cluster_key)
    parts = build_control(config, store, builder, runtime, metrics, logs, artifacts, keyring,
                          engine.version, blobs, node=host.daemon_id)
    control = parts.control
    peers = observe(config, host, control, store)  # `lambdactl nodes`; logs fan-out
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    gateway = Gateway(
        parts.invoker, domain=config.domain, max_body_bytes=config.max_body_bytes,
        body_timeout=config.body_timeout,
        admit=http_admission(runtime, keyring), max_connections=host.max_connections,
        max_buffered_body_bytes=config.max_buffered_body_bytes,
        enqueue=lambda name, body: parts.queue.enqueue(name, body, source="http"),
    )
    metrics.watch_gateway(lambda: GatewaySample(
        connections=gateway.connections, connection_limit=gateway.max_connections,
        refused_connections=gateway.refused_connections, body_bytes=gateway.bodies.used,
        body_peak_bytes=gateway.bodies.peak, body_limit_bytes=gateway.bodies.limit,
        refused_bodies=gateway.bodies.refused))
    admin = AdminServer(metrics.render, lambda: {
        "status": "ok",
        "functions": len(runtime.routed()),
        "instances": sum(runtime.instance_count(name) for name in runtime.routed()),
    })
    local = build_server(control, health_servicer, metrics=metrics)
    remote = None
    if config.grpc_listen is not None:
        remote = build_server(
            control, health_servicer, metrics=metrics, keys=keyring,
            interceptors=[BearerAuthInterceptor(
                keyring, open_reflection=config.tcp_reflection == "open")],
        )

    def status_line() -> str:
        names = runtime.routed()
        instances = sum(runtime.instance_count(name) for name in names)
        cells = sum(c.ready for c in runtime.cell_stats())
        return f"{len(names)} function(s), {instances} instance(s), {cells} stem cell(s)"

    notifier = Notifier()
    housekeeper = housekeeping(runtime, control, store, notifier, status_line)
    return Parts(store, metrics, logs, capture, backend, runtime, keyring, control,
                 parts.worker, parts.cron, health_servicer, gateway, admin, local, remote,
                 notifier, housekeeper, status_line, blobs, peers)


# --- The control plane and the two loops it feeds: built together, in one place. ---

@dataclass
class ControlParts:
    control: ControlPlane
    invoker: Invoker  # the one invoke-and-observe path: gateway, Invoke RPC, deliveries
    queue: AsyncQueue
    worker: AsyncWorker
    cron: CronRunner


def build_control(
    config: Config, store: Store, builder: ImageBuilder, runtime: RuntimeManager,
    metrics: Metrics, logs: LogStore, artifacts: ArtifactStore, keyring: KeyRing,
    docker_version: str, blobs: BlobStore | None = None, node: str = "",
) -> ControlParts:
    """In an order without cycles: what queues an event and the worker that delivers it
    share the intake (accepted events on their way into the store, and the wake-up);
    cron queues through the queue; the facade gets every use case's parts."""
    invoker = Invoker(runtime, metrics)
    intake = Intake(store.invocations)
    queue = AsyncQueue(
        store=store, runtime=runtime, invoker=invoker, intake=intake, metrics=metrics,
        backoff_s=config.async_backoff, max_queued_events=config.max_queued_events,
        max_event_bytes=config.max_event_bytes)
    worker = AsyncWorker(store.invocations, queue.deliver, queue.retry_policy,
                         queue.delivery_limit, intake=intake,
                         capacity_for=queue.delivery_capacity)

    # (the worker's view: an ended attempt counts before its outcome is written)
    # A fire commits its (schedule, tick) row with the event, then wakes the worker.
    cron = CronRunner(
        store.schedules, functools.partial(scheduled_invocation, runtime.active_version),
        worker.status, worker.cancel, catch_up_window_s=config.catch_up_window,
        fresh_s=3 * config.node_down_after, max_queued=lambda: config.max_queued_events,
        node=node, fired=intake.wake.set,
        refused=lambda s: metrics.async_refused.labels(s.function, "schedule").inc())
    control = ControlPlane(
        store=store, builder=builder, runtime=runtime, invoker=invoker, queue=queue,
        cron=cron, keyring=keyring, spool_dir=config.state_dir / "spool",
        image_prefix=config.image_prefix, url_template=function_url_template(config),
        max_code_bytes=config.max_code_bytes,
        tar_limits=TarLimits(max_unpacked_bytes=config.max_unpacked_bytes),
        keep_versions=config.keep_versions,
        metrics=metrics,
        logs=logs,
        domain=config.domain,
        docker_version=docker_version,
        artifacts=artifacts,
        blobs=blobs,
    )
    return ControlParts(control, invoker, queue, worker, cron)

# --- end of the control plane's construction ---


def http_admission(
    runtime: RuntimeManager, keyring: KeyRing,
) -> Callable[[str, int | None, list[tuple[bytes, bytes]]],
              list[tuple[bytes, bytes]] | LambdaError]:
    """The gateway's admission check: a function's HTTP access rule and its key check;
    the headers to forward (every lambda key taken out) or the refusal."""

    def admit(function: str, number: int | None,
              headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | LambdaError:
        return admission.admit(
            function, number, headers, active=runtime.active_version(function),
            version_of=functools.partial(runtime.known_version, function),
            identify=keyring.identify)

    return admit


def instance_observer(capture: LogCapture,
                      metrics: Metrics) -> Callable[[Instance, str], None]:
    """What the runtime reports of an instance: its log capture starts, its init time.
    An instance started with the log channel is read on it once its socket answers (its
    runtime keeps what comes before); any other on Docker's stream from its start."""

    def on_instance(instance: Instance, event: str) -> None:
        source = Source(instance.version.function, instance.version.number, instance.id,
                        instance.container_id,
                        framed=instance.version.config.runtime != "docker")
        channel = instance.log_channel and source.framed  # never a Dockerfile function's
        if event == "started" and not channel:
            capture.follow(source)
        elif event == "connected" and channel:
            capture.follow_channel(source, instance.folder)
        elif event == "adopted":  # earlier lines were captured by the previous run
            if channel:  # its runtime kept what came while none was read
                capture.follow_channel(source, instance.folder, since=datetime.now(UTC))
            else:
                capture.follow(source, since=datetime.now(UTC))
        elif event == "ready":
            metrics.init_duration.labels(source.function).observe(instance.init_ms / 1000)

    return on_instance


def housekeeping(runtime: RuntimeManager, control: ControlPlane, store: Store,
                 notifier: Notifier, status_line: Callable[[], str]) -> Housekeeper:
    """The periodic jobs: scaling and reaping, stats flush and prune, systemd's status
    and watchdog. Slow jobs run as tasks of their own."""
    housekeeper = Housekeeper()
    housekeeper.every(1, runtime.housekeeping, "runtime")
    background: set[asyncio.Task[None]] = set()

    def spawn(work: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        def job() -> None:
            task = asyncio.ensure_future(work())
            background.add(task)
            task.add_done_callback(background.discard)
        return job

    housekeeper.every(10, spawn(control.flush_stats), "stats-flush")
    # (stats prune: a singleton job, cluster/singletons.py)
    if notifier.enabled:
        housekeeper.every(10, lambda: notifier.status(status_line()), "notify-status")
        if notifier.watchdog_interval_s:
            housekeeper.every(max(1, int(notifier.watchdog_interval_s)), notifier.watchdog,
                              "watchdog")
    return housekeeper


def function_url_template(config: Config) -> str:
    port = "" if config.public_port == 80 else f":{config.public_port}"
    return f"http://{{name}}.{config.domain}{port}"


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
