"""The composition root: builds every part, wires them, runs until a signal, stops in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc
from grpc_health.v1 import health, health_pb2

from lambdad.api.server import BearerAuthInterceptor, build_server
from lambdad.auth import KeyRing
from lambdad.build import ArtifactStore, BuildLimits, DepsCache, ImageBuilder, TarLimits, sandbox
from lambdad.config import MAX_SOCKET_PATH, Config
from lambdad.control import AsyncQueue, ControlPlane, Invoker
from lambdad.errors import LambdaError
from lambdad.fds import FD_RESERVE, connection_cap, raise_nofile
from lambdad.gateway import admission
from lambdad.gateway.server import Gateway
from lambdad.logs import LogCapture, LogStore
from lambdad.logs.capture import Source
from lambdad.metrics import AdminServer, Metrics
from lambdad.metrics.registry import CellSample, GatewaySample, PoolSample
from lambdad.notify import Notifier
from lambdad.queue import AsyncWorker
from lambdad.runtime.docker_backend import DockerBackend
from lambdad.runtime.manager import RuntimeManager
from lambdad.runtime.pool import Instance
from lambdad.scheduler import Housekeeper
from lambdad.scheduler.runner import CronRunner
from lambdad.store import Store

log = logging.getLogger("lambdad")


class StartupError(Exception):
    """lambdad cannot start; the message says why and what to do."""


def prepare_state_dir(config: Config) -> str:
    """Creates the state folders and returns this daemon's id (stable across restarts)."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state_dir, 0o750)
    run_dir = config.socket.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o750)  # the socket's folder is its access control
    spool = config.state_dir / "spool"
    spool.mkdir(exist_ok=True)
    for leftover in spool.iterdir():  # uploads and build contexts of a killed daemon
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    sandbox.remove_leftover_workdirs(spool)  # and pip's work folders, when it ran as root
    instances = config.state_dir / "i"
    instances.mkdir(exist_ok=True)
    os.chmod(instances, 0o711)  # containers' users reach their own socket folder, list none
    longest = len(str(instances)) + len("/0123456789ab/invoke.sock")
    if longest > MAX_SOCKET_PATH or len(str(config.socket)) > MAX_SOCKET_PATH:
        raise StartupError(
            f"state folder {config.state_dir} is too deep for Unix socket paths "
            f"({MAX_SOCKET_PATH} bytes max); choose a shorter --state-dir"
        )
    id_file = config.state_dir / "daemon-id"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(8) + "\n")
    return id_file.read_text().strip()


def claim_socket(path: Path) -> None:
    """Refuses to start beside a live daemon; removes a stale socket file.

    gRPC would silently bind over an existing socket file, so two daemons could
    share one state folder; a connect test tells a live socket from a stale one.
    """
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise StartupError(f"another lambdad is already running on {path}")


PID_TEXT = re.compile(rb"[0-9]{1,10}\n?")


def read_pid_file(path: Path) -> int | None:
    """The pid a regular file at `path` holds; None if there is none. Read without following
    a link or blocking (a FIFO put there would hang lambdad) and 32 bytes at most (a link to
    /dev/zero): pid_file may be in a folder others write in, and lambdad often runs as root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 32)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if PID_TEXT.fullmatch(text) else None


def clear_stale_pid_file(path: Path) -> None:
    """Removes the pid file an earlier lambdad left (killed, it could not): this one holds
    the socket now, so that daemon is gone, and its pid may be another program's already,
    which a script would signal until this one is ready (or for good if this start fails).
    A folder or a file holding something else than a pid is refused, never removed: the
    setting names the wrong path (the database, say)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot check the pid file {path}: {exc.strerror}") from None
    if stat.S_ISDIR(found.st_mode) or (stat.S_ISREG(found.st_mode) and found.st_size > 0
                                       and read_pid_file(path) is None):
        raise StartupError(f"pid_file {path} exists and is not a pid file; remove it or set "
                           "pid_file to another path")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot remove the stale pid file {path}: {exc.strerror}") from None


