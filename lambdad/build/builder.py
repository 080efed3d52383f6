"""Turns a validated code archive into a function image, `<image_prefix>/<name>:v<N>`.

The build's order of steps: extract, resolve requirements (`sandbox`, or the `DepsCache`),
write the Dockerfile, `docker build` under its limits (`watchdog`), check the image
(`images`). Blocking work (pip, the docker SDK) runs in a build thread; build output
comes back to the event loop line by line through a queue so the CLI sees it as it
happens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from lambdad import labels
from lambdad.build import extraction, sandbox, tarball
from lambdad.build.artifacts import DEPS, TASK, ArtifactSink, normalize_modes
from lambdad.build.depcache import DepsCache, cache_key, wheelhouse_fingerprint
from lambdad.build.dockerfile import generated_dockerfile, label_instruction
from lambdad.build.images import FunctionImages
from lambdad.build.limits import MIB, BuildLimits, OutputCap
from lambdad.build.pipcommand import pip_settings, pip_version
from lambdad.build.requirements import MAX_BYTES as MAX_REQUIREMENTS_BYTES
from lambdad.build.requirements import parse_requirements
from lambdad.build.tarrules import TarLimits
from lambdad.build.watchdog import BuildWatchdog, DiskFloor, docker_root
from lambdad.errors import BuildFailed, InvalidArgument, Unavailable

log = logging.getLogger("lambdad.build.builder")

_LAYER = re.compile(r"^[0-9a-f]{12,64}$")
MAX_DOCKERFILE_BYTES = 1024 * 1024
DOCKERIGNORE = ".dockerignore"


@dataclass(frozen=True)
class BuildSpec:
    function: str
    version: int
    image: str  # repository:tag to create
    archive: Path  # validated tarball
    runtime: str  # "python3.11" or "docker"
    archive_format: str  # as `tarball.validate` reported it: the archive is read as that
    tar_limits: TarLimits = field(default_factory=TarLimits)  # what it was validated with
    no_cache: bool = False  # resolve requirements.txt again, not from the DepsCache
    stamp: str = ""  # FunctionVersion.stamp, labelled (a node's own build of a stored context)


@dataclass(frozen=True)
class BuiltImage:
    """What a build made: an image, or for a standard runtime with an artifact store no
    image at all (both empty): the version runs on the shared runtime image."""

    image: str
    image_id: str


class ImageBuilder:
    """Builds function images; also the surface through which the control plane removes,
    tags and lists them (`FunctionImages` does the work)."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        runtime_image: str,
        spool_dir: Path,
        daemon_id: str,
        wheelhouse: Path | None = None,
        artifacts: ArtifactSink | None = None,
        limits: BuildLimits | None = None,
        api_factory: Callable[[], docker.APIClient] | None = None,
        cache: DepsCache | None = None,
    ) -> None:
        self._client = client
        self._limits = limits or BuildLimits()
        self._api_factory = api_factory
        self._artifacts = artifacts
        self._daemon_id = daemon_id
        self.runtime_image = runtime_image
        self._spool = spool_dir
        self._wheelhouse = wheelhouse
        self._cache = cache
        self._docker_root: str | None = None  # "" when its free space cannot be seen
        self.images = FunctionImages(client, runtime_image=runtime_image, daemon_id=daemon_id)

    async def build(self, spec: BuildSpec) -> AsyncIterator[str | BuiltImage]:
        """Yields build output lines, then the BuiltImage; raises BuildFailed."""
        async for item in _threaded(lambda emit: self._build(spec, emit)):
            yield item

    def _build(self, spec: BuildSpec, emit: Callable[[str], None]) -> BuiltImage:
        deadline = time.monotonic() + self._limits.timeout_s
        self._spool.mkdir(parents=True, exist_ok=True)
        if spec.runtime != "docker" and self._artifacts is not None:
            return self._build_artifact(spec, self._artifacts, deadline, emit)
        with tempfile.TemporaryDirectory(dir=self._spool, prefix="build-") as tmp:
            ctx = Path(tmp)
            # lambdad (root-equivalent) reads and writes the extracted tree only through
            # `extraction.open_regular` (no link followed) and writes only files it creates
            # itself: the Dockerfile the build uses is always a new file of its own.
            if spec.runtime == "docker":
                context = ctx / "context"
                extraction.extract(spec.archive, context, spec.archive_format, spec.tar_limits)
                source = extraction.open_regular(context, tarball.DOCKERFILE,
                                                 MAX_DOCKERFILE_BYTES)
                if source is None:
                    raise InvalidArgument("runtime 'docker' needs a Dockerfile in the folder")
                # docker-py reads .dockerignore itself, by path: it must be a plain file.
                extraction.open_regular(context, DOCKERIGNORE, MAX_DOCKERFILE_BYTES)
                # Outside the context: docker-py sends it under a random name, left out of
                # the context's files, so `COPY .` sees the folder as uploaded.
                dockerfile = ctx / "Dockerfile"
                network = "default"
            else:
                # A builder without an artifact store (the integration tests' own) still
                # makes an image of a standard runtime.
                self.images.check_runtime_image()
                context = ctx
                extraction.extract(spec.archive, ctx / "code", spec.archive_format,
                                   spec.tar_limits)
                self._install_requirements(ctx / "code", ctx / "deps", ctx, deadline, emit,
                                           spec.function, spec.no_cache)
                with_deps = (ctx / "deps").is_dir()
                # The image keeps these modes, and its user is uid 10001: a restrictive
                # umask (pip honours it) must not make the code unreadable to it.
                normalize_modes(ctx / "code")
                if with_deps:
                    normalize_modes(ctx / "deps")
                source = generated_dockerfile(self.runtime_image, with_deps=with_deps).encode()
                dockerfile = ctx / "Dockerfile"
                network = "none"
            # One LABEL instruction at the end: the API's `labels` parameter would add a
            # build step (and a container) per label.
            extraction.create_new(dockerfile, source + b"\n" + label_instruction(
                self._labels(spec)).encode() + b"\n")
            return self._docker_build(spec, context, dockerfile, network, deadline, emit)

    def _build_artifact(self, spec: BuildSpec, artifacts: ArtifactSink, deadline: float,
                        emit: Callable[[str], None]) -> BuiltImage:
        """A standard-runtime version needs no image of its own: its instances run the
        shared runtime image with the artifact mounted read-only. The upload is extracted
        straight into the artifact's staging folder, the wheels resolved (or linked from
        the build cache) beside it, and one rename commits it: one pass, no copy."""
        runtime_id = self.images.check_runtime_image()
        steps: list[str] = []
        mark = time.monotonic()

        def step(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            steps.append(f"{name}={(now - mark) * 1000:.1f}ms")
            mark = now

        staging = artifacts.begin(spec.function, spec.version)
        try:
            extraction.extract(spec.archive, staging / TASK, spec.archive_format,
                               spec.tar_limits)
            step("extract")
            if extraction.open_regular(staging / TASK, tarball.REQUIREMENTS,
                                       MAX_REQUIREMENTS_BYTES) is not None:
                # pip's work folders (and its HOME and cache) stay in the spool, outside
                # what the function's containers mount.
                with tempfile.TemporaryDirectory(dir=self._spool, prefix="build-") as tmp:
                    self._install_requirements(staging / TASK, staging / DEPS, Path(tmp),
                                               deadline, emit, spec.function, spec.no_cache)
                step("requirements")
            artifacts.commit(spec.function, spec.version, runtime_id)
            step("commit")
        except BaseException:
            artifacts.discard(spec.function, spec.version)
            raise
        log.info("artifact built function=%s version=%d %s", spec.function, spec.version,
                 " ".join(steps))
        return BuiltImage(image="", image_id="")

    def _labels(self, spec: BuildSpec) -> dict[str, str]:
        found = {labels.FUNCTION: spec.function, labels.VERSION: str(spec.version),
                 labels.DAEMON: self._daemon_id}
        return {**found, labels.STAMP: spec.stamp} if spec.stamp else found

    def _install_requirements(
        self, code: Path, deps: Path, ctx: Path, deadline: float,
        emit: Callable[[str], None], function: str, no_cache: bool = False,
    ) -> None:
        """Resolves wheels for the image's Python in a sandboxed pip; no package code runs.

        pip never reads the uploaded file: it gets the parsed requirements as arguments.
        """
        data = extraction.open_regular(code, tarball.REQUIREMENTS, MAX_REQUIREMENTS_BYTES)
        if data is None:
            return
        wanted = parse_requirements(data)
        if not wanted:
            return
        target = self.images.target_platform()
        key = cache_key(function, wanted, target,
                        wheelhouse=wheelhouse_fingerprint(self._wheelhouse),
                        pip_settings=pip_settings(os.environ),
                        pip_version=pip_version())
        if self._cache is not None and not no_cache and self._cache.take(key, deps):
            count = sum(1 for p in deps.glob("*.dist-info"))
            plural = "" if count == 1 else "s"
            emit(f"Resolving requirements.txt: {count} package{plural} from the build cache, "
                 "as the same requirements resolved before (deploy --no-cache resolves "
                 "them again)")
            return
        emit(f"Resolving requirements.txt: wheels for {target.describe()}")
        sandbox.install(wanted, ctx, deps, self._limits, target=target,
                        wheelhouse=self._wheelhouse, deadline=deadline, emit=emit)
        if self._cache is not None:
            self._cache.put(key, deps)

    def _docker_build(
        self, spec: BuildSpec, context: Path, dockerfile: Path, network: str, deadline: float,
        emit: Callable[[str], None],
    ) -> BuiltImage:
        limits = self._limits
        output = OutputCap(emit, limits.output_lines, limits.line_chars, tail=20)
        layers: list[str] = []  # intermediate images this build made, removed if it fails
        started = time.time()
        image_id = ""
        disk = self._disk_floor()
        if disk is not None:
            disk.check()
        watchdog = BuildWatchdog(deadline, disk)
        api: docker.APIClient | None = None
        try:
            api = self._build_api()
            api.hooks["response"].append(watchdog.capture)
            stream: Iterator[dict[str, Any]] = api.build(
                path=str(context), dockerfile=str(dockerfile), tag=spec.image, rm=True,
                forcerm=True, decode=True, pull=False, network_mode=network,
                container_limits={
                    "memory": limits.memory_bytes, "memswap": limits.memory_bytes,
                    "cpushares": limits.cpu_shares,
                },
            )
            for event in stream:
                if "stream" in event:
                    for line in str(event["stream"]).splitlines():
                        if line.startswith(" ---> ") and _LAYER.match(line[6:].strip()):
                            layers.append(line[6:].strip())
                        output.line(line)
                elif "error" in event:
                    raise BuildFailed(_build_error(str(event["error"]), output, limits))
                elif "aux" in event and isinstance(event["aux"], dict):
                    image_id = str(event["aux"].get("ID", image_id))
            if watchdog.fired and not image_id:
                raise BuildFailed(watchdog.message(limits))
            if not image_id:
                image_id = self._client.images.get(spec.image).id
        except docker.errors.ImageNotFound:
            self.images.remove_layers(layers, started)
            raise BuildFailed("image build ended without an image:\n"
                              + "\n".join(output.tail)) from None
        except BuildFailed:
            self.images.remove_layers(layers, started)
            raise
        except (docker.errors.APIError, docker.errors.DockerException, OSError,
                urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
            self.images.remove_layers(layers, started)
            if watchdog.fired:
                raise BuildFailed(watchdog.message(limits)) from None
            if isinstance(exc, docker.errors.APIError):
                raise BuildFailed(f"image build failed: {exc.explanation or exc}") from None
            raise Unavailable(f"Docker engine unreachable: {exc}") from None
        finally:
            watchdog.stop()  # also ends a build whose deploy was cancelled
            if api is not None:
                api.close()
        try:
            self.images.check_built(image_id, self._labels(spec), limits.max_image_bytes)
        except BaseException:
            self.images.remove(spec.image)
            self.images.remove_layers(layers, started)
            raise
        return BuiltImage(image=spec.image, image_id=image_id)

    def _disk_floor(self) -> DiskFloor | None:
        """The Docker data root's free-space check, or None if lambdad cannot see it."""
        floor = self._limits.min_free_disk_bytes
        if floor <= 0:
            return None
        if self._docker_root is None:
            self._docker_root = docker_root(self._client)
        if not self._docker_root:
            return None
        return DiskFloor(self._docker_root, floor)

    def _build_api(self) -> docker.APIClient:
        """A client (and connection pool) of the build's own, so the watchdog can cut its
        connection without touching anyone else's: dockerd then stops the build and
        removes its container."""
        if self._api_factory is not None:
            return self._api_factory()
        base = self._client.api
        return docker.from_env(version=base.api_version, timeout=base.timeout).api


    def remove_image(self, image: str) -> None:
        self.images.remove(image)

    def tag_image(self, image_id: str, tag: str) -> None:
        """A new name for an existing image: config-only versions reuse the build."""
        self.images.tag(image_id, tag)

    def owned_images(self) -> list[tuple[str, list[str]]]:
        """(image id, tags) of every function image this daemon built."""
        return self.images.owned()


def _build_error(error: str, output: OutputCap, limits: BuildLimits) -> str:
    text = f"image build failed: {error.strip()}"
    if "non-zero code: 137" in error:
        text += (f" (killed: a build step may have used more than the build memory of "
                 f"{limits.memory_bytes // MIB} MiB, build_memory)")
    return text + "\n" + "\n".join(output.tail)


async def _threaded(
    work: Callable[[Callable[[str], None]], BuiltImage],
) -> AsyncIterator[str | BuiltImage]:
    """Runs `work` in a thread, yielding what it emits and then what it returns."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def emit(line: str) -> None:
        if cancelled.is_set():
            raise BuildFailed("build cancelled")
        loop.call_soon_threadsafe(queue.put_nowait, ("line", line))

    def run() -> None:
        try:
            result: tuple[str, Any] = ("done", work(emit))
        except BaseException as exc:  # handed to the loop, re-raised there
            result = ("error", exc)
        loop.call_soon_threadsafe(queue.put_nowait, result)

    thread = threading.Thread(target=run, name="image-build", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "line":
                yield value
            elif kind == "done":
                yield value
                return
            else:
                raise value
    finally:
        cancelled.set()
