"""ControlPlane: the one object the gRPC API and the daemon hold, a thin facade.

It builds the use cases from the parts it is given and forwards each call to one of
them; it decides nothing itself. The async queue, its Invoker and the CronRunner are made
before it (the AsyncWorker and the cron runner need them too) and handed in.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import lambdad
from lambdad.auth import ApiKey, KeyRing
from lambdad.build import ArtifactStore, TarLimits
from lambdad.build.blobs import BlobStore
from lambdad.cluster.table import NodeRow
from lambdad.control.admin import Keys, Schedules
from lambdad.control.builds import Builds
from lambdad.control.deploy import Deployer, Upload
from lambdad.control.events import AsyncQueue
from lambdad.control.invoke import DirectInvoke, Invoker
from lambdad.control.locks import FunctionLocks
from lambdad.control.model import (
    DaemonInfo,
    DeployEvent,
    DeployHeader,
    DeployResult,
    DirectResult,
    FunctionView,
)
from lambdad.control.ports import Builder, Runtime
from lambdad.control.queries import FunctionStats, LogPeers, NodeSelf, Queries
from lambdad.control.versions import Versions
from lambdad.functions import Activation, FunctionVersion, Overrides
from lambdad.logs import LogEntry, LogQuery, LogStore
from lambdad.metrics import Metrics
from lambdad.queue.model import AsyncInvocation
from lambdad.runtime.cells import ClassStats
from lambdad.scheduler.cron import Schedule
from lambdad.scheduler.runner import CronRunner
from lambdad.store import Store


class ControlPlane:
    def __init__(
        self,
        *,
        store: Store,
        builder: Builder,
        runtime: Runtime,
        invoker: Invoker,
        queue: AsyncQueue,
        cron: CronRunner,
        keyring: KeyRing,
        spool_dir: Path,
        image_prefix: str,
        url_template: str,
        max_code_bytes: int,
        tar_limits: TarLimits,
        keep_versions: int = 10,
        metrics: Metrics | None = None,
        logs: LogStore | None = None,
        domain: str = "localhost",
        docker_version: str = "",
        artifacts: ArtifactStore | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.info = DaemonInfo(
            version=lambdad.__version__, api_version="v1",
            python_version=platform.python_version(), docker_version=docker_version,
            started_at=datetime.now(UTC), domain=domain, url_template=url_template,
        )
        locks = self.locks = FunctionLocks()  # cluster mode adds the nodes' locks
        builds = Builds(builder, artifacts,
                        local_prefix=image_prefix if blobs is not None else "")
        self._versions = Versions(
            store=store, runtime=runtime, builds=builds, locks=locks,
            image_prefix=image_prefix, url=self.url, keep_versions=keep_versions,
            metrics=metrics, logs=logs, cron=cron)
        self._deployer = Deployer(
            store=store, builder=builder, runtime=runtime, builds=builds, locks=locks,
            upload=Upload(spool_dir, max_code_bytes, tar_limits), image_prefix=image_prefix,
            url=self.url, retain=self._versions.apply_retention, metrics=metrics,
            blobs=blobs, artifacts=artifacts)
        self._direct = DirectInvoke(invoker)
        self._queue = queue
        self._queries = Queries(store=store, runtime=runtime, locks=locks, url=self.url,
                                metrics=metrics, logs=logs)
        self._keys = Keys(store, keyring)
        self._schedules = Schedules(store, cron, locks)

    def url(self, name: str) -> str:
        return self.info.url(name)

    # Start-up (the daemon)

    async def load(self) -> int:
        return await self._versions.load()

    # Cluster mode: changes another node made (lambdad/cluster/changes.py)

    async def sync_function(self, name: str) -> str:
        return await self._versions.sync(name)

    async def reload_functions(self) -> int:
        return await self._versions.reload_all()

    async def prune_orphan_images(self) -> int:
        return await self._versions.prune_orphans()

    async def flush_stats(self) -> None:
        await self._queries.flush_stats()

    # Deploy and versions

    def deploy(self, header: DeployHeader, chunks: AsyncIterator[bytes], *,
               deployed_by: str = "local") -> AsyncIterator[DeployEvent]:
        return self._deployer.deploy(header, chunks, deployed_by=deployed_by)

    async def versions(self, name: str) -> tuple[list[FunctionVersion], list[Activation], int]:
        return await self._versions.versions(name)

    async def rollback(self, name: str, to_version: int | None) -> tuple[int, int]:
        return await self._versions.rollback(name, to_version)

    async def update_config(self, name: str, overrides: Overrides) -> DeployResult:
        return await self._versions.update_config(name, overrides)

    async def delete(self, name: str) -> tuple[int, int]:
        return await self._versions.delete(name)

    # Invocations

    async def invoke(self, name: str, payload: bytes, *,
                     version: int | None = None) -> DirectResult:
        return await self._direct.invoke(name, payload, version=version)

    async def enqueue(self, name: str, payload: bytes, *, source: str) -> str:
        return await self._queue.enqueue(name, payload, source=source)

    async def invocations(self, name: str, status: str, limit: int) -> list[AsyncInvocation]:
        return await self._queue.invocations(name, status, limit)

    async def invocation(self, prefix: str) -> AsyncInvocation:
        return await self._queue.invocation(prefix)

    async def redrive(self, prefix: str, all_failed_of: str) -> int:
        return await self._queue.redrive(prefix, all_failed_of)

    # Queries

    async def list_functions(self) -> list[FunctionView]:
        return await self._queries.list_functions()

    async def get_function(self, name: str) -> FunctionView:
        return await self._queries.get_function(name)

    async def stats(
        self, name: str | None
    ) -> tuple[list[FunctionStats], list[tuple[ClassStats, int]]]:
        return await self._queries.stats(name)

    def logs(self, query: LogQuery, *, follow: bool,
             local_only: bool = False) -> AsyncIterator[LogEntry]:
        return self._queries.logs(query, follow=follow, local_only=local_only)

    async def nodes(self) -> tuple[list[NodeRow], str]:
        """The cluster's nodes and the leader's id (SQLite: this daemon alone)."""
        return await self._queries.nodes()

    @property
    def node_id(self) -> str:
        return self._queries.node.id if self._queries.node is not None else ""

    def observe_cluster(self, node: NodeSelf, peers: LogPeers | None = None) -> None:
        """Who this node is, and (cluster mode) the other nodes to fan logs out to."""
        self._queries.node = node
        self._queries.peers = peers

    # Administration

    async def create_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        return await self._keys.create(name, role)

    async def list_keys(self) -> list[ApiKey]:
        return await self._keys.list()

    async def revoke_key(self, name_or_id: str) -> ApiKey:
        return await self._keys.revoke(name_or_id)

    async def create_schedule(self, name: str, cron: str, tz: str, data: bytes,
                              overlap: str) -> Schedule:
        return await self._schedules.create(name, cron, tz, data, overlap)

    async def schedules(self, name: str) -> list[tuple[Schedule, float | None, str]]:
        return await self._schedules.list(name)

    async def delete_schedule(self, prefix: str) -> Schedule:
        return await self._schedules.delete(prefix)
