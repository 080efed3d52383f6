"""Starting instances: a new container, or a stem cell specialized for the version; and
the stem cells themselves.

Which path a start takes is decided by `plan` (a deploy announces it) or at the start
itself: a ready cell of the version's class when the version can run in one (no variable
a started process ignores; for a version an earlier lambdad built an image for, built on
the current runtime image), else a container, at most MAX_CONTAINER_STARTS at once
across all functions.

Which image: a standard-runtime version has no image of its own, so both paths run the
runtime image as it is now: a container is created from its tag (Docker resolves it at each
start), with the version's artifact mounted read-only at /var/task and /opt/lambda/deps,
and cells are kept of the tag's id (read every IMAGE_CHECK_S); after `make runtime-image`
its new instances run the new image. A Dockerfile function's container, and
one of a version an earlier lambdad built an image for, run that image.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lambdad.build.artifacts import DEPS, TASK, ArtifactSource, ArtifactStore, link_into
from lambdad.errors import Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.backend import Backend
from lambdad.runtime.cells import Cell, CellClass, CellPool, needs_own_process
from lambdad.runtime.docker_backend import instance_name
from lambdad.runtime.folder import CONTAINER_UID, InstanceFolder
from lambdad.runtime.pool import Instance, StartNotNeeded
from lambdad.runtime.readiness import Readiness
from lambdad.runtime.staging import Stages, move_into, prepare, stamp
from lambdad.runtime.stops import Stopper, finish
from lambdad.runtime.upstream import UpstreamConnection

if TYPE_CHECKING:  # cluster mode's fetch at a cold start (build/localize.py)
    from lambdad.build.localize import Localized

log = logging.getLogger("lambdad.runtime")

# New containers for waiting requests, at once across all functions: more only make
# a 2-core engine slower, and stem cells or freed instances usually serve the queue first.
MAX_CONTAINER_STARTS = 4
RENAME_DELAY_S = 0.05
# After a specialization, its artifact is linked again for the next one (runtime/staging.py)
# this much later: not while the new instance serves its first request.
STAGE_DELAY_S = 1.0
# In STATE/c/<id>: "<function>\n<version>\n" once the instance's code loaded (a specialized
# cell's, or a standard runtime's own container's, whose c/<id> holds only this file).
OWNER_FILE = "owner"

Notify = Callable[[Instance, str], None]


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


class Starter:
    def __init__(
        self, backend: Backend, stopper: Stopper, readiness: Readiness, *,
        instances_dir: Path, cells_dir: Path, artifacts: ArtifactSource | None,
        cell_pool_size: int, runtime_image: str, notify: Notify,
        spawn: Callable[[Awaitable[None]], None], socket_owner: int = CONTAINER_UID,
        localize: Callable[[FunctionVersion], Awaitable[Localized]] | None = None,
    ) -> None:
        self._backend = backend
        self._localize = localize  # cluster mode only (build/localize.py)
        self._stopper = stopper
        self._readiness = readiness
        self._instances_dir = instances_dir
        self._cells_dir = cells_dir
        self._artifacts = artifacts
        self._runtime_image = runtime_image
        self.runtime_image_id = ""  # resolved at reconcile, re-read every IMAGE_CHECK_S
        self._notify = notify
        self._spawn = spawn
        self._socket_owner = socket_owner
        self._container_starts = asyncio.Semaphore(MAX_CONTAINER_STARTS)
        self.stages = Stages(cells_dir, lambda path: spawn(stopper.remove_tree(path)))
        self.cells = CellPool(
            cell_pool_size if artifacts is not None else 0,
            start=self.start_cell, destroy=stopper.destroy_cell, spawn=spawn,
            later=lambda delay, callback: asyncio.get_running_loop().call_later(
                delay, callback),
        )

    def cell_class(self, version: FunctionVersion) -> CellClass:
        return CellClass.of(version.config, self.runtime_image_id)

    def _artifact(self, version: FunctionVersion) -> Path | None:
        """The version's files, when a stem cell can run them: a standard-runtime version
        with no variable a started process ignores, on the current runtime image (one
        with an image of its own only if that image was built on it)."""
        config = version.config
        if (self._artifacts is None or config.runtime == "docker"
                or not self.runtime_image_id or needs_own_process(config.env)):
            return None
        artifact = self._artifacts.find(version.function, version.number)
        if artifact is None or (not version.shared_image and ArtifactStore.runtime_image(
                artifact) != self.runtime_image_id):
            return None
        return artifact

    def _mounted_code(self, version: FunctionVersion) -> Path | None:
        """The artifact a new container mounts, for a version without an image of its own;
        None for one that has an image. Its folders must be lambdad's own, not links:
        dockerd resolves a bind's source on the host."""
        if not version.shared_image:
            return None
        artifact = (self._artifacts.find(version.function, version.number)
                    if self._artifacts is not None else None)
        if artifact is None or not all(_real_folder(artifact / part) for part in (TASK, DEPS)):
            raise Unavailable(f"the files of {version.function} v{version.number} are "
                              "missing; deploy it again")
        return artifact

    def cell_classes(self, versions: list[FunctionVersion]) -> list[CellClass]:
        """The classes of the versions that can run in a stem cell."""
        return [self.cell_class(v) for v in versions if self._artifact(v) is not None]

    async def check_runtime_image(self) -> bool:
        """Follows the runtime image's tag; True when its id changed (after `make
        runtime-image`: the cells of the old image go, and only versions built on the new
        one use cells)."""
        current = await asyncio.to_thread(self._backend.image_id, self._runtime_image)
        if current == self.runtime_image_id:
            return False
        if self.runtime_image_id:
            log.info("runtime image changed image=%s id=%s", self._runtime_image, current[:19])
        self.runtime_image_id = current
        return True

    def plan_start(self, version: FunctionVersion) -> StartPlan:
        """Decides now how `start_instance(version, plan=...)` will start: with a ready stem
        cell (taken from the pool at once) or a new container. A deploy says which."""
        artifact = self._artifact(version)
        cell = self.cells.take(self.cell_class(version)) if artifact is not None else None
        return StartPlan(cell, artifact)

    def abandon(self, plan: StartPlan) -> None:
        """A plan that was not started (the deploy ended first): its cell is stopped."""
        cell, plan.cell = plan.cell, None
        if cell is not None:
            self._spawn(self._stopper.destroy_cell(cell))

    async def start_instance(
        self, version: FunctionVersion, wanted: Callable[[], bool] | None = None,
        *, plan: StartPlan | None = None,
    ) -> Instance:
        """An instance of `version`, ready to serve: a specialized stem cell when one is
        ready, else a new container. `wanted` lets a queued start give up (StartNotNeeded)
        once the requests it was for have been served by others. With a `plan`, the path
        it chose is the one taken.

        In cluster mode a version this node never ran is made runnable first (its
        artifact fetched, or its image built from the stored context: build/localize.py);
        that time is the instance's `fetch_ms`, and part of its `init_ms`."""
        if self._localize is None:
            return await self._start(version, wanted, plan, "")
        local = await self._localize(version)
        instance = await self._start(version, wanted, plan, local.image)
        if local.fetch_ms:
            instance.fetch_ms = local.fetch_ms
            instance.init_ms += local.fetch_ms
        return instance

    async def _start(self, version: FunctionVersion, wanted: Callable[[], bool] | None,
                     plan: StartPlan | None, image: str) -> Instance:
        if plan is not None:
            cell, plan.cell = plan.cell, None
            if cell is not None:
                assert plan.artifact is not None  # plan_start takes a cell only with one
                return await self._specialize(cell, version, plan.artifact)
            async with self._container_starts:
                return await self._start_container(version, image)
        artifact = self._artifact(version)
        if artifact is not None:
            cell = self.cells.take(self.cell_class(version))
            if cell is not None:
                return await self._specialize(cell, version, artifact)
        async with self._container_starts:
            if artifact is not None:
                cell = self.cells.take(self.cell_class(version))
                if cell is not None:
                    return await self._specialize(cell, version, artifact)
            if wanted is not None and not wanted():
                raise StartNotNeeded
            return await self._start_container(version, image)

    async def _start_container(self, version: FunctionVersion, image: str = "") -> Instance:
        """Starts a container (of the runtime image with the version's artifact mounted,
        or of the version's own image); ready once its socket answers in its locked folder
        and, for a standard runtime, its handler loaded.

        A standard runtime starts as a stem cell does (a cell's clean environment; the
        function's comes with POST /init) and loads the handler at POST /init, so no
        function code runs before the folder is locked; a Dockerfile function's code runs from the
        start, and what it puts in the folder meanwhile is bounded. `image`: this node's
        own build of a Dockerfile function's version deployed through another node.
        """
        code = self._mounted_code(version)
        instance_id = secrets.token_hex(6)
        folder = InstanceFolder.create(self._instances_dir, instance_id, owner=self._socket_owner)
        standard = version.config.runtime != "docker"
        started = time.monotonic()
        try:
            container_id = await finish(asyncio.to_thread(  # a cancel stops it below
                functools.partial(self._backend.start,
                                  replace(version, image=image) if image else version,
                                  instance_id, folder.path,
                                  init_later=standard, code=code,
                                  image=self._runtime_image)))
        except BaseException:
            await self._stopper.remove_folder(folder)
            raise
        instance = Instance(instance_id, version, container_id, folder, log_channel=standard)
        self._notify(instance, "started")
        try:
            conn: UpstreamConnection | None = await self._readiness.wait_socket(
                folder, container_id, f"instance of {version.function} v{version.number}",
                version.config.memory_mb,
            )
            self._notify(instance, "connected")  # its socket answers: the log channel opens
            if standard:
                conn, instance.import_ms, instance.hooks_ms = await self._readiness.load(
                    version, folder, container_id, conn)
                # Loaded: a restart adopts it by this owner file, as a specialized cell,
                # never while its code is not loaded (a kill -9 before POST /init ended).
                # In STATE/c/<id>, which the container does not mount (its socket folder
                # must hold only invoke.sock); removed with the instance from here on.
                instance.code_dir = self._cells_dir / instance_id
                _mark_loaded(instance.code_dir, version)
        except BaseException as exc:
            await self._stopper.unwind(instance, exc, "failed to start")
            raise
        self._ready(instance, conn, started)
        log.info("instance started function=%s version=%d instance=%s init_ms=%.0f",
                 version.function, version.number, instance_id, instance.init_ms)
        return instance

    def _ready(self, instance: Instance, conn: UpstreamConnection | None,
               started: float) -> None:
        """Both cold paths end alike: the connection kept, the start timed, "ready" told."""
        if conn is not None:
            instance.idle.append(conn)
        instance.init_ms = (time.monotonic() - started) * 1000
        self._notify(instance, "ready")

    async def start_cell(self, cell_class: CellClass) -> Cell:
        cell_id = secrets.token_hex(6)
        code_dir = self._cells_dir / cell_id
        folder = InstanceFolder.create(self._instances_dir, cell_id, owner=self._socket_owner)
        try:
            for code in (code_dir, code_dir / "task", code_dir / "deps"):
                code.mkdir(mode=0o755, parents=True)
                os.chmod(code, 0o755)  # readable by the function's user, writable by us only
            container_id = await asyncio.to_thread(
                self._backend.start_cell, cell_class, cell_id, folder.path, code_dir,
                cell_class.image or self._runtime_image,
            )
        except BaseException:
            await self._stopper.remove_folder(folder)
            await self._stopper.remove_tree(code_dir)
            raise
        cell = Cell(cell_id, cell_class, container_id, folder, code_dir)
        try:
            cell.conn = await self._readiness.wait_socket(
                folder, container_id, f"stem cell {cell_class.label()}", cell_class.memory_mb,
            )
        except BaseException:
            await self._stopper.destroy_cell(cell)
            raise
        return cell

    async def _specialize(self, cell: Cell, version: FunctionVersion, artifact: Path) -> Instance:
        """Turns a generic cell into an instance of `version`, for good: its code goes in
        read-only, the runtime loads it (POST /init), and the cell never serves another."""
        started = time.monotonic()
        instance = Instance(cell.id, version, cell.container_id, cell.folder,
                            start_path="cell", code_dir=cell.code_dir, log_channel=True)
        conn, cell.conn = cell.conn, None
        staged = self.stages.take(artifact)
        try:
            wanted = CellClass.of(version.config, cell.cell_class.image)
            # Both must end before the import, neither needs the other: a cell of another
            # size is resized (a Docker round trip, 25-50 ms) while its code is linked in.
            steps = [asyncio.to_thread(move_into, staged, cell.code_dir) if staged is not None
                     else asyncio.to_thread(link_into, artifact, cell.code_dir)]
            if cell.cell_class != wanted:
                steps.append(asyncio.to_thread(
                    self._backend.update_limits, cell.container_id, wanted))
            # To their end even when cancelled (a delete, a stop): the link's thread goes
            # on regardless, and the cell's code folder is removed only once it is done.
            for outcome in await finish(asyncio.gather(*steps, return_exceptions=True)):
                if isinstance(outcome, BaseException):
                    raise outcome
            linked = time.monotonic()
            self._notify(instance, "started")
            self._notify(instance, "connected")  # what the cell kept since its start comes
            conn, instance.import_ms, instance.hooks_ms = await self._readiness.load(
                version, cell.folder, cell.container_id, conn)
            loaded = time.monotonic()
            # Whose it is, once its code is loaded: a restart adopts it by this, never a
            # cell that would answer NotInitialized. (Outside the folders the container
            # mounts.) On the loop: a 20-byte file in lambdad's state folder, no fsync,
            # costs ~50 us there; a thread's round trip cost the cold request ~0.4 ms.
            _write_owner(cell.code_dir / OWNER_FILE, version)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if staged is not None and os.path.lexists(staged):  # a move that failed midway
                self._spawn(self._stopper.remove_tree(staged))
            await self._stopper.unwind(instance, exc, "failed to initialize")
            raise
        self._ready(instance, conn, started)
        # Named after its function for `docker ps` (labels cannot change), a moment later so
        # the Docker call's thread does not compete with the first request for the GIL.
        asyncio.get_running_loop().call_later(
            RENAME_DELAY_S, lambda: self._spawn(asyncio.to_thread(
                self._backend.rename, cell.container_id,
                instance_name(version.function, version.number, cell.id))))
        asyncio.get_running_loop().call_later(
            STAGE_DELAY_S, lambda: self._spawn(self._stage(artifact)))
        # Where init minus import goes (issue 17's from-zero overhead): the link (and a
        # resize), POST /init beyond the runtime's import, what follows it here.
        log.info("instance specialized function=%s version=%d instance=%s init_ms=%.1f "
                 "link_ms=%.1f staged=%s load_ms=%.1f import_ms=%.1f cell_class=%s",
                 version.function, version.number, instance.id, instance.init_ms,
                 (linked - started) * 1000, staged is not None, (loaded - linked) * 1000,
                 instance.import_ms, cell.cell_class.label())
        return instance

    def stage_ahead(self, version: FunctionVersion) -> None:
        """A deployed version's files linked ahead of its first cold start through a cell."""
        artifact = self._artifact(version) if self.cells.enabled else None
        if artifact is not None:
            self._spawn(self._stage(artifact))

    async def _stage(self, artifact: Path) -> None:
        """Links `artifact` ahead of its next cold start through a cell."""
        path = self.stages.wanted(artifact)
        if path is None:
            return
        before: tuple[int, ...] | None = None
        done = False
        try:
            before = stamp(artifact)
            await finish(asyncio.to_thread(prepare, artifact, path))  # its thread ends first
            done = True
        except OSError as exc:  # e.g. the version was deleted meanwhile
            log.debug("staging an artifact failed artifact=%s error=%s", artifact, exc)
        finally:
            self.stages.staged(artifact, path, before if done else None)


def _real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _mark_loaded(code_dir: Path, version: FunctionVersion) -> None:
    """A standard runtime's own container loaded its code: STATE/c/<id>/owner, as a
    specialized cell's. mkdir fails on anything already there, a link included."""
    code_dir.mkdir(mode=0o700, parents=True)
    _write_owner(code_dir / OWNER_FILE, version)


def _write_owner(path: Path, version: FunctionVersion) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "w") as owner:
        owner.write(f"{version.function}\n{version.number}\n{version.stamp}\n")
