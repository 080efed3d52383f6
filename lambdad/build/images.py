"""The images a builder reads and leaves: the runtime image (its id, platform and labels),
a built image's checks, the layers a failed build left, and function images' removal,
tags and listing. Blocking docker SDK calls, run in the build thread or worker threads."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime

import docker
import docker.errors

from lambdad import labels
from lambdad.build.dockerfile import foreign_labels
from lambdad.build.limits import MIB
from lambdad.build.wheeltags import PROBE, TargetPlatform, parse_probe
from lambdad.errors import BuildFailed, FailedPrecondition, InvalidArgument

# The builder's logger: what is logged here is about a build.
log = logging.getLogger("lambdad.build.builder")


class FunctionImages:
    """The Docker images side of building: one engine, one runtime image, one daemon's
    labels."""

    def __init__(self, client: docker.DockerClient, *, runtime_image: str,
                 daemon_id: str) -> None:
        self._client = client
        self.runtime_image = runtime_image
        self._daemon_id = daemon_id
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

    def check_built(self, image_id: str, ours: dict[str, str], limit: int) -> None:
        """What a build produced must fit `build_max_image_size` and carry no `lambda.*`
        label but lambdad's: instances inherit an image's labels, and reconcile reads them
        (a `lambda.cell` or `lambda.cleanup` would make an instance a cell or a leftover)."""
        info = self._client.api.inspect_image(image_id)
        size = int(info.get("Size") or 0)
        if size > limit:
            raise BuildFailed(
                f"the image is {size / MIB:.0f} MiB, more than the {limit // MIB} MiB a build "
                "may produce (build_max_image_size); it was removed")
        found = (info.get("Config") or {}).get("Labels") or {}
        foreign = foreign_labels(found, ours, self._runtime_labels())
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

    def remove_layers(self, layers: list[str], since: float, patience: float = 15.0) -> None:
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

    def remove(self, image: str) -> None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            self._client.images.remove(image, force=True, noprune=False)

    def tag(self, image_id: str, tag: str) -> None:
        """A new name for an existing image: config-only versions reuse the build."""
        repository, _, version_tag = tag.rpartition(":")
        try:
            self._client.images.get(image_id).tag(repository, version_tag)
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(
                f"the active version's image {image_id[:19]} is missing; deploy the code again"
            ) from None

    def owned(self) -> list[tuple[str, list[str]]]:
        """(image id, tags) of every function image this daemon built."""
        images = self._client.images.list(filters={"label": f"{labels.DAEMON}={self._daemon_id}"})
        return [(str(image.id), list(image.tags)) for image in images]


def _timestamp(created: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, Z) as epoch seconds."""
    head, _, fraction = created.rstrip("Z").partition(".")
    value = datetime.fromisoformat(head + "+00:00").timestamp()
    return value + float("0." + fraction[:6]) if fraction else value
