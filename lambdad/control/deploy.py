"""Deploy: receive an upload, validate it, build it, start its first instances, record it.

Every deploy starts one instance of the new version, its code loaded (imported), before
traffic moves to it; `--prewarm N` starts N. Nothing is left on failure: the spool file
always goes; an image and artifact built for a version that never got its row are removed,
and so are the instances started for it, and traffic stays on the version that was live.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from lambdad.build import ArtifactStore, BuildSpec, BuiltImage, TarLimits, TarSummary, tarball
from lambdad.build.blobs import BlobStore, publish_artifact
from lambdad.control.builds import Builds
from lambdad.control.faults import fault_point
from lambdad.control.locks import FunctionLocks
from lambdad.control.model import BuildOutput, DeployEvent, DeployHeader, DeployResult, Progress
from lambdad.control.ports import Builder, Runtime
from lambdad.errors import InvalidArgument, LambdaError, PayloadTooLarge
from lambdad.functions import FunctionConfig, FunctionVersion, validate_name
from lambdad.functions.manifest import apply_overrides, parse_manifest
from lambdad.metrics import Metrics
from lambdad.runtime.manager import StartPlan
from lambdad.runtime.pool import Instance
from lambdad.runtime.stops import finish
from lambdad.store import Store

log = logging.getLogger("lambdad.control")

# Deploy step 3 says how the first instance started (StartPlan.path in words).
START_WORDS = {"cell": "stem cell", "container": "container"}

T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """Where uploads are spooled and how big they may be."""

    spool_dir: Path
    max_code_bytes: int
    tar_limits: TarLimits


def count(metrics: Metrics | None, kind: str, result: str) -> None:
    """One deploy, rollback or config change ended with `result` (success or a reason)."""
    if metrics is not None:
        metrics.deploys.labels(kind, result).inc()


async def counted(metrics: Metrics | None, kind: str, work: Awaitable[T]) -> T:
    """`work`'s result, counted as a success, or its LambdaError counted by reason."""
    try:
        result = await work
    except LambdaError as exc:
        count(metrics, kind, exc.reason)
        raise
    count(metrics, kind, "success")
    return result


