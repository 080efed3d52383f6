"""A function's versions once deployed: routing them at start, the version list, rollback,
config-only versions, the retention policy, and deleting the function with all it owns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from lambdad.control.builds import Builds
from lambdad.control.deploy import counted
from lambdad.control.locks import FunctionLocks
from lambdad.control.model import DeployResult
from lambdad.control.ports import Runtime
from lambdad.errors import FailedPrecondition, NotFound
from lambdad.functions import Activation, FunctionVersion, Overrides, validate_name
from lambdad.functions.manifest import apply_overrides
from lambdad.logs import LogStore
from lambdad.metrics import Metrics
from lambdad.scheduler.runner import CronRunner
from lambdad.store import Store

log = logging.getLogger("lambdad.control")


class Versions:
    def __init__(
        self, *, store: Store, runtime: Runtime, builds: Builds, locks: FunctionLocks,
        image_prefix: str, url: Callable[[str], str], keep_versions: int = 10,
        metrics: Metrics | None = None, logs: LogStore | None = None,
        cron: CronRunner | None = None,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._builds = builds
        self._locks = locks
        self._image_prefix = image_prefix
        self._url = url
        self.keep_versions = keep_versions
        self._metrics = metrics
        self._logs = logs
        self._cron = cron

    async def load(self) -> int:
        """Routes every stored function's active version (at daemon start)."""
        for versions in (await self._store.all_versions()).values():
            for version in versions:
                self._runtime.know(version)
        records = await self._store.list_functions()
        for record in records:
            if record.active is not None:
                self._runtime.register(record.active)
        return len(records)

    async def sync(self, name: str) -> str:
        """Makes this node's routing of `name` what the store says (cluster mode: another
        node changed it). Idempotent: a repeated or stale announcement changes nothing.
        Returns what it did: "removed", "activated", "updated" or "unchanged"."""
        async with self._locks.local(name):  # not across nodes: the writer holds that
            try:
                record = await self._store.get_function(name)
            except NotFound:
                return await self._forget(name)
            versions = await self._store.versions(name)
            await self._drop_pruned(versions)
            return self._route(record.active, versions)

    async def reload_all(self) -> int:
        """`sync` of every function, stored or routed here (cluster mode: after the
        connection to the database came back, announcements may have been missed)."""
        stored = await self._store.all_versions()
        records = {r.name: r for r in await self._store.list_functions()}
        changed = 0
        for name in sorted(set(records) | set(self._runtime.routed())):
            async with self._locks.local(name):
                if name not in records:
                    changed += await self._forget(name) == "removed"
                else:
                    await self._drop_pruned(stored.get(name, []))
                    changed += self._route(records[name].active,
                                           stored.get(name, [])) != "unchanged"
        return changed

    def _route(self, active: FunctionVersion | None, versions: list[FunctionVersion]) -> str:
        routed = self._runtime.active_version(active.function) if active else None
        for version in versions:
            if version.pruned:
                self._runtime.mark_pruned(version)
            else:
                self._runtime.know(version)
        if active is None:
            return "updated"
        if routed is not None and _same(routed, active):
            return "unchanged"
        self._runtime.activate(active)
        log.info("function=%s version=%d is live (changed on another node)",
                 active.function, active.number)
        return "activated"

    async def _drop_pruned(self, versions: list[FunctionVersion]) -> None:
        """The local files of versions another node's retention pruned (their images
        here, if any, go with the start's orphan clean-up)."""
        for version in versions:
            known = self._runtime.known_version(version.function, version.number)
            if version.pruned and known is not None and not known.pruned:
                await self._builds.remove(version.function, version.number, "")

    async def _remove_here(self, name: str, images: list[str]) -> int:
        """What a deleted function leaves on this node: its instances (how many were
        stopped), logs, schedules, metrics and builds. One way for a delete made here and
        one made through another node."""
        instances = await self._runtime.remove_function(name)
        if self._logs is not None:
            await self._logs.delete(name)
        if self._cron is not None:
            self._cron.remove_function(name)
        if self._metrics is not None:
            self._metrics.forget(name)
        await self._builds.remove_function(name, images)
        return instances

    async def _forget(self, name: str) -> str:
        """A function deleted through another node: its instances, logs and local
        builds here go too."""
        if name not in self._runtime.routed():
            return "unchanged"
        instances = await self._remove_here(name, [])
        try:  # images this node built for it (its own tags, which no row names)
            await self.prune_orphans()
        except Exception as exc:  # the next start's clean-up removes them
            log.warning("could not remove the images of deleted function=%s: %s", name, exc)
        log.info("deleted function=%s instances=%d (deleted on another node)", name, instances)
        return "removed"

    async def prune_orphans(self) -> int:
        """Removes images and artifacts that no live version row references."""
        live = [(v.function, v.number)
                for versions in (await self._store.all_versions()).values()
                for v in versions if not v.pruned]
        return await self._builds.prune_orphans(live, await self._store.version_images())

    async def versions(self, name: str) -> tuple[list[FunctionVersion], list[Activation], int]:
        """Every version, the activation history and the active version number."""
        validate_name(name)
        record = await self._store.get_function(name)
        versions = await self._store.versions(name)
        history = await self._store.history(name)
        return versions, history, record.active.number if record.active else 0

    async def rollback(self, name: str, to_version: int | None) -> tuple[int, int]:
        """Makes an earlier version live again: no rebuild, not a new version.

        Returns (the version now live, the one it replaced)."""
        return await counted(self._metrics, "rollback", self._rollback(name, to_version))

    async def _rollback(self, name: str, to_version: int | None) -> tuple[int, int]:
        validate_name(name)
        async with self._locks.of(name):
            record = await self._store.get_function(name)
            if record.active is None:
                raise FailedPrecondition(f"function {name!r} has no active version")
            current = record.active.number
            versions = {v.number: v for v in await self._store.versions(name)}
            if to_version is None:
                earlier = [n for n, v in versions.items() if n < current and not v.pruned]
                if not earlier:
                    raise FailedPrecondition(
                        f"function {name!r} has no kept version before {current} to roll back to"
                    )
                to_version = max(earlier)
            target = versions.get(to_version)
            if target is None:
                raise NotFound(f"function {name!r} has no version {to_version}")
            if target.pruned:
                raise FailedPrecondition(
                    f"version {to_version} of {name!r} was pruned by the retention policy "
                    f"(the last {self.keep_versions} versions keep their images); deploy it "
                    "again instead"
                )
            if to_version == current:
                raise FailedPrecondition(f"version {to_version} of {name!r} is already active")
            instance = None
            if not self._runtime.has_warm_pinned(target):
                instance = await self._runtime.start_instance(target)
            try:
                await self._store.activate(name, to_version, reason="rollback")
            except BaseException:
                if instance is not None:
                    await self._runtime.remove_instance(instance)
                raise
            self._runtime.activate(target, [instance] if instance is not None else [])
        log.info("rolled back function=%s from_version=%d to_version=%d",
                 name, current, to_version)
        return to_version, current

    async def update_config(self, name: str, overrides: Overrides) -> DeployResult:
        """A new version with the active version's image and new settings."""
        return await counted(self._metrics, "config", self._update_config(name, overrides))

    async def _update_config(self, name: str, overrides: Overrides) -> DeployResult:
        validate_name(name)
        async with self._locks.of(name):
            record = await self._store.get_function(name)
            base = record.active
            if base is None:
                raise FailedPrecondition(f"function {name!r} has no active version")
            config = apply_overrides(base.config, overrides)
            number = await self._store.next_version_number(name)
            # A new tag only for a version that has an image; one on the shared runtime
            # image shares its base's artifact and nothing else.
            image = f"{self._image_prefix}/{name}:v{number}" if base.image else ""
            await self._builds.tag(name, base.number, base.image_id, number, image)
            version = replace(
                base, number=number, image=image, config=config,
                created_at=datetime.now(UTC), pruned=False,
                source_version=base.source_version or base.number,
            )
            try:
                instance = await self._runtime.start_instance(version)
            except BaseException:
                await self._builds.remove(name, number, image)
                raise
            try:
                await self._store.add_version(version, activate=True, reason="config")
            except BaseException:
                await self._runtime.remove_instance(instance)
                await self._builds.remove(name, number, image)
                raise
            self._runtime.activate(version, [instance])
            log.info("configured function=%s version=%d image_of_version=%d",
                     name, number, version.source_version)
            await self.apply_retention(name)
        return DeployResult(name=name, version=number, image=image, url=self._url(name))

    async def apply_retention(self, name: str) -> None:
        """Keeps the images of the newest `keep_versions` versions (and the active one);
        older images go, their rows stay as history."""
        versions = await self._store.versions(name)
        record = await self._store.get_function(name)
        active = record.active.number if record.active else None
        newest = {v.number for v in versions[-self.keep_versions:]}
        prune = [v for v in versions
                 if not v.pruned and v.number not in newest and v.number != active]
        for version in prune:
            await self._builds.remove(name, version.number, version.image)
            self._runtime.mark_pruned(version)
        await self._store.mark_pruned(name, [v.number for v in prune])
        if prune:
            log.info("pruned function=%s versions=%s", name,
                     ",".join(str(v.number) for v in prune))

    async def delete(self, name: str) -> tuple[int, int]:
        """Removes rows, instances and images; returns (versions, instances) removed.

        Under the function's lock, as deploy, rollback and config changes are: a deploy
        that took the lock halfway through would number its version after the deleted
        rows (v1 again) and lose its image tag and artifact to this clean-up. A change
        under way is not waited for (a build can take minutes): the delete is refused.
        """
        validate_name(name)
        if self._locks.busy(name):
            raise FailedPrecondition(
                f"function {name!r} is being deployed, rolled back, reconfigured or deleted; "
                "try again when that ends")
        async with self._locks.of(name, wait=False):  # free, so taken at once
            versions = await self._store.delete_function(name)
            instances = await self._remove_here(name, [v.image for v in versions])
        log.info("deleted function=%s versions=%d instances=%d", name, len(versions), instances)
        return len(versions), instances


def _same(a: FunctionVersion, b: FunctionVersion) -> bool:
    """The same version as deployed (a function deleted and deployed again restarts at 1)."""
    return (a.number, a.code_sha256, a.created_at, a.config) == (
        b.number, b.code_sha256, b.created_at, b.config)
