"""The instances of one function version, and who gets which one.

Pure scheduling logic over asyncio futures: starting and destroying containers is
delegated to the callables the runtime manager passes in, so the rules below are
unit-tested without Docker.

- A request takes a free slot on a live instance (the most recently used one, so
  the others go idle and can be reaped); otherwise it queues. An instance has
  min(concurrency, the workers its memory holds) slots: its runtime says how many workers
  fit (`set_workers`, from a response's `Lambda-Workers`), and an instance that has not said
  yet is assumed to hold what the last one of its version said.
- Instances start only for queued requests that the instances already starting
  cannot absorb (at that many slots each), never beyond `max_instances`.
- A freed slot or a newly ready instance goes to the oldest queued request.
- A request that waits longer than the queue timeout gets Throttled (429).
- `close` (a delete, the daemon's stop) cancels the starts in flight: one not yet at
  Docker creates nothing, one with a container stops it as it unwinds (see `starts`).
- An instance idle for idle_timeout beyond the minimum stops, or with a freeze window is
  kept frozen that long first (`freezing.idle_fates`); a request that takes a frozen
  instance revives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lambdad.errors import LambdaError, Throttled, Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime.freezing import IdleState, idle_fates

if TYPE_CHECKING:
    from lambdad.runtime.folder import InstanceFolder
    from lambdad.runtime.upstream import UpstreamConnection

log = logging.getLogger("lambdad.runtime")

Grant = tuple["Instance", bool]  # the instance, and whether this request waited for its start


@dataclass(eq=False)
class Instance:
    id: str
    version: FunctionVersion
    container_id: str
    folder: InstanceFolder  # its socket folder, STATE/i/<id>: every connection goes through it
    init_ms: float = 0.0  # its start as lambdad timed it, import included
    import_ms: float = 0.0  # the import alone, as its runtime timed it (POST /init's answer)
    hooks_ms: float = 0.0  # the before-snapshot hooks after the import (the same answer)
    fetch_ms: float = 0.0  # cluster mode: its artifact fetched or image built first (in init)
    idle: list[UpstreamConnection] = field(default_factory=list)
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    dead: bool = False
    fresh: bool = False  # started for queued requests; its first grant is a cold start
    end_reason: str = ""  # why the daemon stopped it, for the requests it was serving
    # The pool it serves in (None until routed); `transfer_to` moves it to another pool,
    # so whoever releases or discards it asks this, not the pool it was acquired from.
    owner: InstancePool | None = None
    start_path: str = "container"  # how it came to be: "container" or "cell" (specialized)
    # STATE/c/<id>: a specialized cell's code and owner file, or only the owner file of a
    # standard runtime's own container (written once its code loaded)
    code_dir: Path | None = None
    log_channel: bool = False  # its runtime keeps its logs for lambdad's log channel
    paused: bool = False  # frozen (docker pause) while idle; unpaused by the next request
    no_pause_until: float = 0.0  # after a failed pause, not before this (monotonic)
    transition: asyncio.Lock = field(default_factory=asyncio.Lock)  # pause/unpause in turn
    # Past its idle timeout and kept frozen for the host's freeze window since (monotonic);
    # None while it counts as a live instance. A request that takes it clears this.
    frozen_since: float | None = None
    paused_bytes: int | None = None  # its memory, measured once paused (constant while so)
    pauses: int = 0  # pauses so far: a measurement taken before a thaw is not kept
    # Thawed by a direct write of its freezer (Backend.thaw): Docker still says Paused
    # until the forwarder settles it, idle (runtime/cgroups.py)
    unsettled: bool = False
    no_settle_until: float = 0.0  # after a failed settle, not before this (monotonic)
    # How many workers its memory holds, as its runtime last said (0: not said yet); its
    # slots are min(concurrency, this), see InstancePool.slots.
    workers: int = 0


class StartNotNeeded(Exception):
    """A start gave up before creating anything: the requests it was for were served."""


class InstancePool:
    def __init__(
        self,
        version: FunctionVersion,
        *,
        start: Callable[[FunctionVersion, Callable[[], bool]], Awaitable[Instance]],
        destroy: Callable[[Instance], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.version = version
        self._start = start
        self._destroy = destroy
        self._spawn = spawn
        self._clock = clock
        self.instances: list[Instance] = []
        self.starting = 0
        self._waiters: deque[asyncio.Future[Grant]] = deque()
        self._starts: set[asyncio.Task[None]] = set()  # the starts under way, to cancel
        self.retired = False
        self.closed = False
        # What the last instance to say it said about its memory (Lambda-Workers): the
        # slots of an instance that has not said yet, and of the instances a scale-out
        # starts (0: nothing said, the function's concurrency).
        self.workers_hint = 0

    @property
    def concurrency(self) -> int:
        return self.version.config.scaling.concurrency

    def slots(self, instance: Instance | None = None) -> int:
        """How many requests an instance takes at once (a new one's without `instance`):
        the function's concurrency, or fewer if its memory holds fewer workers. A figure
        above the concurrency is ignored."""
        workers = (instance.workers if instance is not None else 0) or self.workers_hint
        concurrency = self.concurrency
        return workers if 0 < workers < concurrency else concurrency

    def set_workers(self, instance: Instance, workers: int) -> None:
        """The instance's runtime says its memory holds `workers` workers (1 at least):
        its slots from now on, and the guess for instances that have not said. A rise
        takes queued requests at once; a fall lets the scaler start instances for them."""
        workers = max(1, workers)
        instance.workers = workers
        self.workers_hint = workers
        if self._waiters:
            self._dispatch()
            self._scale_up()

    @property
    def queued(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def busy(self) -> int:
        return sum(1 for instance in self.instances if instance.in_flight > 0)

    @property
    def in_flight(self) -> int:
        return sum(instance.in_flight for instance in self.instances)

    def add(self, instance: Instance) -> None:
        """Takes in an instance started elsewhere (at deploy, or adopted after a restart).
        Its idle time counts from now: a deploy's instance that took longer to import than
        idle_timeout must not be reaped before its first request can come."""
        instance.owner = self
        instance.last_used = self._clock()
        self.instances.append(instance)
        self._dispatch()

    # Requests

    async def acquire(self, queue_timeout: float) -> Grant:
        instance = self._free_instance()
        if instance is not None and not self._waiters:
            self._grant(instance)
            return instance, False
        waiter: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._dispatch()
        self._scale_up()
        try:
            async with asyncio.timeout(queue_timeout):
                return await waiter
        except TimeoutError:
            self._abandon(waiter)
            scaling = self.version.config.scaling
            raise Throttled(
                f"function {self.version.function!r} is at its maximum of "
                f"{scaling.max_instances} instance(s) x {scaling.concurrency} concurrent "
                f"request(s); waited {queue_timeout:g} s for capacity"
            ) from None
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self, instance: Instance) -> None:
        instance.in_flight -= 1
        instance.last_used = self._clock()
        if self.retired and instance in self.instances and instance.in_flight == 0:
            self._remove(instance)
            return
        self._dispatch()

    def _abandon(self, waiter: asyncio.Future[Grant]) -> None:
        """A waiter that gave up; a grant that raced with its cancellation goes back."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            instance, _ = waiter.result()
            self.release(instance)
        else:
            waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _grant(self, instance: Instance) -> None:
        instance.in_flight += 1
        instance.last_used = self._clock()
        instance.frozen_since = None  # wanted again: a live instance, thawed before use

    def _free_instance(self) -> Instance | None:
        best: Instance | None = None
        concurrency = self.concurrency
        hint = self.workers_hint
        for instance in self.instances:
            if instance.dead:
                continue
            workers = instance.workers or hint
            if instance.in_flight >= (workers if 0 < workers < concurrency else concurrency):
                continue
            if best is None or instance.last_used > best.last_used:
                best = instance
        return best

    def _dispatch(self) -> None:
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            instance = self._free_instance()
            if instance is None:
                return
            self._waiters.popleft()
            self._grant(instance)
            cold = instance.fresh
            instance.fresh = False
            waiter.set_result((instance, cold))

    # Scaling

    def _scale_up(self) -> None:
        if self.retired:
            return
        max_instances = self.version.config.scaling.max_instances
        slots = self.slots()
        uncovered = self.queued - self.starting * slots
        while uncovered > 0 and len(self.instances) + self.starting < max_instances:
            self._launch(fresh=True)
            uncovered -= slots

    def ensure_minimum(self) -> int:
        """Starts instances up to min_instances (also after one died); returns how many."""
        if self.retired:
            return 0
        missing = self.version.config.scaling.min_instances - len(self.instances) - self.starting
        for _ in range(max(0, missing)):
            self._launch(fresh=False)
        return max(0, missing)

    def _launch(self, *, fresh: bool) -> None:
        self.starting += 1
        self._spawn(self._start_one(fresh))

    def _still_needed(self) -> bool:
        return not self.retired and self.queued > 0

    def _cancel_starts(self) -> None:
        """Cancels the starts under way: one not yet at Docker creates nothing, one with a
        container stops it as it unwinds (a stop's grace). Never what follows a start."""
        for task in self._starts:
            task.cancel()

    @property
    def starts(self) -> list[asyncio.Task[None]]:
        """The starts under way (cancelled by `close`; the caller awaits them)."""
        return list(self._starts)

    async def _cancellable(self, start: Awaitable[Instance]) -> Instance:
        """`start`, which `close` cancels while it runs; never what follows it (a destroy
        of what it started must end, or its container stays)."""
        task = asyncio.current_task()
        assert task is not None
        self._starts.add(task)
        try:
            return await start
        finally:
            self._starts.discard(task)

    async def _start_one(self, fresh: bool) -> None:
        if self.retired:  # retired between its launch and its first step: nothing to do
            self.starting -= 1
            return
        try:
            instance = await self._cancellable(self._start(
                self.version, self._still_needed if fresh else _always))
        except StartNotNeeded:
            self.starting -= 1
            return
        except LambdaError as exc:
            self.starting -= 1
            self._fail_one_waiter(exc)
            self._scale_up()
            return
        except BaseException as exc:
            self.starting -= 1
            self._fail_one_waiter(Unavailable(f"could not start an instance: {exc}"))
            raise
        self.starting -= 1
        if self.retired:
            await self._destroy(instance)
            return
        instance.fresh = fresh
        instance.owner = self
        self.instances.append(instance)
        self._dispatch()

    def _fail_one_waiter(self, exc: LambdaError) -> None:
        """The start was for the oldest queued request: it learns why, the others wait on."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
                return

    def reap_idle(self, freeze_window: float = 0.0) -> int:
        """Applies `idle_fates` to the instances idle for idle_timeout beyond the minimum:
        they are marked frozen (the runtime manager freezes them) or stopped; returns how
        many stopped."""
        scaling = self.version.config.scaling
        now = self._clock()
        candidates = [i for i in self.instances if not i.dead]
        fates = idle_fates(
            [IdleState(i.last_used, i.in_flight > 0, i.frozen_since, i.no_pause_until > now)
             for i in candidates],
            now=now, idle_timeout=scaling.idle_timeout_s,
            min_instances=scaling.min_instances, freeze_window=freeze_window)
        for index in fates.revive:
            candidates[index].frozen_since = None
        for index in fates.freeze:
            candidates[index].frozen_since = now
        for index in fates.stop:
            instance = candidates[index]
            instance.end_reason = ("stopped after its idle timeout and freeze window"
                                   if instance.frozen_since is not None
                                   else "stopped after its idle timeout")
            self._remove(instance)
        return len(fates.stop)

    def evict_frozen(self, instance: Instance, reason: str) -> bool:
        """Stops a frozen instance (the host's frozen memory is over its bound); False if
        it is no longer frozen (a request took it) or already gone."""
        if instance.frozen_since is None or instance.in_flight or instance not in self.instances:
            return False
        instance.end_reason = reason
        self._remove(instance)
        return True

    # Failures and retirement

    def discard(self, instance: Instance, reason: str) -> bool:
        """Removes a failed instance; False if it was already gone."""
        if instance.dead or instance not in self.instances:
            return False
        instance.end_reason = instance.end_reason or reason
        self._remove(instance)
        self.ensure_minimum()
        self._scale_up()
        return True

    def _remove(self, instance: Instance) -> None:
        instance.dead = True
        if instance in self.instances:
            self.instances.remove(instance)
        self._spawn(self._destroy(instance))

    def retire(self, successor: InstancePool | None) -> None:
        """Stops taking requests: queued ones move to the successor, idle instances stop,
        busy ones stop when their last request ends. Its starts under way are cancelled
        as `close` cancels them: the successor starts what its requests need, and a start
        here would only be destroyed once done (a redeploy storm's retired versions kept
        importing, holding container-start slots, CPU and memory, for nothing)."""
        self.retired = True
        self._cancel_starts()
        waiters = [w for w in self._waiters if not w.done()]
        self._waiters.clear()
        if successor is not None:
            successor._waiters.extend(waiters)
            successor._dispatch()
            successor._scale_up()
        else:
            for waiter in waiters:
                waiter.set_exception(Unavailable(
                    f"function {self.version.function!r} was removed"))
        for instance in list(self.instances):
            if instance.in_flight == 0:
                instance.end_reason = "replaced by a new version"
                self._remove(instance)

    def transfer_to(self, successor: InstancePool) -> None:
        """Hands every instance and queued request to `successor` (a pinned version
        becoming the active one keeps its warm instances)."""
        self.retired = True
        for instance in self.instances:
            instance.owner = successor
            successor.instances.append(instance)
        self.instances = []
        successor._waiters.extend(w for w in self._waiters if not w.done())
        self._waiters.clear()
        successor._dispatch()
        successor._scale_up()  # starts that were under way here end with this pool

    @property
    def idle_and_empty(self) -> bool:
        return not self.instances and self.starting == 0 and self.queued == 0

    def close(self, reason: str) -> list[Instance]:
        """Retires at once (function deleted, daemon stopping): queued requests fail,
        starts under way are cancelled (awaited by the caller through `starts`: a start
        that has a container stops it as it unwinds, with the grace the others get), and
        the caller gets every instance, busy or not, to destroy."""
        self.retired = True
        self.closed = True
        self._cancel_starts()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable(
                    f"function {self.version.function!r} {reason}"))
        self._waiters.clear()
        instances, self.instances = self.instances, []
        for instance in instances:
            instance.dead = True
            instance.end_reason = instance.end_reason or f"was stopped: the function {reason}"
        return instances

    @property
    def drained(self) -> bool:
        return self.retired and not self.instances and self.starting == 0


def _always() -> bool:
    return True
