"""Shared fakes for unit tests of the orchestrators: a runtime manager and an image builder
that do in memory what the real ones do with Docker, and `control_parts`, the control
plane wired as lambdad wires it around a real Store on a temporary SQLite file, a real
ArtifactStore, KeyRing, Metrics, AsyncQueue and CronRunner (not started).

The fakes record what they were asked to do, so a test can check what a use case left
behind; `fail_*` fields make the next such call raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lambdad.auth import KeyRing
from lambdad.build import ArtifactStore, BuildSpec, BuiltImage, TarLimits
from lambdad.control import AsyncQueue, ControlPlane, DeployHeader, Invoker
from lambdad.errors import BuildFailed, NotFound
from lambdad.functions import FunctionVersion, Overrides
from lambdad.metrics import Metrics
from lambdad.queue.intake import Intake
from lambdad.queue.worker import AsyncWorker
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.manager import PoolCounts, StartPlan
from lambdad.scheduler.runner import CronRunner
from lambdad.store import Store


@dataclass
class FakeInstance:
    version: FunctionVersion
    start_path: str = "container"
    dead: bool = False


class FakeRuntime:
    """The RuntimeManager surface the control plane uses (lambdad.control.ports.Runtime)."""

    def __init__(self) -> None:
        self.active: dict[str, FunctionVersion] = {}
        self.known: dict[tuple[str, int], FunctionVersion] = {}
        self.instances: list[FakeInstance] = []  # started and not removed
        self.removed: list[FakeInstance] = []
        self.pruned: list[tuple[str, int]] = []
        self.abandoned: list[StartPlan] = []
        self.warm_pinned: set[tuple[str, int]] = set()
        self.fail_start: Exception | None = None
        self.invoked: list[InvocationRequest] = []
        # What `invoke` answers: a response, or an exception to raise.
        self.answer: Callable[[InvocationRequest], InvocationResponse] = ok_response

    # Routing state
    def know(self, version: FunctionVersion) -> None:
        self.known[(version.function, version.number)] = version

    def register(self, version: FunctionVersion) -> None:
        self.know(version)
        self.active[version.function] = version

    def active_version(self, name: str) -> FunctionVersion | None:
        return self.active.get(name)

    def known_version(self, name: str, number: int) -> FunctionVersion | None:
        return self.known.get((name, number))

    def routed(self) -> list[str]:
        return sorted(self.active)

    def is_warm(self, name: str) -> bool:
        return any(i.version.function == name for i in self.instances)

    def counts(self, name: str) -> PoolCounts:
        return PoolCounts(self.instance_count(name), 0, 0, 0, 0)

    def instance_count(self, name: str) -> int:
        return sum(1 for i in self.instances if i.version.function == name)

    def cell_stats(self) -> list[Any]:
        return []

    async def memory(self) -> tuple[dict[str, int], dict[Any, int]]:
        return {}, {}

    # Versions going live, and going away
    def plan_start(self, version: FunctionVersion) -> StartPlan:
        return StartPlan(None, None)

    def abandon(self, plan: StartPlan) -> None:
        self.abandoned.append(plan)

    async def start_instance(self, version: FunctionVersion, *,
                             plan: StartPlan | None = None) -> FakeInstance:
        await asyncio.sleep(0)
        if self.fail_start is not None:
            failure, self.fail_start = self.fail_start, None
            raise failure
        instance = FakeInstance(version)
        self.instances.append(instance)
        return instance

    async def remove_instance(self, instance: FakeInstance) -> None:
        self.instances.remove(instance)
        self.removed.append(instance)

    def has_warm_pinned(self, version: FunctionVersion) -> bool:
        return (version.function, version.number) in self.warm_pinned

    def activate(self, version: FunctionVersion, instances: Sequence[FakeInstance] = ()) -> None:
        """As the real one: new requests go to `version`; the old instances drain and stop."""
        self.know(version)
        self.active[version.function] = version
        for old in [i for i in self.instances if i.version.function == version.function
                    and i.version.number != version.number]:
            self.instances.remove(old)
            self.removed.append(old)

    def mark_pruned(self, version: FunctionVersion) -> None:
        self.pruned.append((version.function, version.number))
        self.known[(version.function, version.number)] = replace(version, pruned=True)

    async def remove_function(self, name: str) -> int:
        gone = [i for i in self.instances if i.version.function == name]
        for instance in gone:
            await self.remove_instance(instance)
        self.active.pop(name, None)
        return len(gone)

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        self.invoked.append(request)
        await asyncio.sleep(0)
        if request.function not in self.active:
            raise NotFound(f"no function named {request.function!r}")
        return self.answer(request)


def response(status: int = 200, body: bytes = b'{"ok": true}', *, start: str = "warm",
             function_error: str = "", version: int = 1) -> InvocationResponse:
    headers = [(b"content-type", b"application/json")]
    if function_error:
        headers.append((b"Lambda-Function-Error", function_error.encode()))

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return InvocationResponse(status=status, headers=headers, version=version,
                              cold_start=start != "warm", body=chunks(), start=start)


def ok_response(request: InvocationRequest) -> InvocationResponse:
    return response()


def failing(exc: Exception) -> Callable[[InvocationRequest], InvocationResponse]:
    def answer(request: InvocationRequest) -> InvocationResponse:
        raise exc
    return answer


class FakeBuilder:
    """The ImageBuilder surface (lambdad.control.ports.Builder): a build writes the
    artifact as the real one does and tags an image in `images` (tag -> image id)."""

    def __init__(self, artifacts: ArtifactStore | None, scratch: Path) -> None:
        self._artifacts = artifacts
        self._scratch = scratch
        self.images: dict[str, str] = {}
        self.removed: list[str] = []
        self.fail_build: str = ""  # the BuildFailed message of the next build
        self.builds: list[BuildSpec] = []
        # True: a standard-runtime build also tags an image, as lambdad did before issue
        # 16 (its versions are still stored and served); False: the artifact alone, as now.
        self.images_for_standard = True

    async def build(self, spec: BuildSpec) -> AsyncIterator[str | BuiltImage]:
        self.builds.append(spec)
        yield "Step 1/1 : COPY . /var/task"
        if self.fail_build:
            message, self.fail_build = self.fail_build, ""
            raise BuildFailed(message)
        image_id = "sha256:" + hashlib.sha256(spec.image.encode()).hexdigest()
        if self._artifacts is not None and spec.runtime != "docker":
            code = self._scratch / f"{spec.function}-{spec.version}"
            code.mkdir(parents=True, exist_ok=True)
            (code / "handler.py").write_text("def handler(event, context): return event\n")
            self._artifacts.save(spec.function, spec.version, code, None, "sha256:runtime")
            if not self.images_for_standard:
                yield BuiltImage("", "")
                return
        self.images[spec.image] = image_id
        yield BuiltImage(spec.image, image_id)

    def remove_image(self, image: str) -> None:
        self.removed.append(image)
        for tag, image_id in list(self.images.items()):
            if image in (tag, image_id):
                del self.images[tag]

    def tag_image(self, image_id: str, tag: str) -> None:
        self.images[tag] = image_id

    def owned_images(self) -> list[tuple[str, list[str]]]:
        by_id: dict[str, list[str]] = {}
        for tag, image_id in self.images.items():
            by_id.setdefault(image_id, []).append(tag)
        return sorted(by_id.items())


def code_archive(handler: str = "handler.handler", name: str = "") -> bytes:
    """A function folder as lambdactl would upload it: lambda.toml and handler.py."""
    toml = f'handler = "{handler}"\n' + (f'name = "{name}"\n' if name else "")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for member, data in (("lambda.toml", toml.encode()),
                             ("handler.py", b"def handler(event, context):\n    return event\n")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def header_for(data: bytes, name: str = "greet", overrides: Overrides | None = None,
               **kwargs: Any) -> DeployHeader:
    return DeployHeader(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        overrides=overrides or Overrides(), **kwargs)


async def chunked(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@dataclass
class ControlParts:
    store: Store
    runtime: FakeRuntime
    builder: FakeBuilder
    artifacts: ArtifactStore
    metrics: Metrics
    keyring: KeyRing
    invoker: Invoker
    queue: AsyncQueue
    worker: AsyncWorker
    cron: CronRunner
    control: ControlPlane
    wake: asyncio.Event
    spool: Path

    async def deploy(self, name: str = "greet", **kwargs: Any) -> list[Any]:
        data = code_archive()
        return [event async for event in self.control.deploy(
            header_for(data, name, **kwargs), chunked(data))]

    def sample(self, metric: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(metric, labels) or 0.0


def run_with_parts(tmp_path: Path, scenario: Callable[[ControlParts], Awaitable[None]],
                   **options: Any) -> None:
    """Runs `scenario` on a fresh event loop with fresh parts (see `control_parts`)."""
    async def main() -> None:
        async with control_parts(tmp_path, **options) as parts:
            await scenario(parts)
    asyncio.run(main())


@contextlib.asynccontextmanager
async def control_parts(tmp_path: Path, *, keep_versions: int = 10,
                        max_queued_events: int = 1000,
                        max_event_bytes: int = 256 * 1024) -> AsyncIterator[ControlParts]:
    """The control plane wired in lambdad's order (see daemon.py), with fakes for Docker."""
    store = Store(tmp_path / "lambda.db")
    await store.open()
    artifacts = ArtifactStore(tmp_path / "artifacts")
    artifacts.prepare()
    runtime = FakeRuntime()
    builder = FakeBuilder(artifacts, tmp_path / "build")
    metrics = Metrics()
    keyring = KeyRing([])
    invoker = Invoker(runtime, metrics)
    intake = Intake(store.invocations)
    wake = intake.wake
    queue = AsyncQueue(store=store, runtime=runtime, invoker=invoker, intake=intake,
                       metrics=metrics, backoff_s=30.0, max_queued_events=max_queued_events,
                       max_event_bytes=max_event_bytes)
    worker = AsyncWorker(store.invocations, queue.deliver, queue.retry_policy,
                         queue.delivery_limit, intake=intake)

    async def status_of(invocation_id: str) -> str:
        status: str = await store.invocations.status(invocation_id)
        return status

    cron = CronRunner(store.schedules, queue.enqueue_scheduled, status_of, worker.cancel)
    spool = tmp_path / "spool"
    control = ControlPlane(
        store=store, builder=builder, runtime=runtime, invoker=invoker, queue=queue,
        cron=cron, keyring=keyring, spool_dir=spool, image_prefix="lambda-fn",
        url_template="http://{name}.localhost:8080", max_code_bytes=1 << 20,
        tar_limits=TarLimits(max_unpacked_bytes=1 << 20), keep_versions=keep_versions,
        metrics=metrics, artifacts=artifacts,
    )
    try:
        yield ControlParts(store, runtime, builder, artifacts, metrics, keyring, invoker,
                           queue, worker, cron, control, wake, spool)
    finally:
        await store.close()


__all__ = ["ControlParts", "FakeBuilder", "FakeInstance", "FakeRuntime", "chunked",
           "code_archive", "control_parts", "failing", "header_for", "response",
           "run_with_parts"]
