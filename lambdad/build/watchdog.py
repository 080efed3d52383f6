"""What stops a running `docker build`: its deadline, and the free space it must leave on
the Docker data root (build_min_free_disk). The watchdog cuts the build's own connection;
dockerd then stops the build and removes its container."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from lambdad.build.limits import MIB, BuildLimits
from lambdad.errors import BuildFailed

# The builder's logger: what is logged here is about a build.
log = logging.getLogger("lambdad.build.builder")


def docker_root(client: docker.DockerClient) -> str:
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
class DiskFloor:
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


class BuildWatchdog:
    """Cuts a build's connection at the deadline, when the Docker data root's free space
    falls below the floor, or when its deploy is abandoned: dockerd then stops the build
    and removes its container."""

    POLL = 0.25  # seconds between free-space checks

    def __init__(self, deadline: float, disk: DiskFloor | None = None) -> None:
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

