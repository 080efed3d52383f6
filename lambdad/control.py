"""The control plane's use cases, free of gRPC: deploy, invoke, list, get, delete.

The API layer translates protobuf to these calls and LambdaError to status codes;
this module decides what happens, in which order, and what is left on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import platform
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lambdad
from lambdad.api.contract import DEPLOY_STEPS
from lambdad.auth import ROLES, ApiKey, KeyRing, new_secret
from lambdad.auth.keys import digest as key_digest
from lambdad.build import (
    ArtifactStore,
    BuildSpec,
    BuiltImage,
    ImageBuilder,
    TarLimits,
    TarSummary,
    tarball,
)
from lambdad.errors import (
    FailedPrecondition,
    InvalidArgument,
    LambdaError,
    NotFound,
    PayloadTooLarge,
    Throttled,
)
from lambdad.functions import Activation, FunctionVersion, Overrides, validate_name
from lambdad.functions.manifest import apply_overrides, parse_manifest
from lambdad.httpstatus import status_for
from lambdad.jsontext import parse_json
from lambdad.logs import LogEntry, LogQuery, LogStore
from lambdad.metrics import Metrics
from lambdad.metrics.stats import WindowStats, summarize
from lambdad.queue.model import STATUSES, AsyncInvocation, RetryPolicy
from lambdad.runtime.cells import ClassStats
from lambdad.runtime.invocation import InvocationRequest
from lambdad.runtime.manager import PoolCounts, RuntimeManager
from lambdad.scheduler.cron import Schedule, event_payload
from lambdad.scheduler.cron import validate as cron_validate
from lambdad.scheduler.runner import CronRunner
from lambdad.store import FunctionRecord, Store

log = logging.getLogger("lambdad.control")

# Fault injection for crash-consistency tests: LAMBDAD_FAULT=<point> makes the daemon
# die like kill -9 when a deploy reaches that point. Unset in normal operation.
_FAULT = os.environ.get("LAMBDAD_FAULT", "")


def fault_point(name: str) -> None:
    if name == _FAULT:
        log.error("LAMBDAD_FAULT=%s: dying here on purpose", name)
        os._exit(137)

# Deploy step 3 says how the first instance started (StartPlan.path in words).
START_WORDS = {"cell": "stem cell", "container": "container"}


@dataclass(frozen=True)
class DeployHeader:
    name: str
    size: int
    sha256: str
    overrides: Overrides
    no_cache: bool = False  # resolve requirements.txt again, not from the build cache


@dataclass(frozen=True)
class Progress:
    step: int
    title: str
    done: bool
    total: int = DEPLOY_STEPS


@dataclass(frozen=True)
class BuildOutput:
    line: str


@dataclass(frozen=True)
class DeployResult:
    name: str
    version: int
    image: str
    url: str


DeployEvent = Progress | BuildOutput | DeployResult


@dataclass(frozen=True)
class DirectResult:
    request_id: str
    status: int
    payload: bytes
    function_error: str  # "Unhandled" when the handler raised
    version: int
    cold_start: bool


@dataclass(frozen=True)
class DaemonInfo:
    """What GetVersion reports: fixed for the life of the process, so clients can
    tell which daemon (and API) they talk to without any side effect."""

    version: str
    api_version: str
    python_version: str
    docker_version: str  # "" when the engine did not say
    started_at: datetime
    domain: str
    url_template: str  # "http://{name}.localhost:8080"


@dataclass(frozen=True)
class FunctionView:
    record: FunctionRecord
    status: str  # "ready" | "idle" | "deploying"
    url: str
    instances: PoolCounts


class ControlPlane:
    def __init__(
        self,
        *,
        store: Store,
        builder: ImageBuilder,
        runtime: RuntimeManager,
        spool_dir: Path,
        image_prefix: str,
        url_template: str,
        max_code_bytes: int,
        tar_limits: TarLimits,
        keep_versions: int = 10,
        metrics: Metrics | None = None,
        logs: LogStore | None = None,
        async_backoff_s: float = 60.0,
        domain: str = "localhost",
        docker_version: str = "",
        artifacts: ArtifactStore | None = None,
        max_queued_events: int = 1000,
        max_event_bytes: int = 256 * 1024,
    ) -> None:
        self.info = DaemonInfo(
            version=lambdad.__version__, api_version="v1",
            python_version=platform.python_version(), docker_version=docker_version,
            started_at=datetime.now(UTC), domain=domain, url_template=url_template,
        )
        self.async_backoff_s = async_backoff_s
        self.max_queued_events = max_queued_events
        self.max_event_bytes = max_event_bytes
        self._artifacts = artifacts
        self._scheduler: CronRunner | None = None
        self._keyring: KeyRing | None = None
        self._on_enqueued: Callable[[], None] | None = None
        self._metrics = metrics
        self._logs = logs
        self._store = store
        self._builder = builder
        self._runtime = runtime
        self._spool = spool_dir
        self._image_prefix = image_prefix
        self._url_template = url_template
        self.max_code_bytes = max_code_bytes
        self._tar_limits = tar_limits
        self.keep_versions = keep_versions
        self._locks: dict[str, asyncio.Lock] = {}

    def url(self, name: str) -> str:
        return self._url_template.format(name=name)

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

    async def _remove_build(self, name: str, number: int, image: str) -> None:
        """Undoes a version's build: its image and its artifact."""
        await asyncio.to_thread(self._builder.remove_image, image)
        if self._artifacts is not None:
            await asyncio.to_thread(self._artifacts.remove, name, number)

    async def prune_orphan_images(self) -> int:
        """Removes images and artifacts that no live version row references.

        A deploy killed between its build and its row leaves them behind.
        """
        if self._artifacts is not None:
            live = [(v.function, v.number)
                    for versions in (await self._store.all_versions()).values()
                    for v in versions if not v.pruned]
            await asyncio.to_thread(self._artifacts.retain, live)
        referenced = await self._store.version_images()
        owned = await asyncio.to_thread(self._builder.owned_images)
        removed = 0
        for image_id, tags in owned:
            if not referenced.intersection(tags):
                await asyncio.to_thread(self._builder.remove_image, image_id)
                removed += 1
        if removed:
            log.info("reconciled: removed %d image(s) without a version", removed)
        return removed

    # Deploy

    async def deploy(
        self, header: DeployHeader, chunks: AsyncIterator[bytes], *, deployed_by: str = "local"
    ) -> AsyncIterator[DeployEvent]:
        """Receives, validates, builds and starts a new version; nothing is left on failure."""
        result = "aborted"
        try:
            async for event in self._deploy(header, chunks, deployed_by):
                if isinstance(event, DeployResult):
                    result = "success"
                yield event
        except LambdaError as exc:
            result = exc.reason
            raise
        finally:
            self._count("deploy", result)

    def _count(self, kind: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.deploys.labels(kind, result).inc()

    async def _deploy(
        self, header: DeployHeader, chunks: AsyncIterator[bytes], deployed_by: str
    ) -> AsyncIterator[DeployEvent]:
        if header.name:
            validate_name(header.name)
        if header.size > self.max_code_bytes:
            raise PayloadTooLarge(
                f"code archive is {header.size} bytes; the limit is {self.max_code_bytes}"
            )
        if len(header.sha256) != 64 or not all(c in "0123456789abcdef" for c in header.sha256):
            raise InvalidArgument("header.sha256 must be 64 lowercase hex digits")
        self._spool.mkdir(parents=True, exist_ok=True)
        archive = self._spool / f"upload-{secrets.token_hex(8)}.tar"
        try:
            await self._receive(header, chunks, archive)
            fault_point("received")
            summary = await asyncio.to_thread(tarball.validate, archive, self._tar_limits)
            summary.require_regular(tarball.MANIFEST, tarball.DOCKERFILE, tarball.REQUIREMENTS,
                                    ".dockerignore")
            manifest_text = await asyncio.to_thread(
                tarball.read_member, archive, tarball.MANIFEST, summary.format, self._tar_limits)
            manifest = parse_manifest(
                manifest_text, has_dockerfile=tarball.DOCKERFILE in summary.files
            )
            name = header.name or manifest.name
            if not name:
                raise InvalidArgument("no function name: pass --name or set name in lambda.toml")
            config = apply_overrides(manifest.config, header.overrides)
            if config.runtime != "docker" and "." in config.handler:
                module = config.handler.rsplit(".", 1)[0].replace(".", "/")
                if f"{module}.py" not in summary.files and \
                        f"{module}/__init__.py" not in summary.files:
                    raise InvalidArgument(
                        f"handler {config.handler!r}: no {module}.py in the function folder"
                    )
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:
                async for event in self._build_and_start(
                    name, config, archive, summary, header, deployed_by
                ):
                    yield event
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()

    async def _receive(
        self, header: DeployHeader, chunks: AsyncIterator[bytes], archive: Path
    ) -> None:
        digest = hashlib.sha256()
        received = 0
        with archive.open("wb") as out:
            async for chunk in chunks:
                received += len(chunk)
                if received > header.size:
                    raise InvalidArgument(
                        f"upload is longer than the {header.size} bytes the header announced"
                    )
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        if received < header.size:
            raise InvalidArgument(
                f"upload truncated: received {received} of {header.size} bytes"
            )
        if digest.hexdigest() != header.sha256:
            raise InvalidArgument("upload checksum mismatch: the sha256 of the bytes received "
                                  "differs from the header's")

    async def _build_and_start(
        self, name: str, config: object, archive: Path, summary: TarSummary,
        header: DeployHeader, deployed_by: str,
    ) -> AsyncIterator[DeployEvent]:
        from lambdad.functions import FunctionConfig  # local: keeps the signature readable

        assert isinstance(config, FunctionConfig)
        number = await self._store.next_version_number(name)
        image = f"{self._image_prefix}/{name}:v{number}"
        yield Progress(2, f'Building image "{image}"', done=False)
        built: BuiltImage | None = None
        started = time.monotonic()
        spec = BuildSpec(function=name, version=number, image=image, archive=archive,
                         runtime=config.runtime, archive_format=summary.format,
                         tar_limits=self._tar_limits, no_cache=header.no_cache)
        try:
            async for item in self._builder.build(spec):
                if isinstance(item, BuiltImage):
                    built = item
                else:
                    yield BuildOutput(item)
            assert built is not None
            build_s = time.monotonic() - started
            if self._metrics is not None:
                self._metrics.build_duration.observe(build_s)
            fault_point("built")
            yield Progress(2, f'Building image "{image}"', done=True)
            version = FunctionVersion(
                function=name, number=number, image=image, image_id=built.image_id,
                config=config, code_sha256=header.sha256, code_size=header.size,
                created_at=datetime.now(UTC), deployed_by=deployed_by,
            )
            # The path is chosen before the step is announced, so the step names it.
            plan = self._runtime.plan_start(version)
            starting = f"Starting instance ({START_WORDS[plan.path]})"
            try:
                yield Progress(3, starting, done=False)
                instance = await self._runtime.start_instance(version, plan=plan)
            finally:
                self._runtime.abandon(plan)  # a cell taken but not used (the deploy ended)
            fault_point("started")
            start_s = time.monotonic() - started - build_s
        except BaseException:
            await self._remove_build(name, number, image)
            raise
        try:
            await self._store.add_version(version, activate=True)
            fault_point("recorded")
        except BaseException:
            await self._runtime.remove_instance(instance)
            await self._remove_build(name, number, image)
            raise
        self._runtime.activate(version, instance)
        log.info("deployed function=%s version=%d image=%s code_bytes=%d unpacked_bytes=%d "
                 "build_ms=%.0f start_ms=%.0f start=%s", name, number, image, header.size,
                 summary.unpacked_bytes, build_s * 1000, start_s * 1000, instance.start_path)
        await self._apply_retention(name)
        yield Progress(3, starting, done=True)
        yield DeployResult(name=name, version=number, image=image, url=self.url(name))

    # Versions, rollback and configuration

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
        try:
            result = await self._rollback(name, to_version)
        except LambdaError as exc:
            self._count("rollback", exc.reason)
            raise
        self._count("rollback", "success")
        return result

    async def _rollback(self, name: str, to_version: int | None) -> tuple[int, int]:
        validate_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
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
            self._runtime.activate(target, instance)
        log.info("rolled back function=%s from_version=%d to_version=%d",
                 name, current, to_version)
        return to_version, current

    async def update_config(self, name: str, overrides: Overrides) -> DeployResult:
        """A new version with the active version's image and new settings."""
        try:
            result = await self._update_config(name, overrides)
        except LambdaError as exc:
            self._count("config", exc.reason)
            raise
        self._count("config", "success")
        return result

    async def _update_config(self, name: str, overrides: Overrides) -> DeployResult:
        validate_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            record = await self._store.get_function(name)
            base = record.active
            if base is None:
                raise FailedPrecondition(f"function {name!r} has no active version")
            config = apply_overrides(base.config, overrides)
            number = await self._store.next_version_number(name)
            image = f"{self._image_prefix}/{name}:v{number}"
            await asyncio.to_thread(self._builder.tag_image, base.image_id, image)
            if self._artifacts is not None:
                await asyncio.to_thread(self._artifacts.clone, name, base.number, number)
            version = replace(
                base, number=number, image=image, config=config,
                created_at=datetime.now(UTC), pruned=False,
                source_version=base.source_version or base.number,
            )
            try:
                instance = await self._runtime.start_instance(version)
            except BaseException:
                await self._remove_build(name, number, image)
                raise
            try:
                await self._store.add_version(version, activate=True, reason="config")
            except BaseException:
                await self._runtime.remove_instance(instance)
                await self._remove_build(name, number, image)
                raise
            self._runtime.activate(version, instance)
            log.info("configured function=%s version=%d image_of_version=%d",
                     name, number, version.source_version)
            await self._apply_retention(name)
        return DeployResult(name=name, version=number, image=image, url=self.url(name))

    async def _apply_retention(self, name: str) -> None:
        """Keeps the images of the newest `keep_versions` versions (and the active one);
        older images go, their rows stay as history."""
        versions = await self._store.versions(name)
        record = await self._store.get_function(name)
        active = record.active.number if record.active else None
        newest = {v.number for v in versions[-self.keep_versions:]}
        prune = [v for v in versions
                 if not v.pruned and v.number not in newest and v.number != active]
        for version in prune:
            await self._remove_build(name, version.number, version.image)
            self._runtime.mark_pruned(version)
        await self._store.mark_pruned(name, [v.number for v in prune])
        if prune:
            log.info("pruned function=%s versions=%s", name,
                     ",".join(str(v.number) for v in prune))

    # Queries

    async def list_functions(self) -> list[FunctionView]:
        return [self._view(record) for record in await self._store.list_functions()]

    async def get_function(self, name: str) -> FunctionView:
        validate_name(name)
        return self._view(await self._store.get_function(name))

    def _view(self, record: FunctionRecord) -> FunctionView:
        lock = self._locks.get(record.name)
        if lock is not None and lock.locked():
            status = "deploying"
        elif self._runtime.is_warm(record.name):
            status = "ready"
        else:
            status = "idle"
        return FunctionView(record=record, status=status, url=self.url(record.name),
                            instances=self._runtime.counts(record.name))

    # Invoke and delete

    async def invoke(
        self, name: str, payload: bytes, *, version: int | None = None
    ) -> DirectResult:
        """A synchronous invocation with a JSON payload, as `aws lambda invoke` does.
        The payload is checked here: a runtime given JSON it cannot parse (nested past
        its recursion limit) breaks the exchange and loses its instance."""
        validate_name(name)
        parse_json(payload or b"{}", "the payload")
        request_id = str(uuid.uuid4())
        request = InvocationRequest(
            function=name, method=b"POST", target=b"/",
            headers=[(b"content-type", b"application/json")],
            body=payload or b"{}", invocation_type="direct", request_id=request_id,
            version=version,
        )
        started = time.monotonic()
        try:
            response = await self._runtime.invoke(request)
        except LambdaError as exc:
            if not isinstance(exc, NotFound):
                self._observe(name, status_for(exc)[0], started)
            raise
        body = await response.read()
        function_error = ""
        for key, value in response.headers:
            if key.lower() == b"lambda-function-error":
                function_error = value.decode(errors="replace")
        self._observe(name, response.status, started, start=response.start,
                      function_error=bool(function_error))
        return DirectResult(request_id=request_id, status=response.status, payload=body,
                            function_error=function_error, version=response.version,
                            cold_start=response.cold_start)

    async def stats(
        self, name: str | None
    ) -> tuple[list[tuple[str, list[WindowStats], int, int]], list[tuple[ClassStats, int]]]:
        """(function, its 5m/1h/1d windows, instances now, their memory) for one function or
        all, and (stem-cell class counts, their memory) for every class."""
        if name:
            validate_name(name)
            names = [(await self._store.get_function(name)).name]
        else:
            names = [record.name for record in await self._store.list_functions()]
        await self.flush_stats()
        now_minute = int(time.time() // 60)
        rows = await self._store.stats_since(now_minute - 1440, name or None)
        memory, cell_memory = await self._runtime.memory()
        result = []
        for function in names:
            mine = [row for row in rows if row.function == function]
            result.append((function, summarize(mine, now_minute),
                           self._runtime.instance_count(function), memory.get(function, 0)))
        cells = [(c, cell_memory.get(c.cell_class, 0)) for c in self._runtime.cell_stats()]
        return result, cells

    async def flush_stats(self) -> None:
        """Moves the in-memory per-minute rows into the store (periodic, and at stop)."""
        if self._metrics is not None:
            for name in self._runtime.routed():
                self._metrics.stats.instances(name, self._runtime.instance_count(name),
                                              time.time())
            await self._store.add_stats(self._metrics.stats.drain())

    async def logs(self, query: LogQuery, *, follow: bool) -> AsyncIterator[LogEntry]:
        """Kept lines that match, oldest first; with `follow`, then new ones until cancelled."""
        validate_name(query.function)
        await self._store.get_function(query.function)  # NotFound for an unknown name
        store = self._logs
        if store is None:
            return
        queue = store.subscribe(query.function) if follow else None
        subscribed = datetime.now(UTC)
        try:
            backlog = await store.read(query)
            # Lines that arrived after subscribing can be in the backlog too: skip those.
            recent = {e for e in backlog if e.time >= subscribed - timedelta(seconds=5)}
            for entry in backlog:
                yield entry
            if queue is None:
                return
            live = replace(query, since=None, tail=0)
            while True:
                entry = await queue.get()
                if live.matches(entry) and entry not in recent:
                    yield entry
        finally:
            if queue is not None:
                store.unsubscribe(query.function, queue)

    # API keys

    def attach_keyring(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    async def create_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        """The new key and its secret, which is shown once and never stored."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument("key name must be 1-64 letters, digits, dashes or underscores")
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        key_id, token = new_secret()
        salt = secrets.token_hex(16)
        key = ApiKey(id=key_id, name=name, role=role, salt=salt,
                     digest=key_digest(salt, token.split("_", 2)[2]), created_at=time.time())
        await self._store.keys.insert(key)
        if self._keyring is not None:
            self._keyring.put(key)
        log.info("api key created id=%s name=%s role=%s", key_id, name, role)
        return key, token

    async def list_keys(self) -> list[ApiKey]:
        keys: list[ApiKey] = await self._store.keys.all()
        return keys

    async def revoke_key(self, name_or_id: str) -> ApiKey:
        key: ApiKey = await self._store.keys.revoke(name_or_id, time.time())
        if self._keyring is not None:
            self._keyring.put(key)
        log.info("api key revoked id=%s name=%s", key.id, key.name)
        return key

    # Schedules

    def attach_scheduler(self, runner: CronRunner) -> None:
        self._scheduler = runner

    async def create_schedule(self, name: str, cron: str, tz: str, data: bytes,
                              overlap: str) -> Schedule:
        validate_name(name)
        await self._store.get_function(name)
        cron_validate(cron.strip(), tz or "UTC", data or b"{}", overlap or "skip")
        schedule = Schedule(id=secrets.token_hex(8), function=name, cron=cron.strip(),
                            tz=tz or "UTC", data=data or b"{}", overlap=overlap or "skip",
                            created_at=time.time())
        # Under the function's lock: a delete between the check and the insert would
        # fail the insert (foreign key) or leave the cron runner a schedule without rows.
        async with self._locks.setdefault(name, asyncio.Lock()):
            await self._store.get_function(name)  # again: it may be gone since
            await self._store.schedules.insert(schedule)
            if self._scheduler is not None:
                self._scheduler.add(schedule)
        log.info("schedule created id=%s function=%s cron=%r tz=%s", schedule.id, name,
                 schedule.cron, schedule.tz)
        return schedule

    async def schedules(self, name: str) -> list[tuple[Schedule, float | None, str]]:
        """(schedule, next run, status of its last invocation)."""
        if name:
            validate_name(name)
            await self._store.get_function(name)
        found: list[Schedule] = await self._store.schedules.all(name)
        result = []
        for schedule in found:
            status = (await self._store.invocations.status(schedule.last_invocation)
                      if schedule.last_invocation else "")
            next_run = self._scheduler.next_run(schedule.id) if self._scheduler else None
            result.append((schedule, next_run, status))
        return result

    async def delete_schedule(self, prefix: str) -> Schedule:
        schedule: Schedule = await self._store.schedules.get(prefix)
        await self._store.schedules.delete(schedule.id)
        if self._scheduler is not None:
            self._scheduler.remove(schedule.id)
        log.info("schedule deleted id=%s function=%s", schedule.id, schedule.function)
        return schedule

    async def enqueue_scheduled(self, schedule: Schedule, when: float, catch_up: bool) -> str:
        return await self.enqueue(schedule.function,
                                  event_payload(schedule, when, catch_up=catch_up),
                                  source="schedule")

    # Asynchronous invocations

    async def enqueue(self, name: str, payload: bytes, *, source: str) -> str:
        """Writes the event to the store before returning its id (the 202 comes after).

        Anyone who can reach a public function can queue events for it, so the queue is
        bounded: at most `max_queued_events` waiting per function (Throttled beyond, which
        is 429 with Retry-After at the gateway and RESOURCE_EXHAUSTED over gRPC), each at
        most `max_event_bytes`, so one function's queue holds a bounded amount of disk."""
        validate_name(name)
        version = self._runtime.active_version(name)
        if version is None:
            raise NotFound(f"no function named {name!r}")
        body = payload or b"{}"
        if len(body) > self.max_event_bytes:
            raise PayloadTooLarge(
                f"an asynchronous invocation's payload is limited to {self.max_event_bytes} "
                f"bytes (this one has {len(body)})")
        parse_json(body, "an asynchronous invocation's payload")
        now = time.time()
        invocation = AsyncInvocation(
            id=str(uuid.uuid4()), function=name, payload=body, source=source,
            status="queued", attempts=0, created_at=now, next_attempt_at=now,
        )
        if not await self._store.invocations.insert(invocation, self.max_queued_events):
            if self._metrics is not None:
                self._metrics.async_refused.labels(name, source).inc()
            # A queued event moves on when a delivery ends, at the latest after the timeout.
            raise Throttled(
                f"function {name!r} already has {self.max_queued_events} asynchronous "
                "invocations waiting, the most lambdad queues per function "
                "(max_queued_events); try again later",
                retry_after=min(60, max(1, version.config.timeout_s)))
        if self._on_enqueued is not None:
            self._on_enqueued()
        return invocation.id

    def set_enqueue_listener(self, listener: Callable[[], None]) -> None:
        self._on_enqueued = listener

    async def deliver(self, invocation: AsyncInvocation) -> tuple[bool, int | None, bytes | None,
                                                                   str]:
        """One attempt of a queued event, as invocation type `event`."""
        request = InvocationRequest(
            function=invocation.function, method=b"POST", target=b"/",
            headers=[(b"content-type", b"application/json")], body=invocation.payload,
            invocation_type="event", request_id=invocation.id,
        )
        started = time.monotonic()
        try:
            response = await self._runtime.invoke(request)
        except LambdaError as exc:
            if not isinstance(exc, NotFound):
                self._observe(invocation.function, status_for(exc)[0], started, kind="event")
            return False, status_for(exc)[0], None, exc.message
        body = await response.read()
        failed = any(key.lower() == b"lambda-function-error" for key, _ in response.headers)
        self._observe(invocation.function, response.status, started, start=response.start,
                      function_error=failed, kind="event")
        ok = 200 <= response.status < 300 and not failed
        error = "" if ok else body.decode("utf-8", "replace")[:2000]
        return ok, response.status, body[:256 * 1024], error

    def retry_policy(self, name: str) -> RetryPolicy:
        version = self._runtime.active_version(name)
        if version is None:
            return RetryPolicy(retries=0, backoff_s=self.async_backoff_s)
        return RetryPolicy(retries=version.config.async_retries,
                           max_event_age_s=version.config.async_max_age_s,
                           backoff_s=self.async_backoff_s)

    def delivery_limit(self, name: str) -> int:
        version = self._runtime.active_version(name)
        if version is None:
            return 1
        scaling = version.config.scaling
        return scaling.max_instances * scaling.concurrency

    async def invocations(self, name: str, status: str, limit: int) -> list[AsyncInvocation]:
        validate_name(name)
        await self._store.get_function(name)
        if status and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}")
        result: list[AsyncInvocation] = await self._store.invocations.of_function(
            name, status, limit or 100)
        return result

    async def invocation(self, prefix: str) -> AsyncInvocation:
        found: AsyncInvocation = await self._store.invocations.get(prefix)
        return found

    async def redrive(self, prefix: str, all_failed_of: str) -> int:
        if all_failed_of:
            validate_name(all_failed_of)
            await self._store.get_function(all_failed_of)
            ids = await self._store.invocations.failed_ids(all_failed_of)
        else:
            found = await self.invocation(prefix)
            if found.status != "failed":
                raise FailedPrecondition(
                    f"invocation {found.id} is {found.status}; only failed ones are redriven")
            ids = [found.id]
        count: int = await self._store.invocations.redrive(ids, time.time())
        if count and self._on_enqueued is not None:
            self._on_enqueued()
        return count

    def _observe(self, name: str, status: int, started: float, *, start: str = "",
                 function_error: bool = False, kind: str = "direct") -> None:
        if self._metrics is not None:
            self._metrics.invocation(name, kind, status, time.monotonic() - started,
                                     start=start, function_error=function_error)

    async def delete(self, name: str) -> tuple[int, int]:
        """Removes rows, instances and images; returns (versions, instances) removed.

        Under the function's lock, as deploy, rollback and config changes are: a deploy
        that took the lock halfway through would number its version after the deleted
        rows (v1 again) and lose its image tag and artifact to this clean-up. A change
        under way is not waited for (a build can take minutes): the delete is refused.
        """
        validate_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            raise FailedPrecondition(
                f"function {name!r} is being deployed, rolled back, reconfigured or deleted; "
                "try again when that ends")
        async with lock:  # free, so taken at once: nothing can slip in after the check
            versions = await self._store.delete_function(name)
            instances = await self._runtime.remove_function(name)
            if self._logs is not None:
                await self._logs.delete(name)
            if self._scheduler is not None:
                self._scheduler.remove_function(name)
            for version in versions:
                await asyncio.to_thread(self._builder.remove_image, version.image)
            if self._artifacts is not None:
                await asyncio.to_thread(self._artifacts.remove_function, name)
        log.info("deleted function=%s versions=%d instances=%d", name, len(versions), instances)
        return len(versions), instances
