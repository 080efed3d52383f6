"""The Docker engine: reached (or a clear StartupError) before anything is built on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import docker
import docker.errors

from lambdad.host import StartupError


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise StartupError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from None
    return client


def docker_engine_version(client: docker.DockerClient) -> str:
    """The engine's version for GetVersion; "" rather than a failed start if it will not say."""
    try:
        return str(client.version().get("Version", ""))
    except docker.errors.DockerException:
        return ""


class DockerEngine:
    """Connects on start (on a thread: the SDK blocks), closes the client on stop.
    `connect` is injectable so the daemon's lifecycle is tested without an engine."""

    name = "docker engine"

    def __init__(self, connect: Callable[[], docker.DockerClient] = docker_client) -> None:
        self._connect = connect
        self._client: docker.DockerClient | None = None
        self.version = ""

    @property
    def client(self) -> docker.DockerClient:
        assert self._client is not None, "start connects first"
        return self._client

    async def start(self) -> None:
        client = await asyncio.to_thread(self._connect)
        try:
            self.version = await asyncio.to_thread(docker_engine_version, client)
        except BaseException:
            client.close()
            raise
        self._client = client

    async def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
