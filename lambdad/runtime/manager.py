"""The runtime manager: which instance serves a request, and what happens when one fails.

Routing state lives here in memory (function -> active version's pool of instances),
so an invocation never waits on SQLite. Docker calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lambdad.build.artifacts import ArtifactSource, ArtifactStore, link_into
from lambdad.errors import FunctionTimeout, InstanceFailed, NotFound, Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.cells import Cell, CellClass, CellPool, ClassStats, needs_own_process
from lambdad.runtime.docker_backend import (
    TASK_DIR,
    ContainerState,
    DockerBackend,
    function_environment,
    instance_name,
)
from lambdad.runtime.folder import InstanceFolder, Refused, remove_tree, start_problem
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.pool import Instance, InstancePool, StartNotNeeded
from lambdad.runtime.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("lambdad.runtime")

READY_POLL_S = 0.003  # a cold start waits on this; an openat and a scandir are cheap
# New containers for waiting requests, at once across all functions: more only make
# a 2-core engine slower, and stem cells or freed instances usually serve the queue first.
MAX_CONTAINER_STARTS = 4
RENAME_DELAY_S = 0.05
IMAGE_CHECK_S = 30.0
OWNER_FILE = "owner"  # in STATE/c/<cell>: "<function>\n<version>\n" once specialized
INSTANCE_ID = re.compile(r"[0-9a-f]{12}")  # secrets.token_hex(6): a folder name in i/ and c/
PAUSE_RETRY_S = 300  # after a failed pause, leave that instance running this long


@dataclass(frozen=True)
class PoolCounts:
    running: int
    busy: int
    starting: int
    draining: int
    queued: int


@dataclass
class StartPlan:
    """How an instance will start, decided before it starts: `cell` is a stem cell taken
    for it (with the version's `artifact`), or None for a new container."""

    cell: Cell | None
    artifact: Path | None

    @property
    def path(self) -> str:
        """"cell" or "container", as `Instance.start_path` and the Lambda-Start header say."""
        return "cell" if self.cell is not None else "container"


class RuntimeManager:
    def __init__(
        self, backend: DockerBackend, *, instances_dir: Path, start_timeout: float = 30.0,
        on_instance: Callable[[Instance, str], None] | None = None,
        artifacts: ArtifactSource | None = None, cells_dir: Path | None = None,
        cell_pool_size: int = 0, runtime_image: str = "lambda-runtime/python:3.11",
        pause_after: float = 0.0,
    ) -> None:
        self._backend = backend
        self._artifacts = artifacts
        self._cells_dir = cells_dir or instances_dir.parent / "c"
        self._runtime_image = runtime_image
        self._runtime_image_id = ""  # resolved at reconcile, re-read every IMAGE_CHECK_S
        self._image_checked_at = 0.0
        self._pause_after = pause_after
        self._container_starts = asyncio.Semaphore(MAX_CONTAINER_STARTS)
        # Told of every instance: "started" (container running), "ready" (socket
        # answers) and "adopted" (found running after a restart).
        self._on_instance = on_instance
        self._instances_dir = instances_dir
        self._start_timeout = start_timeout
        self._pools: dict[str, InstancePool] = {}  # the active version's pool
        self._pinned: dict[tuple[str, int], InstancePool] = {}  # other versions, on demand
        self._versions: dict[str, dict[int, FunctionVersion]] = {}  # every known version
        self._retired: list[InstancePool] = []
        self._background: set[asyncio.Task[None]] = set()
        self._exits: dict[str, asyncio.Event] = {}  # containers in their stop's grace
        self._closing = False
        self.cells = CellPool(
            cell_pool_size if artifacts is not None else 0,
            start=self._start_cell, destroy=self._destroy_cell, spawn=self._spawn,
        )
        # No cell starts before `reconcile` has cleared what an earlier run left in the
        # instance and cell folders: it would remove a new cell's folders with them.
        self.cells.held = True

    # Routing state

    def know(self, version: FunctionVersion) -> None:
        """Remembers a version (built, pruned, or reusing another's image) for pinned calls."""
        self._versions.setdefault(version.function, {})[version.number] = version

    def register(self, version: FunctionVersion) -> InstancePool:
        """Routes the function to `version` with no instance yet (daemon start)."""
        self.know(version)
        pool = self._pools.get(version.function)
        if pool is None or pool.version != version:
            pool = self._new_pool(version)
            self._pools[version.function] = pool
        self._update_cell_classes()
        return pool

    def _update_cell_classes(self) -> None:
        """Stem cells are kept for the classes of the routed functions that can use them."""
        if self.cells.enabled:
            self.cells.want(self._cell_class(pool.version) for pool in self._pools.values()
                            if self._artifact(pool.version) is not None)

    def _cell_owner(self, cell_id: str) -> tuple[str, int]:
        """(function, version) of a specialized cell, from its owner file; ("", 0) if generic."""
        if not INSTANCE_ID.fullmatch(cell_id):
            return "", 0
        try:
            function, number = _read_owner(self._cells_dir / cell_id / OWNER_FILE).split()
            return function, int(number)
        except (OSError, ValueError):
            return "", 0

    def _cell_class(self, version: FunctionVersion) -> CellClass:
        return CellClass.of(version.config, self._runtime_image_id)

    def _artifact(self, version: FunctionVersion) -> Path | None:
        """The version's files, when a stem cell can run them: a standard-runtime version
        built on the current runtime image, with no variable a started process ignores."""
        config = version.config
        if (self._artifacts is None or config.runtime == "docker"
                or not self._runtime_image_id or needs_own_process(config.env)):
            return None
        artifact = self._artifacts.find(version.function, version.number)
        if artifact is None or ArtifactStore.runtime_image(artifact) != self._runtime_image_id:
            return None
        return artifact

    async def _check_runtime_image(self) -> None:
        """Follows the runtime image's tag: after `make runtime-image` the cells of the old
        image go, and only versions built on the new one use cells."""
        self._image_checked_at = time.monotonic()
        current = await asyncio.to_thread(self._backend.image_id, self._runtime_image)
        if current != self._runtime_image_id:
            if self._runtime_image_id:
                log.info("runtime image changed image=%s id=%s", self._runtime_image,
                         current[:19])
            self._runtime_image_id = current
            self._update_cell_classes()

    def cell_stats(self) -> list[ClassStats]:
        return self.cells.stats()

    def _new_pool(self, version: FunctionVersion) -> InstancePool:
        return InstancePool(version, start=self.start_instance, destroy=self._destroy,
                            spawn=self._spawn)

    def routed(self) -> list[str]:
        return sorted(self._pools)

    def active_version(self, name: str) -> FunctionVersion | None:
        pool = self._pools.get(name)
        return pool.version if pool else None

    def known_version(self, name: str, number: int) -> FunctionVersion | None:
        """Version `number` of `name` as a pinned call would get it (the gateway decides
        auth by the version that serves a request, before reading its body)."""
        return self._versions.get(name, {}).get(number)

    def is_warm(self, name: str) -> bool:
        pool = self._pools.get(name)
        return pool is not None and any(not i.dead for i in pool.instances)

    def counts(self, name: str) -> PoolCounts:
        pool = self._pools.get(name)
        draining = sum(len(p.instances) for p in self._retired if p.version.function == name)
        if pool is None:
            return PoolCounts(0, 0, 0, draining, 0)
        return PoolCounts(running=len(pool.instances), busy=pool.busy, starting=pool.starting,
                          draining=draining, queued=pool.queued)

    def instance_count(self, name: str) -> int:
        counts = self.counts(name)
        return counts.running + counts.draining

    async def memory(self) -> tuple[dict[str, int], dict[CellClass, int]]:
        """Memory in use now: per function (its instances) and per stem-cell class."""
        owners: list[tuple[str | CellClass, str]] = []
        for pool in [*self._pools.values(), *self._pinned.values(), *self._retired]:
            owners += [(pool.version.function, i.container_id) for i in pool.instances
                       if not i.dead]
        owners += [(cell.cell_class, cell.container_id) for cell in self.cells.ready_cells()]
        sizes = await asyncio.gather(*(asyncio.to_thread(self._backend.memory_bytes, cid)
                                       for _, cid in owners))
        functions: dict[str, int] = {}
        classes: dict[CellClass, int] = {}
        for (owner, _), size in zip(owners, sizes, strict=True):
            if isinstance(owner, CellClass):
                classes[owner] = classes.get(owner, 0) + (size or 0)
            else:
                functions[owner] = functions.get(owner, 0) + (size or 0)
        return functions, classes

    # Lifecycle

    async def reconcile(self) -> tuple[int, int]:
        """Adopts healthy instances of routed versions; removes every other container.

        Called at start, after `register`: a daemon killed with -9 left its instances
        running, and the ones of active versions can serve at once.
        """
        adopted: set[str] = set()
        removed = 0
        for container in await asyncio.to_thread(self._backend.managed):
            if container.cell:
                function, number = await asyncio.to_thread(self._cell_owner, container.instance)
                container = replace(container, function=function, version=number)
            pool = self._pools.get(container.function)
            found = None
            if (container.running and pool is not None
                    and pool.version.number == container.version
                    and INSTANCE_ID.fullmatch(container.instance)):
                found = await self._adoptable(container.instance)
            if found is not None and pool is not None:
                folder, conn = found
                adopted_instance = Instance(
                    container.instance, pool.version, container.id, folder,
                    start_path="cell" if container.cell else "container",
                    code_dir=self._cells_dir / container.instance if container.cell else None,
                )
                adopted_instance.idle.append(conn)
                pool.add(adopted_instance)
                self._notify(adopted_instance, "adopted")
                adopted.add(container.instance)
            else:
                await asyncio.to_thread(self._backend.remove, container.id, grace=0)
                removed += 1
        # Folders of removed containers, and of a crash's cleanup containers: the same
        # fd-based removal as always, with a cleanup container for what is left.
        for name in await asyncio.to_thread(_children, self._instances_dir):
            if name not in adopted:
                await self._remove_instance_folder(name)
        self._cells_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._cells_dir, 0o711)
        for name in await asyncio.to_thread(_children, self._cells_dir):
            if name not in adopted:  # generic cells never outlive their daemon
                await self._remove_tree(self._cells_dir / name)
        self.cells.held = False
        await self._check_runtime_image()
        self.cells.refill()
        return len(adopted), removed

    async def _adoptable(
        self, instance_id: str
    ) -> tuple[InstanceFolder, UpstreamConnection] | None:
        """The folder of a running container found at start, locked and checked, with a
        connection to its socket; None when it does not answer or is refused."""
        try:
            folder = InstanceFolder.open(self._instances_dir, instance_id)
        except OSError:
            return None
        try:
            folder.lock()  # locked already, unless an older lambdad started it
            return folder, await UpstreamConnection.open(folder)
        except Refused as exc:
            log.warning('instance refused at adoption instance=%s reason="%s"', instance_id,
                        exc.reason)
        except OSError:
            pass
        folder.close()
        return None

    def plan_start(self, version: FunctionVersion) -> StartPlan:
        """Decides now how `start_instance(version, plan=...)` will start: with a ready stem
        cell (taken from the pool at once) or a new container. A deploy says which."""
        artifact = self._artifact(version)
        cell = self.cells.take(self._cell_class(version)) if artifact is not None else None
        return StartPlan(cell, artifact)

    def abandon(self, plan: StartPlan) -> None:
        """A plan that was not started (the deploy ended first): its cell is stopped."""
        cell, plan.cell = plan.cell, None
        if cell is not None:
            self._spawn(self._destroy_cell(cell))

    async def start_instance(
        self, version: FunctionVersion, wanted: Callable[[], bool] | None = None,
        *, plan: StartPlan | None = None,
    ) -> Instance:
        """An instance of `version`, ready to serve: a specialized stem cell when one is
        ready, else a new container. `wanted` lets a queued start give up (StartNotNeeded)
        once the requests it was for have been served by others. With a `plan`, the path
        it chose is the one taken."""
        if plan is not None:
            cell, plan.cell = plan.cell, None
            if cell is not None:
                assert plan.artifact is not None  # plan_start takes a cell only with one
                return await self._specialize(cell, version, plan.artifact)
            async with self._container_starts:
                return await self._start_container(version)
        artifact = self._artifact(version)
        if artifact is not None:
            cell = self.cells.take(self._cell_class(version))
            if cell is not None:
                return await self._specialize(cell, version, artifact)
        async with self._container_starts:
            if artifact is not None:
                cell = self.cells.take(self._cell_class(version))
                if cell is not None:
                    return await self._specialize(cell, version, artifact)
            if wanted is not None and not wanted():
                raise StartNotNeeded
            return await self._start_container(version)

    async def _start_container(self, version: FunctionVersion) -> Instance:
        """Starts a container of the version's image; ready once its socket answers in its
        locked folder and, for a standard runtime, its handler loaded.

        A standard runtime starts as a stem cell does (a cell's clean environment; the
        function's comes with POST /init) and loads the handler at POST /init, so no
        function code runs before the folder is locked; a Dockerfile function's code runs from the
        start, and what it puts in the folder meanwhile is bounded.
        """
        instance_id = secrets.token_hex(6)
        folder = InstanceFolder.create(self._instances_dir, instance_id)
        standard = version.config.runtime != "docker"
        started = time.monotonic()
        try:
            container_id = await asyncio.to_thread(
                functools.partial(self._backend.start, version, instance_id, folder.path,
                                  init_later=standard))
        except BaseException:
            await self._remove_folder(folder)
            raise
        instance = Instance(instance_id, version, container_id, folder)
        self._notify(instance, "started")
        try:
            conn: UpstreamConnection | None = await self._wait_socket(
                folder, container_id, f"instance of {version.function} v{version.number}",
                version.config.memory_mb,
            )
            if standard:
                conn = await self._load(instance, conn)
        except BaseException:
            instance.end_reason = instance.end_reason or "failed to start"
            await self._destroy(instance, grace=0)
            raise
        if conn is not None:
            instance.idle.append(conn)
        instance.init_ms = (time.monotonic() - started) * 1000
        self._notify(instance, "ready")
        log.info("instance started function=%s version=%d instance=%s init_ms=%.0f",
                 version.function, version.number, instance_id, instance.init_ms)
        return instance

    # Stem cells

    async def _start_cell(self, cell_class: CellClass) -> Cell:
        cell_id = secrets.token_hex(6)
        code_dir = self._cells_dir / cell_id
        folder = InstanceFolder.create(self._instances_dir, cell_id)
        try:
            for code in (code_dir, code_dir / "task", code_dir / "deps"):
                code.mkdir(mode=0o755, parents=True)
                os.chmod(code, 0o755)  # readable by the function's user, writable by us only
            container_id = await asyncio.to_thread(
                self._backend.start_cell, cell_class, cell_id, folder.path, code_dir,
                cell_class.image or self._runtime_image,
            )
        except BaseException:
            await self._remove_folder(folder)
            await self._remove_tree(code_dir)
            raise
        cell = Cell(cell_id, cell_class, container_id, folder, code_dir)
        try:
            cell.conn = await self._wait_socket(
                folder, container_id, f"stem cell {cell_class.label()}", cell_class.memory_mb,
            )
        except BaseException:
            await self._destroy_cell(cell)
            raise
        return cell

    async def _destroy_cell(self, cell: Cell) -> None:
        if cell.conn is not None:
            cell.conn.close()
        try:
            await asyncio.to_thread(self._backend.remove, cell.container_id, grace=0)
        finally:  # a failed removal is retried by the next start's reconcile
            await self._remove_folder(cell.folder)
            await self._remove_tree(cell.code_dir)

    async def _specialize(self, cell: Cell, version: FunctionVersion, artifact: Path) -> Instance:
        """Turns a generic cell into an instance of `version`, for good: its code goes in
        read-only, the runtime loads it (POST /init), and the cell never serves another."""
        started = time.monotonic()
        instance = Instance(cell.id, version, cell.container_id, cell.folder,
                            start_path="cell", code_dir=cell.code_dir)
        conn, cell.conn = cell.conn, None
        try:
            wanted = CellClass.of(version.config, cell.cell_class.image)
            if cell.cell_class != wanted:
                await asyncio.to_thread(self._backend.update_limits, cell.container_id, wanted)
            await asyncio.to_thread(link_into, artifact, cell.code_dir)
            self._notify(instance, "started")
            conn = await self._load(instance, conn)
            # Whose it is, once its code is loaded: a restart adopts it by this, never a
            # cell that would answer NotInitialized. (Outside the folders the container
            # mounts.)
            await asyncio.to_thread(_write_owner, cell.code_dir / OWNER_FILE, version)
        except BaseException:
            if conn is not None:
                conn.close()
            instance.end_reason = "failed to initialize"
            await self._destroy(instance, grace=0)
            raise
        if conn is not None:
            instance.idle.append(conn)
        instance.init_ms = (time.monotonic() - started) * 1000
        self._notify(instance, "ready")
        # Named after its function for `docker ps` (labels cannot change), a moment later so
        # the Docker call's thread does not compete with the first request for the GIL.
        asyncio.get_running_loop().call_later(
            RENAME_DELAY_S, lambda: self._spawn(asyncio.to_thread(
                self._backend.rename, cell.container_id,
                instance_name(version.function, version.number, cell.id))))
        log.info("instance specialized function=%s version=%d instance=%s init_ms=%.1f "
                 "cell_class=%s", version.function, version.number, instance.id,
                 instance.init_ms, cell.cell_class.label())
        return instance

    def _notify(self, instance: Instance, event: str) -> None:
        if self._on_instance is not None:
            try:
                self._on_instance(instance, event)
            except Exception:
                log.exception("instance %s hook failed", event)

    async def _load(self, instance: Instance,
                    conn: UpstreamConnection | None) -> UpstreamConnection | None:
        """POST /init: the runtime imports the version's handler with its environment. One
        way for both cold paths (a stem cell, a standard-runtime container), so their init
        errors, timeouts and INIT_REPORT lines are the same. Returns the connection when it
        can be reused; closes it on failure."""
        version = instance.version
        name = f"{version.function} v{version.number}"
        try:
            if conn is None or not conn.is_fresh:
                if conn is not None:
                    conn.close()
                conn = await UpstreamConnection.open(instance.folder)
        except (OSError, Refused) as exc:
            raise InstanceFailed(f"instance of {name} stopped answering on its socket before "
                                 f"loading its code ({exc})") from None
        init = json.dumps({"handler": version.config.handler, "task_root": TASK_DIR,
                           "env": function_environment(version)}).encode()
        try:
            try:
                async with asyncio.timeout(self._start_timeout):
                    status, _ = await conn.request(
                        b"POST", b"/init",
                        [(b"host", b"cell"), (b"content-type", b"application/json")], init)
                    reply = b"".join([chunk async for chunk in conn.body()])
            except TimeoutError:
                raise Unavailable(f"{name} did not finish loading its code within "
                                  f"{self._start_timeout:.0f} s") from None
            except UpstreamError as exc:
                state = await self._settled_state(instance)
                logs = "" if state.running else await asyncio.to_thread(
                    self._backend.logs_tail, instance.container_id)
                raise InstanceFailed(
                    f"instance of {name} {state.describe(version.config.memory_mb)} while "
                    f"loading its code ({exc})" + (f":\n{logs}" if logs else "")) from None
            if status != 200:
                raise InstanceFailed(f"{name} failed to initialize: {_init_error(reply)}")
        except BaseException:
            conn.close()
            raise
        if conn.recycle():
            return conn
        conn.close()
        return None

    async def _wait_socket(
        self, folder: InstanceFolder, container_id: str, what: str, memory_mb: int
    ) -> UpstreamConnection:
        """A connection to a starting container's socket, once it answers, with its folder
        locked first; until the socket appears, what the folder holds is bounded. A folder
        refused on the way is sealed at once (the instance is then removed, killed)."""
        deadline = time.monotonic() + self._start_timeout
        next_state_check = time.monotonic() + 0.25
        while True:
            try:
                if not folder.locked:
                    try:
                        os.close(folder.open_socket())
                    except OSError:  # no socket yet
                        problem = start_problem(folder.usage())
                        if problem is not None:
                            raise Refused(problem) from None
                    else:
                        folder.lock()
                if folder.locked:
                    with contextlib.suppress(OSError):  # bound, not listening yet
                        return await UpstreamConnection.open(folder)
            except Refused as exc:
                folder.seal()
                log.warning('instance refused instance=%s what="%s" reason="%s"',
                            folder.path.name, what, exc.reason)
                raise InstanceFailed(f"{what} was refused: {exc.reason}") from None
            now = time.monotonic()
            if now >= next_state_check:
                state = await asyncio.to_thread(self._backend.state, container_id)
                if not state.running:
                    logs = await asyncio.to_thread(self._backend.logs_tail, container_id)
                    raise InstanceFailed(
                        f"{what} {state.describe(memory_mb)} during start"
                        + (f":\n{logs}" if logs else "")
                    )
                next_state_check = now + 0.25
            if now >= deadline:
                raise Unavailable(
                    f"{what} did not open its socket within {self._start_timeout:.0f} s"
                )
            await asyncio.sleep(READY_POLL_S)

    def has_warm_pinned(self, version: FunctionVersion) -> bool:
        pinned = self._pinned.get((version.function, version.number))
        return pinned is not None and any(not i.dead for i in pinned.instances)

    def activate(self, version: FunctionVersion, instance: Instance | None) -> None:
        """Switches new requests to `version`; old instances drain, then stop."""
        name = version.function
        self.know(version)
        pool = self._new_pool(version)
        pinned = self._pinned.pop((name, version.number), None)
        if pinned is not None:
            pinned.transfer_to(pool)
        if instance is not None:
            instance.owner = pool
            pool.add(instance)
        old = self._pools.get(name)
        self._pools[name] = pool
        if old is not None:
            old.retire(pool)
            if not old.drained:
                self._retired.append(old)
        pool.ensure_minimum()
        self._update_cell_classes()

    async def remove_instance(self, instance: Instance) -> None:
        """Stops an instance that was started but never routed (a failed deploy)."""
        await self._destroy(instance)

    async def remove_function(self, name: str) -> int:
        """Stops every instance of the function at once, busy or not."""
        self._versions.pop(name, None)
        pools = [p for p in self._retired if p.version.function == name]
        self._retired = [p for p in self._retired if p.version.function != name]
        for key in [key for key in self._pinned if key[0] == name]:
            pools.append(self._pinned.pop(key))
        current = self._pools.pop(name, None)
        if current is not None:
            pools.append(current)
        self._update_cell_classes()
        instances = [i for pool in pools for i in pool.close("was deleted")]
        results = await asyncio.gather(*(self._destroy(i) for i in instances),
                                       return_exceptions=True)
        for failure in (r for r in results if isinstance(r, BaseException)):
            log.warning("could not remove an instance of %s: %s", name, failure)
        return len(instances)

    def ensure_minimums(self) -> None:
        for pool in self._pools.values():
            pool.ensure_minimum()

    def housekeeping(self) -> None:
        """Periodic: scale idle instances down, pause idle Dockerfile instances, restore
        minimums, refill the stem cells, forget drained pools."""
        now = time.monotonic()
        for pool in [*self._pools.values(), *self._pinned.values()]:
            reaped = pool.reap_idle()
            if reaped:
                log.info("scaled down function=%s version=%d idle_instances_stopped=%d",
                         pool.version.function, pool.version.number, reaped)
            pool.ensure_minimum()
            if self._pause_after > 0 and pool.version.config.runtime == "docker":
                for instance in pool.instances:
                    if (not instance.paused and not instance.dead and instance.in_flight == 0
                            and not instance.transition.locked()
                            and now - instance.last_used >= self._pause_after
                            and now >= instance.no_pause_until):
                        self._spawn(self._pause(instance))
        if not self._closing:
            self.cells.refill()
            if self.cells.enabled and now - self._image_checked_at >= IMAGE_CHECK_S:
                self._image_checked_at = now
                self._spawn(self._check_runtime_image())
        self._retired = [p for p in self._retired if not p.drained]
        for key, pool in list(self._pinned.items()):
            if pool.idle_and_empty:
                del self._pinned[key]

    def instance_exited(self, container_id: str) -> None:
        """Docker reported a container of ours died: take it out of its pool now."""
        exited = self._exits.get(container_id)
        if exited is not None:  # a stop's grace ends
            exited.set()
        cell = self.cells.lost(container_id)
        if cell is not None:
            log.warning("stem cell exited cell=%s class=%s", cell.id, cell.cell_class.label())
            self._spawn(self._destroy_cell(cell))
            self.cells.refill()
            return
        for pool in [*self._pools.values(), *self._pinned.values(), *self._retired]:
            for instance in pool.instances:
                if instance.container_id == container_id and not instance.dead:
                    self._spawn(self._discard_exited(pool, instance))
                    return

    async def _discard_exited(self, pool: InstancePool, instance: Instance) -> None:
        state = await self._settled_state(instance)
        reason = state.describe(instance.version.config.memory_mb)
        if pool.discard(instance, reason):
            log.warning("instance exited function=%s version=%d instance=%s reason=%s",
                        instance.version.function, instance.version.number, instance.id, reason)

    async def shutdown(self) -> None:
        """Stops every instance (a restarted daemon starts them again, cold)."""
        self._closing = True
        pools = [*self._pools.values(), *self._pinned.values(), *self._retired]
        instances = [i for pool in pools for i in pool.close("is stopping with the daemon")]
        await asyncio.gather(*(self._destroy(i) for i in instances),
                             *(self._destroy_cell(c) for c in self.cells.close()),
                             return_exceptions=True)
        await self.drain_background()

    # Invocation

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        name = request.function
        pool = self._pools.get(name)
        if pool is None:
            raise NotFound(f"no function named {name!r}")
        if request.version is not None and request.version != pool.version.number:
            pool = self._pinned_pool(name, request.version)
        has_host = any(key.lower() == b"host" for key, _ in request.headers)
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            instance, cold = await pool.acquire(pool.version.config.queue_timeout_s)
            owner: InstancePool = instance.owner
            version = instance.version
            timeout = version.config.timeout_s
            start = instance.start_path if cold else "warm"
            if instance.paused or instance.transition.locked():
                try:
                    if await self._unpause(instance):
                        start = "unpaused"
                except BaseException:
                    owner.release(instance)
                    raise
            try:
                conn, reused = await self._connection(instance)
            except Refused as exc:
                owner.release(instance)
                reason = f"was refused: {exc.reason}"
                log.warning('instance refused function=%s version=%d instance=%s reason="%s"',
                            name, version.number, instance.id, exc.reason)
                owner.discard(instance, reason)
                raise InstanceFailed(f"the instance of {name!r} {reason}") from None
            except BaseException:
                owner.release(instance)
                raise
            if conn is None:
                owner.release(instance)
                owner.discard(instance, "stopped answering on its socket")
                continue
            headers = [
                *([] if has_host else [(b"host", f"{name}.lambda".encode())]),
                *request.headers,
                (b"lambda-request-id", request.request_id.encode()),
                (b"lambda-deadline-ms", str(int((time.time() + timeout) * 1000)).encode()),
                (b"lambda-invocation-type", request.invocation_type.encode()),
                *([] if start == "warm" else [(b"lambda-start", start.encode())]),
            ]
            sent_at = loop.time()
            deadline = sent_at + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    status, response_headers = await conn.request(
                        request.method, request.target, headers, request.body
                    )
            except TimeoutError:
                self._release(instance, conn)
                self._timed_out(owner, instance, timeout)
                raise FunctionTimeout(
                    f"function {name!r} did not respond within its timeout of {timeout} s"
                ) from None
            except UpstreamError as exc:
                self._release(instance, conn)
                state = await self._settled_state(instance)
                if state.running and reused and not instance.dead and attempt < 2:
                    continue  # a stale keep-alive connection; the instance itself is fine
                detail = instance.end_reason or state.describe(version.config.memory_mb)
                if state.running and not instance.end_reason:
                    detail = f"broke the HTTP exchange ({exc})"
                owner.discard(instance, detail)
                raise InstanceFailed(
                    f"the instance of {name!r} {detail} while handling the request"
                ) from None
            except BaseException:
                self._release(instance, conn)
                raise
            return InvocationResponse(
                status=status,
                headers=response_headers,
                version=version.number,
                cold_start=start in ("cell", "container"),
                start=start,
                body=self._body(owner, instance, conn, deadline),
                release=_once(functools.partial(self._release, instance, conn)),
                function_ms=(loop.time() - sent_at) * 1000,
                init_ms=instance.init_ms if start in ("cell", "container") else 0.0,
            )
        raise Unavailable(f"no instance of {name!r} could take the request")

    def _pinned_pool(self, name: str, number: int) -> InstancePool:
        """The pool of a version that is not the active one; instances start on demand
        and always scale to zero."""
        pool = self._pinned.get((name, number))
        if pool is not None:
            return pool
        version = self._versions.get(name, {}).get(number)
        if version is None:
            raise NotFound(f"function {name!r} has no version {number}")
        if version.pruned:
            raise NotFound(
                f"version {number} of {name!r} was pruned: its image was removed by the "
                "retention policy"
            )
        scaling = replace(version.config.scaling, min_instances=0)
        pinned = replace(version, config=replace(version.config, scaling=scaling))
        pool = self._new_pool(pinned)
        self._pinned[(name, number)] = pool
        return pool

    def mark_pruned(self, version: FunctionVersion) -> None:
        self.know(replace(version, pruned=True))
        pinned = self._pinned.pop((version.function, version.number), None)
        if pinned is not None:
            pinned.retire(None)
            if not pinned.drained:
                self._retired.append(pinned)

    def _timed_out(self, pool: InstancePool, instance: Instance, timeout: int) -> None:
        instance.end_reason = (
            f"was stopped because a request to it passed the function's timeout of {timeout} s"
        )
        pool.discard(instance, instance.end_reason)

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
        self, pool: InstancePool, instance: Instance, conn: UpstreamConnection, deadline: float
    ) -> AsyncIterator[bytes]:
        name = instance.version.function
        timeout = instance.version.config.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in conn.body():
                    yield chunk
        except TimeoutError:
            self._timed_out(pool, instance, timeout)
            raise FunctionTimeout(
                f"function {name!r} did not finish its response within {timeout} s"
            ) from None
        except UpstreamError as exc:
            pool.discard(instance, f"failed mid-response ({exc})")
            raise InstanceFailed(f"the instance of {name!r} failed mid-response: {exc}") from None

    async def _connection(
        self, instance: Instance
    ) -> tuple[UpstreamConnection | None, bool]:
        """An idle connection, or a new one (None if the socket does not answer); Refused
        when the folder no longer holds the function's own socket."""
        if instance.idle:
            return instance.idle.pop(), True
        try:
            return await UpstreamConnection.open(instance.folder), False
        except OSError:
            return None, False

    def _release(self, instance: Instance, conn: UpstreamConnection) -> None:
        if conn.recycle() and not instance.dead:
            instance.idle.append(conn)
        else:
            conn.close()
        owner: InstancePool = instance.owner
        owner.release(instance)

    async def _pause(self, instance: Instance) -> None:
        """Freezes an idle instance (cgroup freezer): no CPU, memory kept, ~ms to thaw."""
        async with instance.transition:
            if instance.paused or instance.dead or instance.in_flight > 0:
                return
            instance.paused = True
            try:
                await asyncio.to_thread(self._backend.pause, instance.container_id)
            except Exception as exc:
                instance.paused = False
                instance.no_pause_until = time.monotonic() + PAUSE_RETRY_S  # e.g. no freezer
                log.warning("pause failed instance=%s retry_in_s=%d error=%s", instance.id,
                            PAUSE_RETRY_S, exc)
                return
        log.debug("instance paused function=%s instance=%s", instance.version.function,
                  instance.id)

    async def _unpause(self, instance: Instance) -> bool:
        """Thaws a paused instance before a request uses it; True if it was paused."""
        async with instance.transition:
            if not instance.paused:
                return False
            try:
                await asyncio.to_thread(self._backend.unpause, instance.container_id)
            except Exception as exc:
                # Unpaused behind our back (docker unpause by hand) is fine; anything
                # else and the instance goes, so no request waits on it again.
                if not await asyncio.to_thread(self._backend.is_running_unpaused,
                                               instance.container_id):
                    owner: InstancePool = instance.owner
                    owner.discard(instance, f"could not be unpaused ({exc})")
                    raise Unavailable(f"could not unpause an instance: {exc}") from None
            instance.paused = False
            return True

    async def _destroy(self, instance: Instance, grace: float = 1) -> None:
        instance.dead = True
        for conn in instance.idle:
            conn.close()
        instance.idle.clear()
        try:
            if instance.paused:  # a frozen process cannot take the stop signal
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._backend.unpause, instance.container_id)
            await self._stop(instance.container_id, grace)
        finally:  # a failed removal is retried by the next start's reconcile
            await self._remove_folder(instance.folder)
            if instance.code_dir is not None:
                await self._remove_tree(instance.code_dir)
        log.info('instance stopped function=%s version=%d instance=%s reason="%s"',
                 instance.version.function, instance.version.number, instance.id,
                 instance.end_reason or "stopped")

    async def _stop(self, container_id: str, grace: float) -> None:
        """Stops and removes a container: its stop signal (SIGTERM unless its image says
        otherwise), up to `grace` seconds to exit (Docker's die event ends the wait), then
        SIGKILL with the removal. The grace passes here on
        the event loop, not in a worker thread as `docker stop` would pass it: every Docker
        call shares a few threads, and a function that takes its whole grace to stop (its
        SIGTERM handler, see the runtime's shutdown) must not hold them, stopping its
        instances a few at a time while every other function's starts wait for a thread."""
        if grace > 0:
            exited = self._exits.setdefault(container_id, asyncio.Event())
            try:
                if await asyncio.to_thread(self._backend.terminate, container_id):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(grace):
                            await exited.wait()
            finally:
                self._exits.pop(container_id, None)
        await asyncio.to_thread(self._backend.remove, container_id, grace=0)

    async def _remove_folder(self, folder: InstanceFolder) -> None:
        folder.close()
        await self._remove_instance_folder(folder.path.name)

    async def _remove_instance_folder(self, name: str) -> None:
        """Removes STATE/i/<name> off the loop, fd-based. What lambdad's user cannot remove
        (folders a function made 0700 before the lock) goes with a cleanup container."""
        if await asyncio.to_thread(remove_tree, self._instances_dir, name):
            return
        log.info("instance folder needs a cleanup container instance=%s", name)
        try:
            await asyncio.to_thread(self._backend.clean_folder, self._instances_dir / name,
                                    name, self._runtime_image)
        except Unavailable as exc:
            log.warning("instance folder left behind instance=%s error=%s", name, exc)
            return
        if await asyncio.to_thread(remove_tree, self._instances_dir, name):
            log.info("instance folder removed by a cleanup container instance=%s", name)
        else:
            log.warning("instance folder left behind instance=%s; the next start retries", name)

    async def _remove_tree(self, path: Path) -> None:
        """A cell's code folder (hard links, thousands of files): removed off the loop."""
        if not await asyncio.to_thread(remove_tree, path.parent, path.name):
            log.warning("could not remove %s", path)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    async def drain_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _children(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _read_owner(path: Path) -> str:
    """A cell's owner file, opened without following a link and read within a bound."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, 256).decode()
    finally:
        os.close(fd)


def _write_owner(path: Path, version: FunctionVersion) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "w") as owner:
        owner.write(f"{version.function}\n{version.number}\n")


def _init_error(reply: bytes) -> str:
    """`Runtime.ImportModuleError: Unable to import module 'app': ...` from the cell's reply."""
    try:
        data = json.loads(reply)
        return f"{data['errorType']}: {data['errorMessage']}"
    except (ValueError, KeyError, TypeError):
        return reply.decode(errors="replace")[:500] or "no reply"


def _once(release: Callable[[], None]) -> Callable[[], None]:
    """The gateway and the API both release in `finally`; only the first call counts."""
    done = False

    def wrapper() -> None:
        nonlocal done
        if done:
            return
        done = True
        try:
            release()
        except Exception:
            log.exception("releasing an instance failed")

    return wrapper
