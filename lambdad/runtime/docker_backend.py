"""The only module that starts and stops containers.

Blocking docker SDK calls; the runtime manager runs them in worker threads. Kept
behind this small surface so another backend (Swarm services) can stand beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lambdad import labels
from lambdad.errors import Unavailable
from lambdad.functions import FunctionVersion

RUN_DIR = "/run/lambda"
SOCKET_NAME = "invoke.sock"
CONTAINER_USER = "10001:10001"



@dataclass(frozen=True)
class ContainerState:
    running: bool
    exit_code: int | None
    oom_killed: bool
    error: str

    def describe(self, memory_mb: int) -> str:
        """A sentence for the person reading the 502."""
        if self.oom_killed:
            return f"out of memory: limit {memory_mb} MiB"
        if self.running:
            return "running"
        if self.error:
            return f"failed to run: {self.error}"
        if self.exit_code is not None and self.exit_code >= 128:
            return f"killed by signal {self.exit_code - 128}"
        return f"exited with code {self.exit_code}"


@dataclass(frozen=True)
class ManagedContainer:
    id: str
    function: str
    version: int
    instance: str
    running: bool


class DockerBackend:
    def __init__(
        self, client: docker.DockerClient, *, daemon_id: str, tmp_size_mb: int = 64,
    ) -> None:
        self._client = client
        self.daemon_id = daemon_id
        self._tmp_size_mb = tmp_size_mb
        self._events: Any = None

    def start(self, version: FunctionVersion, instance_id: str, socket_dir: Path) -> str:
        """Creates and starts a hardened container; returns its id."""
        config = version.config
        environment = {
            **config.env,
            "_HANDLER": config.handler,
            "AWS_LAMBDA_FUNCTION_NAME": version.function,
            "AWS_LAMBDA_FUNCTION_VERSION": str(version.number),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(config.timeout_s),
            "LAMBDA_SOCKET": f"{RUN_DIR}/{SOCKET_NAME}",
            "LAMBDA_TASK_ROOT": "/var/task",
            "TZ": "UTC",
        }
        memory = f"{config.memory_mb}m"
        api = self._client.api
        try:
            # The low-level API: create and start, without the inspect that
            # containers.run adds in between (it shows in every cold start).
            host_config = api.create_host_config(
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={self._tmp_size_mb}m"},
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(config.cpu * 1e9),
                pids_limit=config.pids_limit,
                network_mode=config.network,
                binds={str(socket_dir): {"bind": RUN_DIR, "mode": "rw"}},
                init=True,
                log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
            )
            created = api.create_container(
                version.image,
                name=f"lambda-{version.function}-v{version.number}-{instance_id}",
                labels={
                    labels.FUNCTION: version.function,
                    labels.VERSION: str(version.number),
                    labels.INSTANCE: instance_id,
                    labels.DAEMON: self.daemon_id,
                },
                environment=environment,
                user=CONTAINER_USER,
                host_config=host_config,
            )
            container_id = str(created["Id"])
        except docker.errors.ImageNotFound:
            raise Unavailable(f"image {version.image} is missing; redeploy the function") from None
        except docker.errors.APIError as exc:
            raise Unavailable(f"could not start an instance: {exc.explanation or exc}") from None
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise Unavailable(f"could not start an instance: {exc.explanation or exc}") from None
        return container_id

    def watch_exits(self, on_exit: Callable[[str], None]) -> None:
        """Blocks, calling `on_exit(container_id)` for each of our containers that dies,
        until `stop_watching`. Run it in a thread."""
        self._events = self._client.events(
            decode=True,
            filters={"type": "container", "event": "die",
                     "label": f"{labels.DAEMON}={self.daemon_id}"},
        )
        try:
            for event in self._events:
                container_id = event.get("id") or event.get("Actor", {}).get("ID")
                if container_id:
                    on_exit(str(container_id))
        except Exception:  # the stream closes with an error when stop_watching cuts it
            pass

    def stop_watching(self) -> None:
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()

    def state(self, container_id: str) -> ContainerState:
        try:
            container = self._client.containers.get(container_id)
        except docker.errors.NotFound:
            return ContainerState(running=False, exit_code=None, oom_killed=False,
                                  error="container is gone")
        state = container.attrs.get("State", {})
        return ContainerState(
            running=bool(state.get("Running")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
        )

    def logs_tail(self, container_id: str, lines: int = 20) -> str:
        try:
            raw = self._client.containers.get(container_id).logs(tail=lines)
        except docker.errors.DockerException:
            return ""
        return bytes(raw).decode(errors="replace").rstrip()

    def remove(self, container_id: str, *, grace: float = 2.0) -> None:
        """Stops (SIGTERM, then SIGKILL after `grace`) and removes; a missing one is fine."""
        with contextlib.suppress(docker.errors.NotFound):
            container = self._client.containers.get(container_id)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=max(0, int(grace)))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def managed(self) -> list[ManagedContainer]:
        """Every container this daemon created, running or not."""
        found = self._client.containers.list(
            all=True, filters={"label": f"{labels.DAEMON}={self.daemon_id}"}
        )
        result = []
        for container in found:
            found_labels = container.labels
            with contextlib.suppress(KeyError, ValueError):
                result.append(ManagedContainer(
                    id=str(container.id),
                    function=found_labels[labels.FUNCTION],
                    version=int(found_labels[labels.VERSION]),
                    instance=found_labels[labels.INSTANCE],
                    running=container.status == "running",
                ))
        return result