def write_pid_file(path: Path) -> None:
    """This process's id, written whole (a temporary file renamed over the old one), so a
    script never reads half a number or a stale one mid-write. The temporary file gets an
    unguessable name and is created, never opened through a link."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise StartupError(f"cannot write the pid file {path}: {exc.strerror}") from None


def remove_pid_file(path: Path) -> None:
    """Removes the pid file if it still holds this process's id (never another's)."""
    if read_pid_file(path) == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


def read_api_keys(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise StartupError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise StartupError(f"--api-key-file {path} holds no key")
    return keys


def tls_credentials(config: Config) -> grpc.ServerCredentials:
    if config.tls_cert is None or config.tls_key is None:
        raise StartupError("--tls-cert and --tls-key go together")
    try:
        chain = config.tls_cert.read_bytes()
        key = config.tls_key.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the TLS certificate or key: {exc}") from None
    return grpc.ssl_server_credentials([(key, chain)])


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise StartupError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from None
    return client


def docker_engine_version(client: docker.DockerClient) -> str:
    """The engine's version for GetVersion; "" rather than a failed start if it will not say."""
    try:
        return str(client.version().get("Version", ""))
    except docker.errors.DockerException:
        return ""


def gateway_connection_cap(config: Config) -> int:
    """Raises the open-files soft limit to the hard one, then fits the gateway's
    connection cap under it: idle clients must never take the descriptors the control
    API, instances, Docker and SQLite need (see lambdad.fds)."""
    limit = raise_nofile()
    if limit.error:
        log.warning("open files: cannot raise the soft limit %d to the hard limit %d: %s",
                    limit.before, limit.hard, limit.error)
    elif limit.soft != limit.before:
        log.info("open files: soft limit raised from %d to %d (the hard limit)",
                 limit.before, limit.soft)
    cap = connection_cap(limit.soft, config.max_connections)
    if cap < config.max_connections:
        log.warning("gateway: at most %d client connections (max_connections is %d, but the "
                    "open-files limit is %d: %d are kept for the control API, instances, "
                    "Docker and SQLite, and each connection may need 2); raise LimitNOFILE",
                    cap, config.max_connections, limit.soft, FD_RESERVE)
    else:
        log.info("gateway: at most %d client connections (open-files limit %d)", cap,
                 limit.soft)
    return cap


def function_url_template(config: Config) -> str:
    port = "" if config.public_port == 80 else f":{config.public_port}"
    return f"http://{{name}}.{config.domain}{port}"