class Deployer:
    def __init__(
        self, *, store: Store, builder: Builder, runtime: Runtime, builds: Builds,
        locks: FunctionLocks, upload: Upload, image_prefix: str, url: Callable[[str], str],
        retain: Callable[[str], Awaitable[None]], metrics: Metrics | None = None,
        blobs: BlobStore | None = None, artifacts: ArtifactStore | None = None,
    ) -> None:
        self._store = store
        # Cluster mode: what other nodes need to run the version goes to the database
        # before its row (build/blobs.py); None on SQLite.
        self._blobs = blobs
        self._artifacts = artifacts
        self._builder = builder
        self._runtime = runtime
        self._builds = builds
        self._locks = locks
        self._upload = upload
        self._image_prefix = image_prefix
        self._url = url
        self._retain = retain  # the retention policy, run after a version goes live
        self._metrics = metrics

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
            count(self._metrics, "deploy", result)

    async def _deploy(
        self, header: DeployHeader, chunks: AsyncIterator[bytes], deployed_by: str
    ) -> AsyncIterator[DeployEvent]:
        upload = self._upload
        if header.name:
            validate_name(header.name)
        if header.size > upload.max_code_bytes:
            raise PayloadTooLarge(
                f"code archive is {header.size} bytes; the limit is {upload.max_code_bytes}"
            )
        if len(header.sha256) != 64 or not all(c in "0123456789abcdef" for c in header.sha256):
            raise InvalidArgument("header.sha256 must be 64 lowercase hex digits")
        upload.spool_dir.mkdir(parents=True, exist_ok=True)
        archive = upload.spool_dir / f"upload-{secrets.token_hex(8)}.tar"
        timings: dict[str, float] = {}  # seconds per step, for the deploy's log line
        try:
            mark = time.monotonic()
            await receive(header, chunks, archive)
            timings["receive"] = time.monotonic() - mark
            mark = time.monotonic()
            fault_point("received")
            summary = await asyncio.to_thread(tarball.validate, archive, upload.tar_limits)
            summary.require_regular(tarball.MANIFEST, tarball.DOCKERFILE, tarball.REQUIREMENTS,
                                    ".dockerignore")
            manifest_text = await asyncio.to_thread(
                tarball.read_member, archive, tarball.MANIFEST, summary.format,
                upload.tar_limits)
            manifest = parse_manifest(
                manifest_text, has_dockerfile=tarball.DOCKERFILE in summary.files
            )
            name = header.name or manifest.name
            if not name:
                raise InvalidArgument("no function name: pass --name or set name in lambda.toml")
            config = apply_overrides(manifest.config, header.overrides)
            check_handler(config, summary)
            prewarm_count(header.prewarm, config)  # refused before anything is built
            timings["validate"] = time.monotonic() - mark
            async with self._locks.of(name):
                async for event in self._build_and_start(
                    name, config, archive, summary, header, deployed_by, timings
                ):
                    yield event
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()

    async def _build_and_start(
        self, name: str, config: FunctionConfig, archive: Path, summary: TarSummary,
        header: DeployHeader, deployed_by: str, timings: dict[str, float],
    ) -> AsyncIterator[DeployEvent]:
        number = await self._store.next_version_number(name)
        image = f"{self._image_prefix}/{name}:v{number}"
        # A standard runtime's version is its artifact (code and wheels) on the shared
        # runtime image; only a Dockerfile function gets an image of its own.
        building = (f'Building image "{image}"' if config.runtime == "docker"
                    else f"Building {name} v{number} (code and wheels, no image)")
        yield Progress(2, building, done=False)
        built: BuiltImage | None = None
        started = time.monotonic()
        spec = BuildSpec(function=name, version=number, image=image, archive=archive,
                         runtime=config.runtime, archive_format=summary.format,
                         tar_limits=self._upload.tar_limits, no_cache=header.no_cache)
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
            artifact_sha, context_sha = await self._publish(name, number, config, archive)
            yield Progress(2, building, done=True)
            image = built.image  # "" when the version has no image of its own
            version = FunctionVersion(
                function=name, number=number, image=image, image_id=built.image_id,
                config=config, code_sha256=header.sha256, code_size=header.size,
                created_at=datetime.now(UTC), deployed_by=deployed_by,
                artifact_sha256=artifact_sha, context_sha256=context_sha,
            )
            # The paths are chosen before the step is announced, so the step names them.
            plans = [self._runtime.plan_start(version)
                     for _ in range(prewarm_count(header.prewarm, config))]
            starting = start_title([plan.path for plan in plans], header.prewarm)
            try:
                yield Progress(3, starting, done=False)
                instances = await self._start_all(version, plans)
            finally:
                for plan in plans:  # a cell taken but not used (the deploy ended)
                    self._runtime.abandon(plan)
            fault_point("started")
            start_s = time.monotonic() - started - build_s
        except BaseException:  # to its end even if cancelled meanwhile (see _remove_all)
            await finish(self._builds.remove(name, number, image))
            raise
        try:
            await self._store.add_version(version, activate=True)
            fault_point("recorded")
        except BaseException:
            await self._remove_all(instances)
            await finish(self._builds.remove(name, number, image))
            raise
        self._runtime.activate(version, instances)
        log.info("deployed function=%s version=%d image=%s code_bytes=%d unpacked_bytes=%d "
                 "receive_ms=%.0f validate_ms=%.0f build_ms=%.0f start_ms=%.0f "
                 "record_ms=%.0f start=%s", name, number, image or "-", header.size,
                 summary.unpacked_bytes, timings.get("receive", 0) * 1000,
                 timings.get("validate", 0) * 1000, build_s * 1000, start_s * 1000,
                 (time.monotonic() - started - build_s - start_s) * 1000,
                 ",".join(instance.start_path for instance in instances))
        await self._retain(name)
        yield Progress(3, starting, done=True)
        yield DeployResult(name=name, version=number, image=image, url=self._url(name))

    async def _publish(self, name: str, number: int, config: FunctionConfig,
                       archive: Path) -> tuple[str, str]:
        """Cluster mode: stores the version's artifact (a standard runtime) or its
        validated build context (a Dockerfile function) as a blob; returns (artifact sha,
        context sha). On its own connection in a worker thread, not the store thread. A
        blob left by a deploy that fails later is shared by content or collected."""
        if self._blobs is None:
            return "", ""
        started = time.monotonic()
        if config.runtime == "docker":
            sha = await asyncio.to_thread(self._blobs.put, "context", archive)
            result = ("", sha)
        else:
            assert self._artifacts is not None
            folder = self._artifacts.find(name, number)
            if folder is None:
                return "", ""
            sha = await asyncio.to_thread(publish_artifact, self._blobs, folder,
                                          self._upload.spool_dir)
            result = (sha, "")
        log.info("stored blob function=%s version=%d blob=%s store_ms=%.0f", name, number,
                 sha[:12], (time.monotonic() - started) * 1000)
        return result

    async def _start_all(self, version: FunctionVersion, plans: list[StartPlan]) -> list[Instance]:
        """Starts one instance per plan at once, each ready only once its code is imported.
        All or none: when one fails, the others are still waited for (an import error
        fails them all alike, and a start left to finish cannot leave a container
        behind), then removed, and the first failure is raised."""
        tasks = [asyncio.ensure_future(self._runtime.start_instance(version, plan=plan))
                 for plan in plans]
        try:
            await asyncio.wait(tasks)
        except BaseException:  # the deploy was cancelled: so are its starts
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._remove_all([t.result() for t in tasks
                                    if not t.cancelled() and t.exception() is None])
            raise
        failures = [exc for t in tasks if (exc := t.exception()) is not None]
        started = [t.result() for t in tasks if t.exception() is None]
        if failures:
            await self._remove_all(started)
            raise failures[0]
        return started

    async def _remove_all(self, instances: list[Instance]) -> None:
        """Removes a deploy's instances to their end even if the deploy is cancelled
        meanwhile (the client gone, the daemon's drain grace over: a stop's grace lasts up
        to a second): no pool knows of them, so one cut short would run on until lambdad
        restarts. The cancellation comes once they are removed."""
        await finish(asyncio.gather(*(self._runtime.remove_instance(i) for i in instances)))


