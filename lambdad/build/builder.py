"""Turns a validated code archive into a function image, `<image_prefix>/<name>:v<N>`.

Blocking work (pip, the docker SDK) runs in worker threads; build output comes back
to the event loop line by line through a queue so the CLI sees it as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from lambdad import labels
from lambdad.build import sandbox, tarball
from lambdad.build.artifacts import ArtifactSink, normalize_modes
from lambdad.build.depcache import DepsCache, cache_key, wheelhouse_fingerprint
from lambdad.build.dockerfile import foreign_labels, generated_dockerfile, label_instruction
from lambdad.build.requirements import MAX_BYTES as MAX_REQUIREMENTS_BYTES
from lambdad.build.requirements import parse_requirements
from lambdad.build.sandbox import MIB, BuildLimits
from lambdad.build.tarball import TarLimits
from lambdad.build.wheeltags import PROBE, TargetPlatform, parse_probe
from lambdad.errors import BuildFailed, FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class BuiltImage:
    image: str
    image_id: str


class ImageBuilder:
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
        self._targets: dict[str, TargetPlatform] = {}  # runtime image id -> its platform
        self._targets_lock = threading.Lock()

    def check_runtime_image(self) -> str:
        """The runtime image's id; FailedPrecondition if it is missing."""
        try:
            return str(self._client.images.get(self.runtime_image).id)
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(
                f"runtime image {self.runtime_image} is missing; build it with "
                "`make runtime-image`"
            ) from None

    def target_platform(self) -> TargetPlatform:
        """The runtime image's Python and libc, measured once per image id by running its
        own python3 in a throwaway container (no network, no capabilities, read-only)."""
        image_id = self.check_runtime_image()
        with self._targets_lock:
            if image_id in self._targets:
                return self._targets[image_id]
            api = self._client.api
            container_id = ""
            try:
                host_config = api.create_host_config(
                    cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                    network_mode="none", mem_limit="128m", memswap_limit="128m",
                    pids_limit=16, log_config={"type": "json-file", "config": {"max-size": "1m"}})
                created = api.create_container(
                    image_id, entrypoint=["python3", "-I", "-S", "-c", PROBE], command=[],
                    host_config=host_config, labels={labels.DAEMON: self._daemon_id,
                                                      labels.CLEANUP: "1"})
                container_id = str(created["Id"])
                api.start(container_id)
                status = api.wait(container_id, timeout=60)
                output = api.logs(container_id, stdout=True, stderr=True).decode(
                    "utf-8", errors="replace")
            except Exception as exc:  # an API error or the wait's read timeout
                raise BuildFailed(f"could not run the runtime image {self.runtime_image} to "
                                  f"read its platform: {exc}") from None
            finally:
                if container_id:
                    with contextlib.suppress(docker.errors.APIError):
                        api.remove_container(container_id, force=True)
            if status.get("StatusCode") != 0:
                raise BuildFailed(f"the runtime image {self.runtime_image} could not report "
                                  f"its platform:\n{output[-2000:]}")
            target = parse_probe(output)
            self._targets[image_id] = target
            log.info("runtime image %s: %s", self.runtime_image, target.describe())
            return target

    async def build(self, spec: BuildSpec) -> AsyncIterator[str | BuiltImage]:
        """Yields build output lines, then the BuiltImage; raises BuildFailed."""
        async for item in _threaded(lambda emit: self._build(spec, emit)):
            yield item

    def _build(self, spec: BuildSpec, emit: Callable[[str], None]) -> BuiltImage:
        deadline = time.monotonic() + self._limits.timeout_s
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._spool, prefix="build-") as tmp:
            ctx = Path(tmp)
            runtime_id = ""
            # lambdad (root-equivalent) reads and writes the extracted tree only through
            # `tarball.open_regular` (no link followed) and writes only files it creates
            # itself: the Dockerfile the build uses is always a new file of its own.
            if spec.runtime == "docker":
                context = ctx / "context"
                tarball.extract(spec.archive, context, spec.archive_format, spec.tar_limits)
                source = tarball.open_regular(context, tarball.DOCKERFILE, MAX_DOCKERFILE_BYTES)
                if source is None:
                    raise InvalidArgument("runtime 'docker' needs a Dockerfile in the folder")
                # docker-py reads .dockerignore itself, by path: it must be a plain file.
                tarball.open_regular(context, DOCKERIGNORE, MAX_DOCKERFILE_BYTES)
                # Outside the context: docker-py sends it under a random name, left out of
                # the context's files, so `COPY .` sees the folder as uploaded.
                dockerfile = ctx / "Dockerfile"
                network = "default"
            else:
                runtime_id = self.check_runtime_image()
                context = ctx
                tarball.extract(spec.archive, ctx / "code", spec.archive_format,
                                spec.tar_limits)
                self._install_requirements(ctx / "code", ctx, deadline, emit, spec.function,
                                           spec.no_cache)
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
            tarball.create_new(dockerfile, source + b"\n" + label_instruction(
                self._labels(spec)).encode() + b"\n")
            built = self._docker_build(spec, context, dockerfile, network, deadline, emit)
            if spec.runtime != "docker" and self._artifacts is not None:
                # The same files as the image's /var/task and deps, for stem cells.
                self._artifacts.save(spec.function, spec.version, ctx / "code",
                                     ctx / "deps" if (ctx / "deps").is_dir() else None,
                                     runtime_id)
            return built

    def _labels(self, spec: BuildSpec) -> dict[str, str]:
        return {labels.FUNCTION: spec.function, labels.VERSION: str(spec.version),
                labels.DAEMON: self._daemon_id}

    def _install_requirements(
        self, code: Path, ctx: Path, deadline: float, emit: Callable[[str], None],
        function: str, no_cache: bool = False,
    ) -> None:
        """Resolves wheels for the image's Python in a sandboxed pip; no package code runs.

        pip never reads the uploaded file: it gets the parsed requirements as arguments.
        """
        data = tarball.open_regular(code, tarball.REQUIREMENTS, MAX_REQUIREMENTS_BYTES)
        if data is None:
            return
        wanted = parse_requirements(data)
        if not wanted:
            return
        target = self.target_platform()
        deps = ctx / "deps"
        key = cache_key(function, wanted, target,
                        wheelhouse=wheelhouse_fingerprint(self._wheelhouse),
                        pip_settings=sandbox.pip_settings(os.environ),
                        pip_version=sandbox.pip_version())
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
        output = sandbox.OutputCap(emit, limits.output_lines, limits.line_chars, tail=20)
        layers: list[str] = []  # intermediate images this build made, removed if it fails
        started = time.time()
        image_id = ""
        disk = self._disk_floor()
        if disk is not None:
            disk.check()
        watchdog = _BuildWatchdog(deadline, disk)
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
            self._remove_layers(layers, started)
            raise BuildFailed("image build ended without an image:\n"
                              + "\n".join(output.tail)) from None
        except BuildFailed:
            self._remove_layers(layers, started)
            raise
        except (docker.errors.APIError, docker.errors.DockerException, OSError,
                urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
            self._remove_layers(layers, started)
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
            self._check_image(spec, image_id)
        except BaseException:
            self.remove_image(spec.image)
            self._remove_layers(layers, started)
            raise
        return BuiltImage(image=spec.image, image_id=image_id)

    def _check_image(self, spec: BuildSpec, image_id: str) -> None:
        """What a build produced must fit `build_max_image_size` and carry no `lambda.*`
        label but lambdad's: instances inherit an image's labels, and reconcile reads them
        (a `lambda.cell` or `lambda.cleanup` would make an instance a cell or a leftover)."""
        info = self._client.api.inspect_image(image_id)
        size = int(info.get("Size") or 0)
        limit = self._limits.max_image_bytes
        if size > limit:
            raise BuildFailed(
                f"the image is {size / MIB:.0f} MiB, more than the {limit // MIB} MiB a build "
                "may produce (build_max_image_size); it was removed")
        found = (info.get("Config") or {}).get("Labels") or {}
        foreign = foreign_labels(found, self._labels(spec), self._runtime_labels())
        if foreign:
            raise InvalidArgument(
                f"the image carries label(s) {', '.join(foreign)}: labels that start with "
                "'lambda.' are lambdad's own; remove them from the Dockerfile (or from "
                "its base image)")

    def _runtime_labels(self) -> dict[str, str]:
        """The runtime image's own labels, which images built on it inherit."""
        try:
            return dict(self._client.images.get(self.runtime_image).labels or {})
        except docker.errors.ImageNotFound:
            return {}

    def _disk_floor(self) -> _DiskFloor | None:
        """The Docker data root's free-space check, or None if lambdad cannot see it."""
        floor = self._limits.min_free_disk_bytes
        if floor <= 0:
            return None
        if self._docker_root is None:
            self._docker_root = _docker_root(self._client)
        if not self._docker_root:
            return None
        return _DiskFloor(self._docker_root, floor)

    def _build_api(self) -> docker.APIClient:
        """A client (and connection pool) of the build's own, so the watchdog can cut its
        connection without touching anyone else's: dockerd then stops the build and
        removes its container."""
        if self._api_factory is not None:
            return self._api_factory()
        base = self._client.api
        return docker.from_env(version=base.api_version, timeout=base.timeout).api

    def _remove_layers(self, layers: list[str], since: float, patience: float = 15.0) -> None:
        """Removes the untagged images a failed build left (newest first); a layer another
        image uses, or one older than the build (the cache), stays. A stopped build's last
        container still uses its layer until dockerd has removed it: that is waited for."""
        pending = list(reversed(layers))
        give_up = time.monotonic() + patience
        while pending:
            busy = []
            for layer in pending:
                try:
                    info = self._client.api.inspect_image(layer)
                    if info.get("RepoTags") or _timestamp(info.get("Created", "")) < since - 1:
                        continue
                    self._client.api.remove_image(layer, force=False, noprune=False)
                except docker.errors.APIError as exc:
                    if exc.status_code == 409 and "container" in str(exc.explanation):
                        busy.append(layer)
                except (docker.errors.DockerException, OSError, ValueError):
                    continue
            if not busy or time.monotonic() > give_up:
                return
            pending = busy
            time.sleep(0.25)

    def remove_image(self, image: str) -> None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            self._client.images.remove(image, force=True, noprune=False)

    def tag_image(self, image_id: str, tag: str) -> None:
        """A new name for an existing image: config-only versions reuse the build."""
        repository, _, version_tag = tag.rpartition(":")
        try:
            self._client.images.get(image_id).tag(repository, version_tag)
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(
                f"the active version's image {image_id[:19]} is missing; deploy the code again"
            ) from None

    def owned_images(self) -> list[tuple[str, list[str]]]:
        """(image id, tags) of every function image this daemon built."""
        images = self._client.images.list(filters={"label": f"{labels.DAEMON}={self._daemon_id}"})
        return [(str(image.id), list(image.tags)) for image in images]


def _docker_root(client: docker.DockerClient) -> str:
    """The Docker data root (`docker info`'s DockerRootDir) if lambdad can read its free
    space: a local engine (Unix socket) whose folder statvfs reaches; else "" (logged)."""
    try:
        root = str(client.info().get("DockerRootDir") or "")
    except (docker.errors.DockerException, OSError, requests.exceptions.RequestException):
        root = ""
    local = str(getattr(client.api, "base_url", "")) == "http+docker://localhost"
    try:
        if root and local:
            os.statvfs(root)
            return root
        reason = "the Docker engine is not local" if root else "docker info names no data root"
    except OSError as exc:
        reason = f"statvfs({root}): {exc.strerror}"
    log.warning("cannot see the free space of the Docker data root (%s): a build's disk is "
                "bounded by build_max_image_size only, checked when it ends", reason)
    return ""


@dataclass(frozen=True)
class _DiskFloor:
    """The free space a build must leave on the Docker data root (build_min_free_disk)."""

    root: str
    floor: int

    def free(self) -> int:
        info = os.statvfs(self.root)
        return info.f_bavail * info.f_frsize

    def short(self) -> str | None:
        """Why the build must stop, or None."""
        try:
            free = self.free()
        except OSError:
            return None
        if free >= self.floor:
            return None
        return (f"the Docker data root {self.root} has {free // MIB} MiB free, less than the "
                f"{self.floor // MIB} MiB builds must leave (build_min_free_disk)")

    def check(self) -> None:
        if (reason := self.short()) is not None:
            raise BuildFailed(f"image build not started: {reason}")


class _BuildWatchdog:
    """Cuts a build's connection at the deadline, when the Docker data root's free space
    falls below the floor, or when its deploy is abandoned: dockerd then stops the build
    and removes its container."""

    POLL = 0.25  # seconds between free-space checks

    def __init__(self, deadline: float, disk: _DiskFloor | None = None) -> None:
        self.fired = False
        self.reason = ""
        self._deadline = deadline
        self._disk = disk
        self._response: Any = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="build-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._fire("")
                return
            wait = min(left, self.POLL) if self._disk is not None else left
            if self._stopped.wait(wait):
                return
            if self._disk is not None and (reason := self._disk.short()) is not None:
                self._fire(reason)
                return

    def capture(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A requests response hook: the build's streaming response, before its body."""
        with self._lock:
            self._response = response
            late = self.fired
        if late:
            self._cut()
        return response

    def _fire(self, reason: str) -> None:
        with self._lock:
            self.fired = True
            self.reason = reason
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            response = self._response
        if response is None:
            return
        # The socket, not the response: another thread is blocked reading it.
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def message(self, limits: BuildLimits) -> str:
        if self.reason:
            return f"image build stopped: {self.reason}"
        return (f"image build did not finish within the build timeout of "
                f"{limits.timeout_s:g} s (build_timeout); it was stopped")


def _build_error(error: str, output: sandbox.OutputCap, limits: BuildLimits) -> str:
    text = f"image build failed: {error.strip()}"
    if "non-zero code: 137" in error:
        text += (f" (killed: a build step may have used more than the build memory of "
                 f"{limits.memory_bytes // sandbox.MIB} MiB, build_memory)")
    return text + "\n" + "\n".join(output.tail)


def _timestamp(created: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, Z) as epoch seconds."""
    head, _, fraction = created.rstrip("Z").partition(".")
    value = datetime.fromisoformat(head + "+00:00").timestamp()
    return value + float("0." + fraction[:6]) if fraction else value


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
