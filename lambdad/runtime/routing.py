"""Which pool serves a request: the active version's pool per function, pools of pinned
versions made on demand, and retired pools draining after a switch.

Pure bookkeeping in memory (an invocation never waits on SQLite): pools are made by
the factory the runtime manager passes in, and starting or stopping instances is the
pools' business, so these rules need no Docker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from lambdad.errors import NotFound
from lambdad.functions import FunctionVersion
from lambdad.runtime.pool import Instance, InstancePool


@dataclass(frozen=True)
class PoolCounts:
    running: int
    busy: int
    starting: int
    draining: int
    queued: int
    paused: int = 0  # idle and paused (pause_after), counted in running
    frozen: int = 0  # past the idle timeout, kept frozen for the freeze window, in running
    # (one in the window whose pause is not under way yet counts as idle)


class Routes:
    def __init__(self, new_pool: Callable[[FunctionVersion], InstancePool]) -> None:
        self._new_pool = new_pool
        self.active: dict[str, InstancePool] = {}  # the active version's pool
        self._pinned: dict[tuple[str, int], InstancePool] = {}  # other versions, on demand
        self._versions: dict[str, dict[int, FunctionVersion]] = {}  # every known version
        self._retired: list[InstancePool] = []

    # Versions

    def know(self, version: FunctionVersion) -> None:
        """Remembers a version (built, pruned, or reusing another's image) for pinned calls."""
        self._versions.setdefault(version.function, {})[version.number] = version

    def register(self, version: FunctionVersion) -> InstancePool:
        """Routes the function to `version` with no instance yet (daemon start)."""
        self.know(version)
        pool = self.active.get(version.function)
        if pool is None or pool.version != version:
            pool = self._new_pool(version)
            self.active[version.function] = pool
        return pool

    def activate(self, version: FunctionVersion,
                 instances: Sequence[Instance] = ()) -> InstancePool:
        """Switches new requests to `version`, served first by `instances` (all added
        before any request can see the pool); old instances drain, then stop."""
        name = version.function
        self.know(version)
        pool = self._new_pool(version)
        pinned = self._pinned.pop((name, version.number), None)
        if pinned is not None:
            pinned.transfer_to(pool)
        for instance in instances:
            pool.add(instance)
        old = self.active.get(name)
        self.active[name] = pool
        if old is not None:
            old.retire(pool)
            if not old.drained:
                self._retired.append(old)
        return pool

    def mark_pruned(self, version: FunctionVersion) -> None:
        self.know(replace(version, pruned=True))
        pinned = self._pinned.pop((version.function, version.number), None)
        if pinned is not None:
            pinned.retire(None)
            if not pinned.drained:
                self._retired.append(pinned)

    def remove_function(self, name: str) -> list[InstancePool]:
        """Forgets the function; returns every pool it had, for the caller to close."""
        self._versions.pop(name, None)
        pools = [p for p in self._retired if p.version.function == name]
        self._retired = [p for p in self._retired if p.version.function != name]
        for key in [key for key in self._pinned if key[0] == name]:
            pools.append(self._pinned.pop(key))
        current = self.active.pop(name, None)
        if current is not None:
            pools.append(current)
        return pools

    # Requests

    def pool_for(self, name: str, number: int | None) -> InstancePool:
        """The pool that serves a request for `name` (version `number`, or the active)."""
        pool = self.active.get(name)
        if pool is None:
            raise NotFound(f"no function named {name!r}")
        if number is not None and number != pool.version.number:
            return self._pinned_pool(name, number)
        return pool

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

    # Queries

    def routed(self) -> list[str]:
        return sorted(self.active)

    def active_version(self, name: str) -> FunctionVersion | None:
        pool = self.active.get(name)
        return pool.version if pool else None

    def known_version(self, name: str, number: int) -> FunctionVersion | None:
        """Version `number` of `name` as a pinned call would get it (the gateway decides
        auth by the version that serves a request, before reading its body)."""
        return self._versions.get(name, {}).get(number)

    def is_warm(self, name: str) -> bool:
        pool = self.active.get(name)
        return pool is not None and any(not i.dead for i in pool.instances)

    def has_warm_pinned(self, version: FunctionVersion) -> bool:
        pinned = self._pinned.get((version.function, version.number))
        return pinned is not None and any(not i.dead for i in pinned.instances)

    def counts(self, name: str) -> PoolCounts:
        """The function's instances by state: those of its active version and of every
        pinned version it serves (a pinned pool's idle instances are frozen and stopped as
        the active one's are, so a gauge of the active pool alone missed them)."""
        pool = self.active.get(name)
        draining = sum(len(p.instances) for p in self._retired if p.version.function == name)
        if pool is None:
            return PoolCounts(0, 0, 0, draining, 0)
        pools = [pool, *(p for (function, _), p in self._pinned.items() if function == name)]
        instances = [i for p in pools for i in p.instances]
        frozen = sum(1 for i in instances if i.frozen_since is not None and i.paused)
        paused = sum(1 for i in instances
                     if i.paused and i.frozen_since is None and i.in_flight == 0)
        return PoolCounts(running=len(instances), busy=sum(p.busy for p in pools),
                          starting=sum(p.starting for p in pools), draining=draining,
                          queued=sum(p.queued for p in pools), paused=paused, frozen=frozen)

    def serving(self) -> list[InstancePool]:
        """The pools that take requests: active and pinned."""
        return [*self.active.values(), *self._pinned.values()]

    def every_pool(self) -> list[InstancePool]:
        """Every pool with instances: active, pinned and retired ones still draining."""
        return [*self.active.values(), *self._pinned.values(), *self._retired]

    def find(self, container_id: str) -> Instance | None:
        """The live instance in a container, in whichever pool it serves."""
        for pool in self.every_pool():
            for instance in pool.instances:
                if instance.container_id == container_id and not instance.dead:
                    return instance
        return None

    def sweep(self) -> None:
        """Forgets drained retired pools and pinned pools with nothing in them."""
        self._retired = [p for p in self._retired if not p.drained]
        for key, pool in list(self._pinned.items()):
            if pool.idle_and_empty:
                del self._pinned[key]
