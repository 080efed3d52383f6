"""A Docker backend in memory, for unit tests of the runtime manager.

It implements `lambdad.runtime.backend.Backend` (the surface `DockerBackend` offers the
manager). A "container" is a record plus, while it runs, a tiny HTTP/1.1 runtime served
with h11 on the instance's Unix socket (`<socket_dir>/invoke.sock`) in the test's event
loop, so the manager's real folder checks, connections and POST /init run unchanged.
No TCP at all.

The fake runtime keeps the runtime contract's shape: a standard runtime (or a stem
cell) answers 500 until POST /init loads a handler; a Dockerfile function answers at
once. A paused container answers nothing until unpaused. Every answer is JSON naming
the container, so a test sees which instance served it.

Calls come from worker threads (the manager's `asyncio.to_thread`); whatever touches
the loop is handed to it and waited for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from lambdad.errors import Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.cells import CellClass
from lambdad.runtime.docker_backend import ContainerState, ManagedContainer
from lambdad.runtime.folder import SOCKET_NAME

RUNTIME_IMAGE_ID = "sha256:" + "1" * 64


@dataclass(eq=False)
class FakeContainer:
    id: str
    function: str  # "" for a stem cell until its /init names one
    version: int
    instance: str
    socket_dir: Path
    standard: bool  # waits for POST /init before it serves
    cell: bool = False
    running: bool = True
    paused: bool = False  # frozen
    docker_paused: bool = False  # what Docker says: a direct thaw leaves it True
    exit_code: int | None = None
    initialized: bool = False
    env: dict[str, str] = field(default_factory=dict)
    limits: CellClass | None = None
    name: str = ""
    code: Path | None = None  # the artifact a container of the runtime image mounts
    image: str = ""  # what it runs: the runtime image's id, or the version's own image
    requests: list[tuple[bytes, bytes, dict[bytes, bytes]]] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    thawed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeDocker:
    """Create it inside the test's running event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._ids = itertools.count(1)
        self.containers: dict[str, FakeContainer] = {}
        self.removed: list[str] = []  # ids, in the order they went
        self.paused: list[str] = []
        self.unpaused: list[str] = []
        self.thawed: list[str] = []  # thawed through the freezer file (Backend.thaw)
        self.settled: list[str] = []
        self.renamed: dict[str, str] = {}
        self.updated: list[tuple[str, CellClass]] = []
        self.cleaned: list[str] = []
        self.image_ids: dict[str, str] = {}  # tag -> id; any other tag is the runtime image
        # Knobs a test sets.
        self.refuse: set[str] = set()  # functions whose start the engine refuses
        self.crash: set[str] = set()  # functions whose container exits before its socket
        self.init_errors: dict[str, str] = {}  # function -> errorMessage of its POST /init
        self.import_ms = 0.5  # what POST /init says the import took
        self.hold = asyncio.Event()  # invocations are answered once this is set
        self.hold.set()
        self.on_exit: Callable[[str], None] | None = None  # Docker's die event
        self.direct_thaw = False  # thaw writes the freezer file (else: the API only)
        self.unfreezable = False  # the freeze of a settle fails (a task it cannot freeze)

    # What a test looks at

    def of(self, function: str) -> list[FakeContainer]:
        """The running containers serving `function` (cells once specialized)."""
        return [c for c in self.containers.values() if c.function == function and c.running]

    def cells(self) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.cell and not c.function]

    async def leftover(self, function: str, version: int, instance_id: str, instances_dir: Path,
                       *, running: bool = True, cell: bool = False) -> FakeContainer:
        """A container an earlier run left: its folder, and its runtime serving if running
        (specialized already, so it answers as the version it was)."""
        folder = instances_dir / instance_id
        folder.mkdir(mode=0o777, parents=True)
        os.chmod(folder, 0o777)
        container = self._add(function if not cell else "", version, instance_id, folder,
                              standard=False, cell=cell)
        container.initialized = True
        container.function = function
        if running:
            await self._serve(container)
        else:
            container.running, container.exit_code = False, 0
        return container

    async def crash_now(self, container_id: str) -> None:
        """The container's process dies (as an OOM kill or a segfault would)."""
        await self._die(self.containers[container_id], 137)

    # The Backend surface

    def start(self, version: FunctionVersion, instance_id: str, socket_dir: Path, *,
              init_later: bool = False, code: Path | None = None, image: str = "") -> str:
        if version.function in self.refuse:
            raise Unavailable("could not start an instance: the engine refused")
        container = self._add(version.function, version.number, instance_id, socket_dir,
                              standard=init_later)
        container.name = f"lambda-{version.function}-v{version.number}-{instance_id}"
        container.code, container.image = code, image if code is not None else version.image
        if version.function in self.crash:
            container.running, container.exit_code = False, 1
        else:
            self._on_loop_async(self._serve(container))
        return container.id

    def start_cell(self, cell_class: CellClass, cell_id: str, socket_dir: Path,
                   code_dir: Path, image: str) -> str:
        container = self._add("", 0, cell_id, socket_dir, standard=True, cell=True)
        container.limits = cell_class
        container.name = f"lambda-cell-{cell_id}"
        self._on_loop_async(self._serve(container))
        return container.id

    def clean_folder(self, folder: Path, instance_id: str, image: str,
                     timeout: float = 60.0) -> None:
        self.cleaned.append(instance_id)

    def update_limits(self, container_id: str, limits: CellClass) -> None:
        self.updated.append((container_id, limits))
        self.containers[container_id].limits = limits

    def image_id(self, image: str) -> str:
        return self.image_ids.get(image, RUNTIME_IMAGE_ID)

    def rename(self, container_id: str, name: str) -> None:
        self.renamed[container_id] = name

    def is_running_unpaused(self, container_id: str) -> bool:
        container = self.containers.get(container_id)
        return container is not None and container.running and not container.docker_paused

    def pause(self, container_id: str) -> None:
        container = self.containers[container_id]
        self.paused.append(container_id)
        self._on_loop(lambda: self._freeze(container, True))

    def unpause(self, container_id: str) -> None:
        container = self.containers[container_id]
        if not container.paused:  # as runc says of a container thawed directly
            raise RuntimeError("OCI runtime resume failed: container not paused")
        self.unpaused.append(container_id)
        self._on_loop(lambda: self._freeze(container, False))

    def thaw(self, container_id: str, *, find: bool = True) -> bool:
        container = self.containers[container_id]
        if not self.direct_thaw or not (find or container_id in self.paused):
            return False
        self.thawed.append(container_id)
        self._on_loop(lambda: self._freeze(container, False, docker=True))
        return True

    def settle(self, container_id: str) -> None:
        container = self.containers[container_id]
        if container.paused or not container.docker_paused:
            raise RuntimeError("nothing to settle")
        if self.unfreezable:  # as the real one: thawed again, left running
            raise RuntimeError("it did not freeze within a second")
        self.settled.append(container_id)
        container.docker_paused = False

    def refreeze(self, container_id: str) -> bool:
        container = self.containers[container_id]
        if container.docker_paused and not container.paused:
            if self.unfreezable:
                return False
            container.paused = True
            container.thawed.clear()
        return True

    @staticmethod
    def _freeze(container: FakeContainer, paused: bool, docker: bool | None = None) -> None:
        container.paused = paused
        container.docker_paused = paused if docker is None else docker
        if paused:
            container.thawed.clear()
        else:
            container.thawed.set()

    def memory_bytes(self, container_id: str) -> int | None:
        container = self.containers.get(container_id)
        return 1 << 20 if container is not None and container.running else None

    def state(self, container_id: str) -> ContainerState:
        container = self.containers.get(container_id)
        if container is None:
            return ContainerState(running=False, exit_code=None, oom_killed=False,
                                  error="container is gone")
        return ContainerState(running=container.running, exit_code=container.exit_code,
                              oom_killed=False, error="")

    def logs_tail(self, container_id: str, lines: int = 20) -> str:
        container = self.containers.get(container_id)
        return "" if container is None or container.running else "Traceback: boom"

    def terminate(self, container_id: str) -> bool:
        container = self.containers.get(container_id)
        if container is None or not container.running:
            return False
        self._on_loop_async(self._die(container, 128 + 15))
        return True

    def remove(self, container_id: str, *, grace: float = 2.0) -> None:
        container = self.containers.get(container_id)
        if container is None:
            return
        if container.running:
            self._on_loop_async(self._die(container, 128 + 9))
        del self.containers[container_id]
        self.removed.append(container_id)

    def managed(self) -> list[ManagedContainer]:
        return [ManagedContainer(c.id, "" if c.cell else c.function, c.version, c.instance,
                                 c.running and not c.docker_paused, cell=c.cell,
                                 paused=c.docker_paused)
                for c in self.containers.values()]

    # The container's runtime

    def _add(self, function: str, version: int, instance: str, socket_dir: Path, *,
             standard: bool, cell: bool = False) -> FakeContainer:
        container = FakeContainer(f"c{next(self._ids):03d}", function, version, instance,
                                  socket_dir, standard, cell=cell)
        container.thawed.set()
        self.containers[container.id] = container
        return container

    async def _serve(self, container: FakeContainer) -> None:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            container.writers.add(writer)
            try:
                await self._connection(container, reader, writer)
            except (OSError, h11.ProtocolError):
                pass
            finally:
                container.writers.discard(writer)
                writer.close()

        container.server = await asyncio.start_unix_server(
            client, path=str(container.socket_dir / SOCKET_NAME))

    async def _die(self, container: FakeContainer, code: int) -> None:
        if not container.running:
            return
        container.running, container.exit_code = False, code
        container.thawed.set()
        if container.server is not None:
            container.server.close()
        for writer in list(container.writers):
            writer.close()
        if self.on_exit is not None:
            self.on_exit(container.id)

    async def _connection(self, container: FakeContainer, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            status, reply = await self._answer(container, request, body)
            data = json.dumps(reply).encode()
            writer.write(conn.send(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode())])) or b"")
            writer.write(conn.send(h11.Data(data=data)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _answer(self, container: FakeContainer, request: h11.Request,
                      body: bytes) -> tuple[int, dict[str, Any]]:
        headers = {bytes(k): bytes(v) for k, v in request.headers}
        if request.target == b"/init" and request.method == b"POST":
            init = json.loads(body)
            env: dict[str, str] = init["env"]
            function = env["AWS_LAMBDA_FUNCTION_NAME"]
            if function in self.init_errors:
                return 502, {"errorType": "Runtime.ImportModuleError",
                             "errorMessage": self.init_errors[function]}
            container.env, container.initialized = env, True
            container.function = function
            container.version = int(env["AWS_LAMBDA_FUNCTION_VERSION"])
            return 200, {"initDurationMs": self.import_ms}  # as the runtime answers
        await container.thawed.wait()
        if not container.running:
            raise OSError("the container is gone")
        if container.standard and not container.initialized:
            return 500, {"errorType": "Runtime.NotInitialized"}
        container.requests.append((request.method, request.target, headers))
        await self.hold.wait()
        return 200, {"container": container.id, "instance": container.instance,
                     "function": container.function, "version": container.version,
                     "cell": container.cell,
                     "start": headers.get(b"lambda-start", b"warm").decode()}

    def _on_loop(self, action: Callable[[], object]) -> None:
        if threading.get_ident() == self._loop_thread:
            action()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                action()
                done.set_result(None)
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def _on_loop_async(self, coro: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("the manager calls the backend from worker threads only")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)