def prewarm_count(prewarm: int, config: FunctionConfig) -> int:
    """How many instances a deploy starts before traffic moves: `--prewarm N`, else the
    one every deploy starts; never more than the version may run."""
    limit = config.scaling.max_instances
    if prewarm > limit:
        raise InvalidArgument(
            f"--prewarm {prewarm} is more than the function's max_instances ({limit}): "
            f"pre-warm at most {limit}, or raise max_instances")
    return max(1, prewarm)


def start_title(paths: list[str], prewarm: int) -> str:
    """Step 3's title, naming how each instance starts: "Starting instance (stem cell)",
    or with --prewarm "Pre-warming 3 instances (2 stem cells, 1 container)"."""
    words = []
    for path in dict.fromkeys(paths):  # cells first when the plans took any: their order
        n = paths.count(path)
        word = START_WORDS[path]
        words.append(word if len(paths) == 1 else f"{n} {word}{'s' if n > 1 else ''}")
    if not prewarm:
        return f"Starting instance ({', '.join(words)})"
    many = "s" if len(paths) > 1 else ""
    return f"Pre-warming {len(paths)} instance{many} ({', '.join(words)})"


def check_handler(config: FunctionConfig, summary: TarSummary) -> None:
    """A handler `pkg.mod.fn` needs pkg/mod.py (or its package) in the archive."""
    if config.runtime != "docker" and "." in config.handler:
        module = config.handler.rsplit(".", 1)[0].replace(".", "/")
        if f"{module}.py" not in summary.files and f"{module}/__init__.py" not in summary.files:
            raise InvalidArgument(
                f"handler {config.handler!r}: no {module}.py in the function folder"
            )


async def receive(header: DeployHeader, chunks: AsyncIterator[bytes], archive: Path) -> None:
    """Spools the upload to `archive`, checking its length and sha256 against the header."""
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
