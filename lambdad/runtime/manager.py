"""The runtime manager: which instance serves a function, and what happens when one fails.

Routing state lives here in memory (function -> active version -> instance), so an
invocation never waits on SQLite. Docker calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdad.errors import FunctionTimeout, InstanceFailed, NotFound, Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.docker_backend import SOCKET_NAME, ContainerState, DockerBackend
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("lambdad.runtime")

READY_POLL_S = 0.02


@dataclass(eq=False)
class Instance:
    id: str
    version: FunctionVersion
    container_id: str
    socket_dir: Path
    started_at: float
    idle: list[UpstreamConnection] = field(default_factory=list)
    in_flight: int = 0
    dead: bool = False
    retiring: bool = False

    @property
    def socket_path(self) -> str:
        return str(self.socket_dir / SOCKET_NAME)


class RuntimeManager:
    def __init__(
        self, backend: DockerBackend, *, instances_dir: Path, start_timeout: float = 30.0
    ) -> None:
        self._backend = backend
        self._instances_dir = instances_dir
        self._start_timeout = start_timeout
        self._active: dict[str, FunctionVersion] = {}
        self._current: dict[str, Instance] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._retiring: set[Instance] = set()
        self._background: set[asyncio.Task[None]] = set()

    # Routing state

    def register(self, version: FunctionVersion) -> None:
        """Routes the function to `version` without starting anything (daemon start)."""
        self._active[version.function] = version

    def routed(self) -> list[str]:
        return sorted(self._active)

    def active_version(self, name: str) -> FunctionVersion | None:
        return self._active.get(name)

    def is_warm(self, name: str) -> bool:
        instance = self._current.get(name)
        return instance is not None and not instance.dead

    def instance_count(self, name: str) -> int:
        count = sum(1 for i in self._retiring if i.version.function == name)
        return count + (1 if name in self._current else 0)

    # Lifecycle

    async def reconcile(self) -> int:
        """Removes every container this daemon left behind (after a crash or kill -9)."""
        leftovers = await asyncio.to_thread(self._backend.managed)
        for container in leftovers:
            await asyncio.to_thread(self._backend.remove, container.id, grace=0)
        if self._instances_dir.exists():
            for child in self._instances_dir.iterdir():
                shutil.rmtree(child, ignore_errors=True)
        return len(leftovers)

    async def start_instance(self, version: FunctionVersion) -> Instance:
        """Starts a container for `version` and waits until its socket answers."""
        instance_id = secrets.token_hex(6)
        socket_dir = self._instances_dir / instance_id
        socket_dir.mkdir(parents=True)
        os.chmod(socket_dir, 0o777)  # the container's user (uid 10001) creates the socket here
        try:
            container_id = await asyncio.to_thread(
                self._backend.start, version, instance_id, socket_dir
            )
        except BaseException:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        instance = Instance(instance_id, version, container_id, socket_dir, time.monotonic())
        try:
            await self._wait_ready(instance)
        except BaseException:
            await self._destroy(instance)
            raise
        log.info("instance started function=%s version=%d instance=%s in %.0f ms",
                 version.function, version.number, instance_id,
                 (time.monotonic() - instance.started_at) * 1000)
        return instance

    async def _wait_ready(self, instance: Instance) -> None:
        deadline = time.monotonic() + self._start_timeout
        next_state_check = 0.0
        while True:
            if os.path.exists(instance.socket_path):
                try:
                    conn = await UpstreamConnection.open(instance.socket_path)
                except OSError:
                    pass
                else:
                    instance.idle.append(conn)
                    return
            now = time.monotonic()
            if now >= next_state_check:
                state = await asyncio.to_thread(self._backend.state, instance.container_id)
                if not state.running:
                    logs = await asyncio.to_thread(self._backend.logs_tail, instance.container_id)
                    detail = state.describe(instance.version.config.memory_mb)
                    raise InstanceFailed(
                        f"instance of {instance.version.function} v{instance.version.number} "
                        f"{detail} during start" + (f":\n{logs}" if logs else "")
                    )
                next_state_check = now + 0.25
            if now >= deadline:
                raise Unavailable(
                    f"instance of {instance.version.function} did not open its socket within "
                    f"{self._start_timeout:.0f} s"
                )
            await asyncio.sleep(READY_POLL_S)

    def activate(self, version: FunctionVersion, instance: Instance | None) -> None:
        """Switches new requests to `version`; the old instance drains, then stops."""
        name = version.function
        self._active[name] = version
        old = self._current.pop(name, None)
        if instance is not None:
            self._current[name] = instance
        if old is not None and old is not instance:
            self._retire(old)

    async def remove_instance(self, instance: Instance) -> None:
        """Stops an instance that was started but never routed (a failed deploy)."""
        await self._destroy(instance)

    async def warm(self, name: str) -> None:
        """Starts the function's instance now, so its first request is not a cold start."""
        await self._acquire_instance(name)

    async def remove_function(self, name: str) -> int:
        self._active.pop(name, None)
        instances = [i for i in self._retiring if i.version.function == name]
        current = self._current.pop(name, None)
        if current is not None:
            instances.append(current)
        for instance in instances:
            self._retiring.discard(instance)
            await self._destroy(instance)
        return len(instances)

    async def shutdown(self) -> None:
        instances = list(self._current.values()) + list(self._retiring)
        self._current.clear()
        self._retiring.clear()
        await asyncio.gather(*(self._destroy(i) for i in instances), return_exceptions=True)
        for task in list(self._background):
            task.cancel()

    # Invocation

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        name = request.function
        version = self._active.get(name)
        if version is None:
            raise NotFound(f"no function named {name!r}")
        if request.version is not None and request.version != version.number:
            raise NotFound(
                f"version {request.version} of {name!r} is not the active version "
                f"({version.number}); only the active version is served"
            )
        timeout = version.config.timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        deadline_ms = int((time.time() + timeout) * 1000)
        has_host = any(key.lower() == b"host" for key, _ in request.headers)
        headers = [
            *([] if has_host else [(b"host", f"{name}.lambda".encode())]),
            *request.headers,
            (b"lambda-request-id", request.request_id.encode()),
            (b"lambda-deadline-ms", str(deadline_ms).encode()),
            (b"lambda-invocation-type", request.invocation_type.encode()),
        ]
        for attempt in range(3):
            instance, cold = await self._acquire_instance(name)
            conn, reused = await self._connection(instance)
            if conn is None:
                continue  # the instance was dead before we sent anything: start another
            instance.in_flight += 1
            try:
                async with asyncio.timeout_at(deadline):
                    status, response_headers = await conn.request(
                        request.method, request.target, headers, request.body
                    )
            except TimeoutError:
                await self._release(instance, conn)
                await self._kill(instance, "timed out")
                raise FunctionTimeout(
                    f"function {name!r} did not respond within its timeout of {timeout} s"
                ) from None
            except UpstreamError as exc:
                await self._release(instance, conn)
                state = await self._settled_state(instance)
                if state.running and reused and attempt < 2:
                    continue  # a stale keep-alive connection; the instance itself is fine
                await self._kill(instance, str(exc))
                detail = state.describe(version.config.memory_mb)
                if state.running:
                    detail = f"broke the HTTP exchange ({exc})"
                raise InstanceFailed(
                    f"the instance of {name!r} {detail} while handling the request"
                ) from None
            except BaseException:
                await self._release(instance, conn)
                raise
            return InvocationResponse(
                status=status,
                headers=response_headers,
                version=instance.version.number,
                cold_start=cold,
                body=self._body(instance, conn, deadline, name, timeout),
                release=_once(functools.partial(self._release, instance, conn)),
            )
        raise Unavailable(f"no instance of {name!r} could take the request")

    async def _settled_state(self, instance: Instance) -> ContainerState:
        """The container's state once a dying process has had a moment to exit.

        A crash closes the socket a little before Docker records the exit; asking
        at once would report a running container and a vaguer error.
        """
        state = await asyncio.to_thread(self._backend.state, instance.container_id)
        for _ in range(10):
            if not state.running:
                break
            await asyncio.sleep(0.05)
            state = await asyncio.to_thread(self._backend.state, instance.container_id)
        return state

    async def _body(
        self, instance: Instance, conn: UpstreamConnection, deadline: float, name: str,
        timeout: int,
    ) -> AsyncIterator[bytes]:
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in conn.body():
                    yield chunk
        except TimeoutError:
            await self._kill(instance, "timed out")
            raise FunctionTimeout(
                f"function {name!r} did not finish its response within {timeout} s"
            ) from None
        except UpstreamError as exc:
            await self._kill(instance, str(exc))
            raise InstanceFailed(f"the instance of {name!r} failed mid-response: {exc}") from None

    async def _acquire_instance(self, name: str) -> tuple[Instance, bool]:
        """The function's live instance, starting one (a cold start) when there is none."""
        instance = self._current.get(name)
        if instance is not None and not instance.dead:
            return instance, False
        lock = self._starting.setdefault(name, asyncio.Lock())
        async with lock:
            instance = self._current.get(name)
            if instance is not None and not instance.dead:
                return instance, False
            version = self._active.get(name)
            if version is None:
                raise NotFound(f"no function named {name!r}")
            instance = await self.start_instance(version)
            if self._active.get(name) is not version:
                await self._destroy(instance)  # redeployed or deleted meanwhile
                raise Unavailable(f"function {name!r} changed while starting; retry")
            self._current[name] = instance
            return instance, True

    async def _connection(
        self, instance: Instance
    ) -> tuple[UpstreamConnection | None, bool]:
        if instance.idle:
            return instance.idle.pop(), True
        try:
            return await UpstreamConnection.open(instance.socket_path), False
        except OSError:
            await self._kill(instance, "socket refused the connection")
            return None, False

    async def _release(self, instance: Instance, conn: UpstreamConnection) -> None:
        instance.in_flight -= 1
        if conn.recycle() and not instance.dead and not instance.retiring:
            instance.idle.append(conn)
        else:
            await conn.close()
        if instance.retiring and instance.in_flight == 0:
            self._retiring.discard(instance)
            self._spawn(self._destroy(instance))

    def _retire(self, instance: Instance) -> None:
        instance.retiring = True
        if instance.in_flight == 0:
            self._spawn(self._destroy(instance))
        else:
            self._retiring.add(instance)

    async def _kill(self, instance: Instance, why: str) -> None:
        if instance.dead:
            return
        instance.dead = True
        log.warning("instance removed function=%s version=%d instance=%s reason=%s",
                    instance.version.function, instance.version.number, instance.id, why)
        if self._current.get(instance.version.function) is instance:
            del self._current[instance.version.function]
        self._spawn(self._destroy(instance))

    async def _destroy(self, instance: Instance) -> None:
        instance.dead = True
        for conn in instance.idle:
            await conn.close()
        instance.idle.clear()
        await asyncio.to_thread(self._backend.remove, instance.container_id, grace=1)
        shutil.rmtree(instance.socket_dir, ignore_errors=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _once(release: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The gateway and the API both release in `finally`; only the first call counts."""
    done = False

    async def wrapper() -> None:
        nonlocal done
        if done:
            return
        done = True
        with contextlib.suppress(Exception):
            await release()

    return wrapper
