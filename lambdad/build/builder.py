"""Turns a validated code archive into an image `lambda-fn/<name>:v<N>`.

Blocking work (pip, the docker SDK) runs in worker threads; build output comes back
to the event loop line by line through a queue so the CLI sees it as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lambdad import labels
from lambdad.build import tarball
from lambdad.build.artifacts import ArtifactStore, normalize_modes
from lambdad.build.dockerfile import generated_dockerfile, label_instruction
from lambdad.build.requirements import check_requirements
from lambdad.errors import BuildFailed, FailedPrecondition, Unavailable

PYTHON_VERSION = "3.11"
GLIBC_TAG = "manylinux_2_36"  # Debian bookworm's glibc


@dataclass(frozen=True)
class BuildSpec:
    function: str
    version: int
    image: str  # repository:tag to create
    archive: Path  # validated tarball
    runtime: str  # "python3.11" or "docker"


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
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self._client = client
        self._artifacts = artifacts
        self._daemon_id = daemon_id
        self.runtime_image = runtime_image
        self._spool = spool_dir
        self._wheelhouse = wheelhouse

    def check_runtime_image(self) -> str:
        """The runtime image's id; FailedPrecondition if it is missing."""
        try:
            return str(self._client.images.get(self.runtime_image).id)
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(
                f"runtime image {self.runtime_image} is missing; build it with "
                "`make runtime-image`"
            ) from None

    async def build(self, spec: BuildSpec) -> AsyncIterator[str | BuiltImage]:
        """Yields build output lines, then the BuiltImage; raises BuildFailed."""
        async for item in _threaded(lambda emit: self._build(spec, emit)):
            yield item

    def _build(self, spec: BuildSpec, emit: Callable[[str], None]) -> BuiltImage:
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._spool, prefix="build-") as tmp:
            ctx = Path(tmp)
            runtime_id = ""
            if spec.runtime == "docker":
                tarball.extract(spec.archive, ctx)
                network = "default"
            else:
                runtime_id = self.check_runtime_image()
                tarball.extract(spec.archive, ctx / "code")
                requirements = ctx / "code" / tarball.REQUIREMENTS
                with_deps = requirements.is_file()
                if with_deps:
                    (ctx / "deps").mkdir()
                    self._install_requirements(requirements, ctx / "deps", emit)
                # The image keeps these modes, and its user is uid 10001: a restrictive
                # umask (pip honours it) must not make the code unreadable to it.
                normalize_modes(ctx / "code")
                if with_deps:
                    normalize_modes(ctx / "deps")
                (ctx / "Dockerfile").write_text(
                    generated_dockerfile(self.runtime_image, with_deps=with_deps)
                )
                network = "none"
            built = self._docker_build(spec, ctx, network, emit)
            if spec.runtime != "docker" and self._artifacts is not None:
                # The same files as the image's /var/task and deps, for stem cells.
                self._artifacts.save(spec.function, spec.version, ctx / "code",
                                     ctx / "deps" if (ctx / "deps").is_dir() else None,
                                     runtime_id)
            return built

    def _install_requirements(
        self, requirements: Path, target: Path, emit: Callable[[str], None]
    ) -> None:
        """Resolves wheels for the image's Python on the host; no package code runs."""
        check_requirements(requirements.read_text(errors="replace"))
        machine = platform.machine()
        command = [
            sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input", "--no-compile", "--no-warn-script-location",
            "--only-binary=:all:", "--target", str(target),
            "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--abi", "abi3", "--abi", "none",
            "--platform", f"{GLIBC_TAG}_{machine}", "--platform", "any",
            "-r", str(requirements),
        ]
        if self._wheelhouse is not None:
            command += ["--no-index", "--find-links", str(self._wheelhouse)]
        emit("Resolving requirements.txt (wheels only)")
        tail: deque[str] = deque(maxlen=15)
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                if line and "is ignored: it is neither a file nor a directory" not in line:
                    tail.append(line)
                    emit(line)
            code = proc.wait()
        if code != 0:
            raise BuildFailed(
                "requirements.txt could not be resolved to wheels for Python "
                f"{PYTHON_VERSION} ({GLIBC_TAG}):\n" + "\n".join(tail)
            )

    def _docker_build(
        self, spec: BuildSpec, ctx: Path, network: str, emit: Callable[[str], None]
    ) -> BuiltImage:
        # One LABEL instruction appended to the Dockerfile: the API's `labels`
        # parameter would add a build step (and a container) per label.
        dockerfile = ctx / "Dockerfile"
        with dockerfile.open("a") as out:
            out.write("\n" + label_instruction({
                labels.FUNCTION: spec.function,
                labels.VERSION: str(spec.version),
                labels.DAEMON: self._daemon_id,
            }) + "\n")
        tail: deque[str] = deque(maxlen=20)
        image_id = ""
        try:
            stream: Iterator[dict[str, Any]] = self._client.api.build(
                path=str(ctx), tag=spec.image, rm=True, forcerm=True, decode=True,
                pull=False, network_mode=network,
            )
            for event in stream:
                if "stream" in event:
                    for line in str(event["stream"]).splitlines():
                        if line.strip():
                            tail.append(line)
                            emit(line)
                elif "error" in event:
                    raise BuildFailed(
                        f"image build failed: {str(event['error']).strip()}\n" + "\n".join(tail)
                    )
                elif "aux" in event and isinstance(event["aux"], dict):
                    image_id = str(event["aux"].get("ID", image_id))
        except docker.errors.APIError as exc:
            raise BuildFailed(f"image build failed: {exc.explanation or exc}") from None
        except docker.errors.DockerException as exc:
            raise Unavailable(f"Docker engine unreachable: {exc}") from None
        if not image_id:
            image_id = self._client.images.get(spec.image).id
        return BuiltImage(image=spec.image, image_id=image_id)

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