class Daemon:
    """Runs lambdad: `run` starts every part, serves until `request_stop`, then stops them.

    Each part's stop is pushed on an exit stack as soon as the part has started, so a
    failure anywhere in the start (a busy port, an engine that goes away) unwinds just
    what started, containers included, and the process exits. Every listener is bound
    before anything that needs stopping starts: a busy address fails at once.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        self._stop.set()
        if self._starting is not None:  # a stop during the start unwinds what started
            self._starting.cancel()

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            task = asyncio.current_task()
            self._starting = task
            try:
                notifier = await self._start(stack)
            except asyncio.CancelledError:
                if task is None or not self._stop.is_set():
                    raise
                task.uncancel()
                log.info("lambdad stopping: asked to stop while starting")
                return
            finally:
                self._starting = None
            await self._stop.wait()
            log.info("lambdad stopping: draining for up to %.0f s", self.config.drain_grace)
            notifier.stopping()
        log.info("lambdad stopped")

    async def _start(self, stack: contextlib.AsyncExitStack) -> Notifier:
        """Checks, builds every part, binds every listener, then starts the parts in
        order; the stack's callbacks, run in reverse, are the ordered stop."""
        config = self.config
        max_connections = gateway_connection_cap(config)
        daemon_id = prepare_state_dir(config)
        claim_socket(config.socket)
        if config.pid_file is not None:  # the last thing removed, once all else stopped
            clear_stale_pid_file(config.pid_file)
            stack.callback(remove_pid_file, config.pid_file)
        keys = read_api_keys(config.api_key_file)
        credentials = None
        if config.grpc_listen is not None and (config.tls_cert is not None
                                               or config.tls_key is not None):
            credentials = tls_credentials(config)
        client = await asyncio.to_thread(docker_client)
        stack.callback(client.close)

        # Build the parts: nothing below runs, listens or starts a container yet.
        store = Store(config.state_dir / "lambda.db")
        metrics = Metrics()
        logs = LogStore(config.state_dir / "logs", max_file_bytes=config.log_file_bytes,
                        files_kept=config.log_files)
        metrics.log_followers.set_function(logs.subscriber_count)
        capture = LogCapture(client.api.api_version, logs.append)

        def on_instance(instance: Instance, event: str) -> None:
            source = Source(instance.version.function, instance.version.number, instance.id,
                            instance.container_id,
                            framed=instance.version.config.runtime != "docker")
            if event == "started":
                capture.follow(source)
            elif event == "adopted":  # earlier lines were captured by the previous run
                capture.follow(source, since=datetime.now(UTC))
            elif event == "ready":
                metrics.init_duration.labels(source.function).observe(instance.init_ms / 1000)

        backend = DockerBackend(client, daemon_id=daemon_id)
        artifacts = ArtifactStore(config.state_dir / "artifacts")
        artifacts.prepare()
        runtime = RuntimeManager(
            backend, instances_dir=config.state_dir / "i", start_timeout=config.start_timeout,
            on_instance=on_instance, artifacts=artifacts, cells_dir=config.state_dir / "c",
            cell_pool_size=config.cell_pool_size, runtime_image=config.runtime_image,
            pause_after=config.pause_after,
        )
        metrics.watch_pools(lambda: [
            PoolSample(name, *astuple(runtime.counts(name))) for name in runtime.routed()
        ])
        metrics.watch_cells(lambda: [
            CellSample(c.cell_class.label(), c.ready, c.starting) for c in runtime.cell_stats()
        ])
        build_limits = BuildLimits(
            timeout_s=config.build_timeout, memory_bytes=config.build_memory_bytes,
            user=config.build_user, max_image_bytes=config.build_max_image_bytes,
            min_free_disk_bytes=config.build_min_free_disk_bytes)
        builder = ImageBuilder(client, runtime_image=config.runtime_image,
                               spool_dir=config.state_dir / "spool", daemon_id=daemon_id,
                               wheelhouse=config.wheelhouse, artifacts=artifacts,
                               limits=build_limits,
                               cache=DepsCache(config.state_dir / "build-cache",
                                               config.build_cache_bytes))
        # The control plane, in an order without cycles: what queues an event and the
        # worker that delivers it share `wake`; cron queues through the queue.
        keyring = KeyRing(keys)
        invoker = Invoker(runtime, metrics)  # gateway, Invoke RPC and deliveries: observed once
        wake = asyncio.Event()
        queue = AsyncQueue(
            store=store, runtime=runtime, invoker=invoker, wake=wake.set, metrics=metrics,
            backoff_s=config.async_backoff, max_queued_events=config.max_queued_events,
            max_event_bytes=config.max_event_bytes)
        worker = AsyncWorker(store.invocations, queue.deliver, queue.retry_policy,
                             queue.delivery_limit, wake=wake)

        async def invocation_status(invocation_id: str) -> str:
            status: str = await store.invocations.status(invocation_id)
            return status

        cron = CronRunner(store.schedules, queue.enqueue_scheduled, invocation_status,
                          worker.cancel, catch_up_window_s=config.catch_up_window)
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
            docker_version=await asyncio.to_thread(docker_engine_version, client),
            artifacts=artifacts,
        )
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]

        def admit(function: str, number: int | None,
                  headers: list[tuple[bytes, bytes]]) -> LambdaError | None:
            return admission.admit(
                function, number, headers, active=runtime.active_version(function),
                version_of=functools.partial(runtime.known_version, function),
                identify=keyring.identify)

        gateway = Gateway(
            invoker, domain=config.domain, max_body_bytes=config.max_body_bytes,
            body_timeout=config.body_timeout,
            admit=admit, max_connections=max_connections,
            max_buffered_body_bytes=config.max_buffered_body_bytes,
            enqueue=lambda name, body: queue.enqueue(name, body, source="http"),
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

        # Bind every listener, serving none: a busy address stops the start here, before
        # any thread, task or container exists. These closes run last, after the drain
        # below has stopped the listeners properly (stopping twice is harmless).
        servers = await bind_listeners(stack, config, control, health_servicer, metrics,
                                       keyring, credentials, gateway, admin)

        # Start the parts, each followed by its stop.
        await store.open()

        async def close_store() -> None:
            with contextlib.suppress(Exception):
                await control.flush_stats()
            await store.close()

        stack.push_async_callback(close_store)
        logs.start()
        stack.push_async_callback(logs.stop)
        stack.push_async_callback(capture.stop)
        keyring.load(await store.keys.all())
        functions = await control.load()
        stack.push_async_callback(runtime.shutdown)  # instances and stem cells
        adopted, removed = await runtime.reconcile()
        if adopted or removed:
            log.info("reconciled: adopted %d instance(s), removed %d container(s) left by an "
                     "earlier run", adopted, removed)
        await control.prune_orphan_images()
        recovered = await store.invocations.recover(time.time())
        if recovered:
            log.info("async: %d invocation(s) cut short by the last stop are queued again",
                     recovered)
        runtime.ensure_minimums()
        await watch_exits(stack, backend, runtime)
        # Delivery and cron (with its catch-up of runs missed while down) start before the
        # listeners serve: a daemon that answers health checks has done its start-up work.
        worker.start()
        stack.push_async_callback(worker.stop)
        await cron.start()
        stack.push_async_callback(cron.stop)

        async def drain() -> None:
            await health_servicer.enter_graceful_shutdown()
            await asyncio.gather(
                gateway.stop(config.drain_grace),
                *(server.stop(config.drain_grace) for server in servers),
                return_exceptions=True,
            )

        stack.push_async_callback(drain)
        await gateway.serve()
        for server in servers:
            await server.start()
        os.chmod(config.socket, 0o660)
        if config.admin_listen is not None:
            await admin.serve()
            stack.push_async_callback(admin.stop)

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
        housekeeper.every(3600, spawn(lambda: store.prune_stats(
            int(time.time() // 60) - 2 * 1440)), "stats-prune")
        notifier = Notifier()

        def status_line() -> str:
            names = runtime.routed()
            instances = sum(runtime.instance_count(name) for name in names)
            cells = sum(c.ready for c in runtime.cell_stats())
            return f"{len(names)} function(s), {instances} instance(s), {cells} stem cell(s)"

        if notifier.enabled:
            housekeeper.every(10, lambda: notifier.status(status_line()), "notify-status")
            if notifier.watchdog_interval_s:
                housekeeper.every(max(1, int(notifier.watchdog_interval_s)), notifier.watchdog,
                                  "watchdog")
        housekeeper.start()
        stack.push_async_callback(housekeeper.stop)  # first to stop: no scaling while draining

        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(
            "lambdad.api.v1.FunctionService", health_pb2.HealthCheckResponse.SERVING
        )
        if config.pid_file is not None:
            write_pid_file(config.pid_file)
        notifier.ready(status_line())
        log.info(
            "lambdad ready: functions=%d control=unix://%s tcp=%s gateway=http://%s "
            "api_key=%s pid=%d pid_file=%s", functions, config.socket,
            config.grpc_listen or "off", config.gateway_listen,
            "none (TCP refuses calls)" if keyring.empty else "configured", os.getpid(),
            config.pid_file or "none",
        )
        return notifier


async def bind_listeners(
    stack: contextlib.AsyncExitStack, config: Config, control: ControlPlane,
    health_servicer: Any, metrics: Metrics, keyring: KeyRing,
    credentials: grpc.ServerCredentials | None, gateway: Gateway, admin: AdminServer,
) -> list[grpc.aio.Server]:
    """Binds the Unix socket, the TCP control API, the gateway and the admin listener,
    serving none yet; StartupError names the address that cannot be had."""
    local = build_server(control, health_servicer, metrics=metrics)
    stack.push_async_callback(local.stop, None)
    stack.callback(_unlink, config.socket)
    try:
        bound = local.add_insecure_port(f"unix://{config.socket}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot listen for gRPC on unix://{config.socket}")
    servers = [local]
    if config.grpc_listen is not None:
        remote = build_server(
            control, health_servicer, metrics=metrics, keys=keyring,
            interceptors=[BearerAuthInterceptor(
                keyring, open_reflection=config.tcp_reflection == "open")],
        )
        stack.push_async_callback(remote.stop, None)
        address = str(config.grpc_listen)
        try:
            if credentials is not None:
                bound = remote.add_secure_port(address, credentials)
            else:
                bound = remote.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise StartupError(f"cannot listen for gRPC on {address}: the address is in use "
                               "or not available")
        servers.append(remote)
    stack.push_async_callback(gateway.stop, 0)
    try:
        await gateway.start(config.gateway_listen.host, config.gateway_listen.port,
                            serve=False)
    except OSError as exc:
        raise StartupError(
            f"cannot listen for HTTP on {config.gateway_listen}: {exc.strerror}"
        ) from None
    if config.admin_listen is not None:
        stack.push_async_callback(admin.stop)
        try:
            await admin.start(config.admin_listen.host, config.admin_listen.port, serve=False)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for the admin API on {config.admin_listen}: {exc.strerror}"
            ) from None
    return servers


async def watch_exits(
    stack: contextlib.AsyncExitStack, backend: DockerBackend, runtime: RuntimeManager
) -> None:
    """Follows Docker's die events on a thread of its own. A daemon thread: should the
    event stream not close when asked, it cannot keep the process from exiting."""
    loop = asyncio.get_running_loop()

    def on_exit(container_id: str) -> None:  # called on the watcher thread
        with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting
            loop.call_soon_threadsafe(runtime.instance_exited, container_id)

    watcher = threading.Thread(target=backend.watch_exits, args=(on_exit,),
                               name="docker-events", daemon=True)
    watcher.start()

    async def stop() -> None:
        backend.stop_watching()
        await asyncio.to_thread(watcher.join, 5)

    stack.push_async_callback(stop)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)

