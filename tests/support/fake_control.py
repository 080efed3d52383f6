"""A control plane in memory, for unit tests of what sits in front of it (the gRPC
servicer; later the gateway and the queue worker).

`FakeControl` has ControlPlane's methods as the API calls them: each call is recorded
in `calls` as (method, args, kwargs); the answer is what the test put in `replies` under
the method's name, or the error in `errors` is raised. Streaming methods (deploy, logs)
read their events from `deploy_events` / `log_entries`. The `sample_*` builders make
plausible values with every field set, so a test notices a field that is not carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from lambdad.auth import ApiKey
from lambdad.control import (
    BuildOutput,
    DaemonInfo,
    DeployEvent,
    DeployHeader,
    DeployResult,
    FunctionView,
    Progress,
)
from lambdad.errors import LambdaError
from lambdad.functions import FunctionConfig, FunctionVersion, Overrides, Scaling
from lambdad.logs import LogEntry, LogQuery
from lambdad.queue.model import AsyncInvocation
from lambdad.runtime.manager import PoolCounts
from lambdad.scheduler.cron import Schedule
from lambdad.store import FunctionRecord

WHEN = datetime(2026, 5, 4, 3, 2, 1, 500000, tzinfo=UTC)


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.replies: dict[str, Any] = {}
        self.errors: dict[str, LambdaError] = {}
        self.info = sample_info()
        self.deploy_events: list[DeployEvent] = [
            Progress(2, "Building image", done=False), BuildOutput("Step 1/3"),
            Progress(2, "Building image", done=True),
            DeployResult("greet", 4, "lambda/greet:4", "http://greet.localhost:8080"),
        ]
        self.received: list[bytes] = []  # the deploy chunks, as the control plane read them
        self.log_entries: list[LogEntry] = []
        self.follow: asyncio.Event | None = None  # logs with follow wait on it after the backlog

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    async def _answer(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs))
        if method in self.errors:
            raise self.errors[method]
        return self.replies[method]

    def url(self, name: str) -> str:
        return f"http://{name}.localhost:8080"

    async def deploy(self, header: DeployHeader, chunks: AsyncIterator[bytes], *,
                     deployed_by: str) -> AsyncIterator[DeployEvent]:
        self.calls.append(("deploy", (header,), {"deployed_by": deployed_by}))
        async for chunk in chunks:
            self.received.append(chunk)
        if "deploy" in self.errors:
            raise self.errors["deploy"]
        for event in self.deploy_events:
            yield event

    async def logs(self, query: LogQuery, *, follow: bool,
                   local_only: bool = False) -> AsyncIterator[LogEntry]:
        self.calls.append(("logs", (query,), {"follow": follow, "local_only": local_only}))
        if "logs" in self.errors:
            raise self.errors["logs"]
        for entry in self.log_entries:
            yield entry
        if follow and self.follow is not None:
            await self.follow.wait()

    async def invoke(self, name: str, payload: bytes, *, version: int | None = None) -> Any:
        return await self._answer("invoke", name, payload, version=version)

    async def enqueue(self, name: str, payload: bytes, *, source: str) -> Any:
        return await self._answer("enqueue", name, payload, source=source)

    async def list_functions(self) -> Any:
        return await self._answer("list_functions")

    async def get_function(self, name: str) -> Any:
        return await self._answer("get_function", name)

    async def delete(self, name: str) -> Any:
        return await self._answer("delete", name)

    node_id = "node-self"

    async def nodes(self) -> Any:
        return await self._answer("nodes")

    async def stats(self, name: str | None) -> Any:
        return await self._answer("stats", name)

    async def create_key(self, name: str, role: str) -> Any:
        return await self._answer("create_key", name, role)

    async def list_keys(self) -> Any:
        return await self._answer("list_keys")

    async def revoke_key(self, name_or_id: str) -> Any:
        return await self._answer("revoke_key", name_or_id)

    async def create_schedule(self, name: str, cron: str, tz: str, data: bytes,
                              overlap: str) -> Any:
        return await self._answer("create_schedule", name, cron, tz, data, overlap)

    async def schedules(self, name: str) -> Any:
        return await self._answer("schedules", name)

    async def delete_schedule(self, prefix: str) -> Any:
        return await self._answer("delete_schedule", prefix)

    async def invocations(self, name: str, status: str, limit: int) -> Any:
        return await self._answer("invocations", name, status, limit)

    async def invocation(self, prefix: str) -> Any:
        return await self._answer("invocation", prefix)

    async def redrive(self, prefix: str, all_failed_of: str) -> Any:
        return await self._answer("redrive", prefix, all_failed_of)

    async def versions(self, name: str) -> Any:
        return await self._answer("versions", name)

    async def rollback(self, name: str, to_version: int | None) -> Any:
        return await self._answer("rollback", name, to_version)

    async def update_config(self, name: str, overrides: Overrides) -> Any:
        return await self._answer("update_config", name, overrides)


def sample_info() -> DaemonInfo:
    return DaemonInfo(version="9.8.7", api_version="v1", python_version="3.11.2",
                      docker_version="24.0.5", started_at=WHEN, domain="localhost",
                      url_template="http://{name}.localhost:8080")


def sample_config(**env: str) -> FunctionConfig:
    return FunctionConfig(
        runtime="python3.11", handler="app.main", timeout_s=17, memory_mb=256,
        env=env or {"TOKEN": "s3cret"}, network="bridge", cpu=0.5, pids_limit=99,
        scaling=Scaling(concurrency=3, min_instances=1, max_instances=7, idle_timeout_s=45,
                        queue_timeout_s=12),
    )


def sample_version(number: int = 4, **changes: Any) -> FunctionVersion:
    fields: dict[str, Any] = dict(
        function="greet", number=number, image=f"lambda/greet:{number}",
        image_id=f"sha256:{number:064d}", config=sample_config(), code_sha256="ab" * 32,
        code_size=4321, created_at=WHEN, deployed_by="ci", pruned=False, source_version=None,
    )
    fields.update(changes)
    return FunctionVersion(**fields)


def sample_view(name: str = "greet", *, active: FunctionVersion | None = None,
                status: str = "ready") -> FunctionView:
    return FunctionView(
        record=FunctionRecord(name=name, active=active),
        status=status, url=f"http://{name}.localhost:8080",
        instances=PoolCounts(running=5, busy=2, starting=1, draining=3, queued=6),
    )


def sample_key(**changes: Any) -> ApiKey:
    fields: dict[str, Any] = dict(id="k1d", name="ci", role="deployer", salt="00",
                                  digest="ff", created_at=1_700_000_000.25, revoked_at=None)
    fields.update(changes)
    return ApiKey(**fields)


def sample_schedule(**changes: Any) -> Schedule:
    fields: dict[str, Any] = dict(
        id="sch1", function="greet", cron="*/5 * * * *", tz="Europe/Paris",
        data=b'{"a": 1}', overlap="replace", created_at=1_700_000_000.0,
        last_run=1_700_000_300.5, last_result="ok", last_invocation="inv9",
    )
    fields.update(changes)
    return Schedule(**fields)


def sample_invocation(**changes: Any) -> AsyncInvocation:
    fields: dict[str, Any] = dict(
        id="inv1", function="greet", payload=b'{"x": 2}', source="schedule", status="failed",
        attempts=3, created_at=1_700_000_000.0, next_attempt_at=1_700_000_060.0,
        started_at=1_700_000_001.0, finished_at=1_700_000_002.0, status_code=500,
        result=b'{"error": "boom"}', last_error="boom",
    )
    fields.update(changes)
    return AsyncInvocation(**fields)


def sample_log(message: str = "hello", **changes: Any) -> LogEntry:
    fields: dict[str, Any] = dict(time=WHEN, function="greet", version=4, instance="i-1",
                                  stream="stderr", request_id="req-1", message=message)
    fields.update(changes)
    return LogEntry(**fields)
