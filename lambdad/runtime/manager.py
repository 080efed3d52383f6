"""The runtime manager: the one face of the runtime that the control plane, the gateway
and the daemon see, wiring the parts that each do one job.

- `routing.Routes`: which pool serves a request (pure, in memory: an invocation never
  waits on SQLite);
- `pool.InstancePool`: who gets which instance of one version, when one starts or stops;
- `starts.Starter`: new containers, stem cells and their specialization (`StartPlan`);
- `stops.Stopper`: stopping containers and removing their folders;
- `reconcile.Reconciler`: what an earlier run left, adopted or removed;
- `forward.Forwarder`: one request to one instance, and pausing idle ones.

Docker calls go through the `backend.Backend` surface, in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lambdad.build.artifacts import ArtifactSource
from lambdad.functions import FunctionVersion
from lambdad.runtime.backend import Backend
from lambdad.runtime.cells import CellClass, ClassStats
from lambdad.runtime.folder import CONTAINER_UID
from lambdad.runtime.forward import Forwarder
from lambdad.runtime.freezing import Frozen, over_bound
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.pool import Instance, InstancePool
from lambdad.runtime.readiness import Readiness
from lambdad.runtime.reconcile import Reconciler
from lambdad.runtime.routing import PoolCounts, Routes
from lambdad.runtime.slots import LocalSlots, Slots, keep_within, take
from lambdad.runtime.starts import Starter, StartPlan
from lambdad.runtime.stops import Stopper

__all__ = ["PoolCounts", "RuntimeManager", "StartPlan"]

if TYPE_CHECKING:  # cluster mode's fetch at a cold start (build/localize.py)
    from lambdad.build.localize import Localized

log = logging.getLogger("lambdad.runtime")

IMAGE_CHECK_S = 30.0


class RuntimeManager:
    def __init__(
        self, backend: Backend, *, instances_dir: Path, start_timeout: float = 30.0,
        on_instance: Callable[[Instance, str], None] | None = None,
        artifacts: ArtifactSource | None = None, cells_dir: Path | None = None,
        cell_pool_size: int = 0, runtime_image: str = "lambda-runtime/python:3.11",
        pause_after: float = 0.0, freeze_window: float = 0.0, frozen_memory: int = 0,
        socket_owner: int = CONTAINER_UID,
        localize: Callable[[FunctionVersion], Awaitable[Localized]] | None = None,
    ) -> None:
        """`on_instance` is told of every instance: "started" (container running),
        "connected" (its socket answers, its code maybe not loaded yet), "ready" (serving)
        and "adopted" (found running after a restart). `pause_after`: idle seconds before
        an instance is paused; `freeze_window`: seconds an instance past its idle timeout is
        kept frozen before it stops (0: it stops at once); `frozen_memory`: bytes all those
        frozen instances may hold, the longest frozen stop first beyond it. `socket_owner` is
        the uid an instance's socket must belong to (the containers' user; tests run a fake
        runtime as their own)."""
        self._backend = backend
        self._on_instance = on_instance
        self._pause_after = pause_after
        self._freeze_window = freeze_window
        self._frozen_memory = frozen_memory
        self._image_checked_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        cells_dir = cells_dir or instances_dir.parent / "c"
        self.slots: Slots = LocalSlots()
        self._ask: Callable[[str], Awaitable[None]] | None = None
        self._leases: dict[str, str] = {}  # instance id -> its slot lease
        self._stopper = Stopper(backend, instances_dir=instances_dir,
                                runtime_image=runtime_image)
        self._starter = Starter(
            backend, self._stopper, Readiness(backend, self._stopper,
                                              start_timeout=start_timeout),
            instances_dir=instances_dir, cells_dir=cells_dir, artifacts=artifacts,
            cell_pool_size=cell_pool_size, runtime_image=runtime_image, notify=self._notify,
            spawn=self._spawn, socket_owner=socket_owner, localize=localize,
        )
        self._routes = Routes(self._new_pool)
        self._forwarder = Forwarder(self._routes, backend, self._stopper)
        self._reconciler = Reconciler(backend, self._routes, self._stopper, self._notify,
                                      instances_dir, cells_dir, socket_owner)
        self.cells = self._starter.cells
        # No cell starts before `reconcile` has cleared what an earlier run left in the
        # instance and cell folders: it would remove a new cell's folders with them.
        self.cells.held = True

    def _new_pool(self, version: FunctionVersion) -> InstancePool:
        return InstancePool(version, start=self._start_leased, destroy=self._destroy_leased,
                            spawn=self._spawn)

    def use_slots(self, slots: Slots,
                  ask: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Cluster mode: every start holds a lease of its function's max_instances across
        the nodes (runtime/slots.py); `ask` tells the others a start waits for one."""
        self.slots = slots
        self._ask = ask

    async def _start_leased(self, version: FunctionVersion,
                            wanted: Callable[[], bool]) -> Instance:
        """A start within the function's max_instances across the cluster: the lease is
        taken first (waiting while the requests still want the start) and given back if
        the start fails."""
        lease = await take(self.slots, version.function,
                           version.config.scaling.max_instances, wanted, self._ask)
        try:
            instance = await self._starter.start_instance(version, wanted)
        except BaseException:
            self._spawn(self._release(lease))
            raise
        self._leases[instance.id] = lease
        return instance

    async def _destroy_leased(self, instance: Instance) -> None:
        try:
            await self._stopper.destroy(instance)
        finally:
            lease = self._leases.pop(instance.id, None)
            if lease is not None:
                await self._release(lease)

    def stop_idle(self, name: str) -> bool:
        """Another node waits for a slot of `name`: stops this node's longest idle instance
        of it (none busy, the minimum kept) now instead of at its idle timeout."""
        pool = self._routes.active.get(name)
        if pool is None:
            return False
        live = [i for i in pool.instances if not i.dead]
        if len(live) <= pool.version.config.scaling.min_instances:
            return False
        for instance in sorted(live, key=lambda i: i.last_used):
            if instance.in_flight == 0:
                instance.end_reason = "stopped for another node waiting for a slot"
                return pool.discard(instance, instance.end_reason)
        return False

    async def keep_leased(self, *, adopted: bool = False) -> int:
        """Every running instance of this node holds a lease of its function, or stops:
        after `reconcile` (`adopted`: the instances found from the last run, which hold
        none), and after a rejoin (this node was marked down while alive and its leases
        were released; another node may have taken them meanwhile). Busy instances are
        kept first, then the most recently used. Returns how many were stopped; raises
        what the lease table raises (the database away)."""
        live = [i for pool in self._routes.every_pool() for i in pool.instances
                if not i.dead and (adopted or i.id in self._leases)]
        live.sort(key=lambda i: (-i.in_flight, -i.last_used))
        leases = [self._leases.get(i.id) or uuid.uuid4().hex for i in live]
        kept = await keep_within(self.slots, [
            (i.version.function, lease, i.version.config.scaling.max_instances)
            for i, lease in zip(live, leases, strict=True)])
        stopped = 0
        reason = ("stopped: beyond max_instances across the cluster (another node took "
                  "its lease)" if not adopted else
                  "stopped at adoption: beyond max_instances across the cluster")
        for instance, lease, ok in zip(live, leases, kept, strict=True):
            if ok:
                self._leases[instance.id] = lease
                continue
            self._leases.pop(instance.id, None)
            if instance.owner is not None and instance.owner.discard(instance, reason):
                log.warning("instance stopped function=%s version=%d instance=%s reason=%s",
                            instance.version.function, instance.version.number, instance.id,
                            reason)
                stopped += 1
        return stopped

    async def _release(self, lease: str) -> None:
        try:
            await self.slots.release(lease)
        except Exception as exc:  # the database is away: its row goes with a mark-down
            log.warning("could not give back instance lease %s: %s", lease, exc)

    # Routing state

    def know(self, version: FunctionVersion) -> None:
        """Remembers a version (built, pruned, or reusing another's image) for pinned calls."""
        self._routes.know(version)

    def register(self, version: FunctionVersion) -> InstancePool:
        """Routes the function to `version` with no instance yet (daemon start)."""
        pool = self._routes.register(version)
        self._update_cell_classes()
        return pool

    def activate(self, version: FunctionVersion, instances: Sequence[Instance] = ()) -> None:
        """Switches new requests to `version`, served first by `instances` (started for
        it and loaded: a deploy's pre-warmed ones); old instances drain, then stop."""
        self._routes.activate(version, instances).ensure_minimum()
        self._update_cell_classes()
        self._starter.stage_ahead(version)

    def mark_pruned(self, version: FunctionVersion) -> None:
        self._routes.mark_pruned(version)

    def _update_cell_classes(self) -> None:
        """Stem cells are kept for the classes of the routed functions that can use them."""
        if self.cells.enabled:
            self.cells.want(self._starter.cell_classes(
                [pool.version for pool in self._routes.active.values()]))

    def routed(self) -> list[str]:
        return self._routes.routed()

    def active_version(self, name: str) -> FunctionVersion | None:
        return self._routes.active_version(name)

    def known_version(self, name: str, number: int) -> FunctionVersion | None:
        """Version `number` of `name` as a pinned call would get it (the gateway decides
        auth by the version that serves a request, before reading its body)."""
        return self._routes.known_version(name, number)

    def is_warm(self, name: str) -> bool:
        return self._routes.is_warm(name)

    def has_warm_pinned(self, version: FunctionVersion) -> bool:
        return self._routes.has_warm_pinned(version)

    def counts(self, name: str) -> PoolCounts:
        return self._routes.counts(name)

    def instance_count(self, name: str) -> int:
        counts = self.counts(name)
        return counts.running + counts.draining

    def cell_stats(self) -> list[ClassStats]:
        return self.cells.stats()

    async def memory(self) -> tuple[dict[str, int], dict[CellClass, int]]:
        """Memory in use now: per function (its instances) and per stem-cell class."""
        owners: list[tuple[str | CellClass, str]] = []
        for pool in self._routes.every_pool():
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

    # Starting and stopping

    async def reconcile(self) -> tuple[int, int]:
        """Adopts healthy instances of routed versions; removes every other container.

        Called at start, after `register`: a daemon killed with -9 left its instances
        running, and the ones of active versions can serve at once.
        """
        adopted, removed = await self._reconciler.run()
        if adopted:  # (cluster mode: within max_instances across the nodes)
            try:
                adopted -= await self.keep_leased(adopted=True)
            except Exception as exc:  # they run unleased until they stop (as before)
                log.warning("could not lease the adopted instances: %s", exc)
        self.cells.held = False
        await self._check_runtime_image()
        self.cells.refill()
        return adopted, removed

    def plan_start(self, version: FunctionVersion) -> StartPlan:
        """Decides now how `start_instance(version, plan=...)` will start: with a ready stem
        cell (taken from the pool at once) or a new container. A deploy says which."""
        return self._starter.plan_start(version)

    def abandon(self, plan: StartPlan) -> None:
        """A plan that was not started (the deploy ended first): its cell is stopped."""
        self._starter.abandon(plan)

    async def start_instance(
        self, version: FunctionVersion, wanted: Callable[[], bool] | None = None,
        *, plan: StartPlan | None = None,
    ) -> Instance:
        """An instance of `version`, ready to serve, not routed yet (see `activate`).

        A deploy's, rollback's or config change's instance: it holds a slot lease if one is
        free; if not it starts anyway, as on one node a deploy's pre-warmed instances may
        run beside the old version's until those drain (they are leased and stop soon)."""
        lease = uuid.uuid4().hex
        granted = await self.slots.acquire(version.function, lease,
                                           version.config.scaling.max_instances)
        try:
            instance = await self._starter.start_instance(version, wanted, plan=plan)
        except BaseException:
            if granted:
                self._spawn(self._release(lease))
            raise
        if granted:
            self._leases[instance.id] = lease
        return instance

    async def remove_instance(self, instance: Instance) -> None:
        """Stops an instance that was started but never routed (a failed deploy)."""
        await self._destroy_leased(instance)

    async def remove_function(self, name: str) -> int:
        """Stops every instance of the function at once, busy or not."""
        pools = self._routes.remove_function(name)
        self._update_cell_classes()
        instances = [i for pool in pools for i in pool.close("was deleted")]
        starts = [task for pool in pools for task in pool.starts]  # cancelled by close
        results = await asyncio.gather(*(self._destroy_leased(i) for i in instances),
                                       *starts, return_exceptions=True)
        for failure in (r for r in results if isinstance(r, BaseException)
                        and not isinstance(r, asyncio.CancelledError)):
            log.warning("could not remove an instance of %s: %s", name, failure)
        return len(instances)

    def ensure_minimums(self) -> None:
        for pool in self._routes.active.values():
            pool.ensure_minimum()

    def housekeeping(self) -> None:
        """Periodic: scale idle instances down (stopped, or frozen for the freeze window),
        pause idle Dockerfile instances (a standard runtime idles in epoll at no cost, and a
        thaw would put a Docker call, ~15 ms, on the next request after every short pause),
        stop the longest frozen beyond the frozen memory bound, restore minimums, refill the
        stem cells, forget drained pools."""
        now = time.monotonic()
        for pool in self._routes.serving():
            reaped = pool.reap_idle(self._freeze_window)
            if reaped:
                log.info("scaled down function=%s version=%d idle_instances_stopped=%d",
                         pool.version.function, pool.version.number, reaped)
            pool.ensure_minimum()
            for instance in pool.instances:
                if self._forwarder.may_settle(instance, now):  # then paused on a later round
                    self._spawn(self._forwarder.settle(instance))
                elif instance.frozen_since is not None:  # frozen whatever pause_after says
                    if self._forwarder.may_pause(instance, now, 0.0):
                        self._spawn(self._forwarder.pause(instance))
                elif (self._pause_after > 0 and pool.version.config.runtime == "docker"
                      and self._forwarder.may_pause(instance, now, self._pause_after)):
                    self._spawn(self._forwarder.pause(instance))
        if self._freeze_window > 0:
            self._bound_frozen()
        self._starter.stages.sweep()
        if not self._closing:
            self.cells.refill()
            if self.cells.enabled and now - self._image_checked_at >= IMAGE_CHECK_S:
                self._image_checked_at = now
                self._spawn(self._check_runtime_image())
        self._routes.sweep()

    def _bound_frozen(self) -> None:
        """Stops the longest frozen instances while all frozen ones hold more memory than
        `frozen_memory` (as measured once each was paused)."""
        frozen = [(pool, i) for pool in self._routes.serving() for i in pool.instances
                  if i.frozen_since is not None and i.paused and i.paused_bytes is not None]
        chosen = over_bound([Frozen(i.frozen_since or 0.0, i.paused_bytes or 0)
                             for _, i in frozen], self._frozen_memory)
        limit = self._frozen_memory / (1024 * 1024)
        for index in chosen:
            pool, instance = frozen[index]
            if pool.evict_frozen(instance, f"stopped: frozen instances held more than "
                                           f"frozen_memory_mb ({limit:g} MiB)"):
                log.info("frozen instance stopped function=%s version=%d instance=%s "
                         "memory_bytes=%d frozen_memory_bytes=%d", pool.version.function,
                         pool.version.number, instance.id, instance.paused_bytes or 0,
                         self._frozen_memory)

    async def _check_runtime_image(self) -> None:
        """Follows the runtime image's tag: after `make runtime-image` the cells of the old
        image go, and only versions built on the new one use cells."""
        self._image_checked_at = time.monotonic()
        if await self._starter.check_runtime_image():
            self._update_cell_classes()

    def instance_exited(self, container_id: str) -> None:
        """Docker reported a container of ours died: take it out of its pool now."""
        self._stopper.exited(container_id)  # a stop's grace ends
        cell = self.cells.lost(container_id)
        if cell is not None:
            log.warning("stem cell exited cell=%s class=%s", cell.id, cell.cell_class.label())
            self._spawn(self._stopper.destroy_cell(cell))
            self.cells.refill()
            return
        instance = self._routes.find(container_id)
        if instance is not None:
            self._spawn(self._discard_exited(instance))

    async def _discard_exited(self, instance: Instance) -> None:
        state = await self._stopper.settled_state(instance.container_id)
        reason = state.describe(instance.version.config.memory_mb)
        if instance.owner is not None and instance.owner.discard(instance, reason):
            log.warning("instance exited function=%s version=%d instance=%s reason=%s",
                        instance.version.function, instance.version.number, instance.id, reason)

    async def shutdown(self) -> None:
        """Stops every instance (a restarted daemon starts them again, cold), the ones
        still starting with the others: their starts are cancelled, so none creates a
        container from now on, and one that has a container stops it in the same batch,
        with the same grace (its SIGTERM goes out with theirs)."""
        self._closing = True
        pools = self._routes.every_pool()
        instances = [i for pool in pools for i in pool.close("is stopping with the daemon")]
        starts = [task for pool in pools for task in pool.starts]  # cancelled by close
        await asyncio.gather(*(self._destroy_leased(i) for i in instances), *starts,
                             *(self._stopper.destroy_cell(c) for c in self.cells.close()),
                             return_exceptions=True)
        await self.drain_background()

    # Invocation

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        return await self._forwarder.invoke(request)

    # Background work

    def _notify(self, instance: Instance, event: str) -> None:
        if self._on_instance is not None:
            try:
                self._on_instance(instance, event)
            except Exception:
                log.exception("instance %s hook failed", event)

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
