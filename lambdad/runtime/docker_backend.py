"""The only module that starts and stops containers.

Blocking docker SDK calls; the runtime manager runs them in worker threads. Kept
behind this small surface so another backend (Swarm services) can stand beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lambdad import labels
from lambdad.errors import Unavailable
from lambdad.functions import FunctionVersion
from lambdad.runtime import cgroups
from lambdad.runtime.cells import CellClass
from lambdad.runtime.folder import CONTAINER_UID, SOCKET_NAME
from lambdad.runtime.hostconfig import cleanup_options, instance_options, memory_in_use

RUN_DIR = "/run/lambda"
TASK_DIR = "/var/task"
DEPS_DIR = "/opt/lambda/deps"
CONTAINER_USER = f"{CONTAINER_UID}:{CONTAINER_UID}"


def function_environment(version: FunctionVersion) -> dict[str, str]:
    """What a function's process sees: its own env, then Lambda's reserved variables."""
    config = version.config
    return {
        **config.env,
        "_HANDLER": config.handler,
        "AWS_LAMBDA_FUNCTION_NAME": version.function,
        "AWS_LAMBDA_FUNCTION_VERSION": str(version.number),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(config.timeout_s),
        "LAMBDA_SOCKET": f"{RUN_DIR}/{SOCKET_NAME}",
        "LAMBDA_TASK_ROOT": TASK_DIR,
        "TZ": "UTC",
    }



def stem_cell_environment() -> dict[str, str]:
    """A runtime's environment at process start: nothing of any function's (that comes
    with POST /init, to the zygote only). LAMBDA_LOG_CHANNEL=1: the supervisor keeps its log
    lines for lambdad's log channel instead of writing them to Docker
    (docs/design-notes/log-channel.md); every container started with it is labelled
    `lambda.logs=channel`, so a restarted lambdad knows which ones to dial."""
    return {"LAMBDA_STEM_CELL": "1", "LAMBDA_LOG_CHANNEL": "1",
            "LAMBDA_SOCKET": f"{RUN_DIR}/{SOCKET_NAME}", "LAMBDA_TASK_ROOT": TASK_DIR,
            "TZ": "UTC"}


LOG_CHANNEL_LABELS = {labels.LOGS: labels.LOGS_CHANNEL}


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
    cell: bool = False  # a stem cell; the runtime manager finds its owner, if any
    log_channel: bool = False  # started with the log channel on (labels.LOGS)
    paused: bool = False  # frozen (docker pause) when found: adopted frozen
    stamp: str = ""  # labels.STAMP: which version of that number ("" from an older lambdad)


def managed_container(container_id: str, found: dict[str, str],
                      running: bool) -> ManagedContainer | None:
    """What a container's labels say it is; None when they are damaged."""
    instance = found.get(labels.INSTANCE, "")
    channel = found.get(labels.LOGS) == labels.LOGS_CHANNEL
    if labels.CLEANUP in found:  # left by a crash: to be removed
        return ManagedContainer(container_id, "", 0, instance, running)
    if labels.CELL in found:
        # Labels are fixed at creation: whose a specialized cell is, the runtime
        # manager knows from the cell's folder; a generic one is never adopted.
        return ManagedContainer(container_id, "", 0, instance, running, cell=True,
                                log_channel=channel)
    try:
        return ManagedContainer(container_id, found[labels.FUNCTION],
                                int(found[labels.VERSION]), found[labels.INSTANCE], running,
                                log_channel=channel, stamp=found.get(labels.STAMP, ""))
    except (KeyError, ValueError):
        return None


def instance_name(function: str, version: int, instance_id: str) -> str:
    return f"lambda-{function}-v{version}-{instance_id}"



class DockerBackend:
    def __init__(
        self, client: docker.DockerClient, *, daemon_id: str, tmp_size_mb: int = 64,
    ) -> None:
        self._client = client
        self.daemon_id = daemon_id
        self._tmp_size_mb = tmp_size_mb
        self._events: Any = None
        # Each paused container's freezer file (runtime/cgroups.py), found once; None:
        # it cannot be written directly, the Docker API thaws it.
        self._freezers: dict[str, cgroups.FreezerFile | None] = {}

    def _host_config(self, limits: CellClass, binds: dict[str, dict[str, str]], *,
                     init: bool, volumes: tuple[str, ...] = ()) -> Any:
        return self._client.api.create_host_config(**instance_options(
            limits, binds, init=init, volumes=volumes, tmp_size_mb=self._tmp_size_mb))

    def _create_and_start(self, image: str, name: str, labels_: dict[str, str],
                          environment: dict[str, str], host_config: Any) -> str:
        api = self._client.api
        try:
            # The low-level API: create and start, without the inspect that
            # containers.run adds in between (it shows in every cold start).
            created = api.create_container(
                image, name=name, labels=labels_, environment=environment,
                user=CONTAINER_USER, host_config=host_config,
            )
            container_id = str(created["Id"])
        except docker.errors.ImageNotFound:
            raise Unavailable(f"image {image} is missing; redeploy the function") from None
        except docker.errors.APIError as exc:
            raise Unavailable(f"could not start an instance: {exc.explanation or exc}") from None
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise Unavailable(f"could not start an instance: {exc.explanation or exc}") from None
        return container_id

    def start(self, version: FunctionVersion, instance_id: str, socket_dir: Path, *,
              init_later: bool = False, code: Path | None = None, image: str = "") -> str:
        """Creates and starts a hardened container; returns its id.

        With `code` (an artifact: `task/` and `deps/`) the container runs `image`, the
        runtime image, with those folders bound read-only where a stem cell has its code
        (the function can read its code, never change it); without, the version's own
        image.

        With `init_later` (standard runtimes) the runtime starts as a stem cell does, with
        a stem cell's clean environment: it opens its socket before any function code runs
        and loads the handler at `POST /init`, which brings the function's environment, so
        lambdad locks the socket folder first and none of the function's variables
        (LD_PRELOAD, PYTHONPATH, ...) reaches the supervisor.
        """
        binds = {str(socket_dir): {"bind": RUN_DIR, "mode": "rw"}}
        if code is not None:
            binds[str(code / "task")] = {"bind": TASK_DIR, "mode": "ro"}
            binds[str(code / "deps")] = {"bind": DEPS_DIR, "mode": "ro"}
        host_config = self._host_config(
            CellClass.of(version.config), binds,
            init=version.config.runtime == "docker",
            volumes=(self._declared_volumes(version.image)
                     if version.config.runtime == "docker" else ()),
        )
        environment = stem_cell_environment() if init_later else function_environment(version)
        return self._create_and_start(
            image if code is not None else version.image,
            instance_name(version.function, version.number, instance_id),
            {
                labels.FUNCTION: version.function,
                labels.VERSION: str(version.number),
                labels.INSTANCE: instance_id,
                labels.STAMP: version.stamp,
                labels.DAEMON: self.daemon_id,
                **(LOG_CHANNEL_LABELS if init_later else {}),
            },
            environment,
            host_config,
        )

    def start_cell(self, cell_class: CellClass, cell_id: str, socket_dir: Path,
                   code_dir: Path, image: str) -> str:
        """A stem cell: the runtime image, no function; code arrives later, read-only."""
        host_config = self._host_config(cell_class, {
            str(socket_dir): {"bind": RUN_DIR, "mode": "rw"},
            str(code_dir / "task"): {"bind": TASK_DIR, "mode": "ro"},
            str(code_dir / "deps"): {"bind": DEPS_DIR, "mode": "ro"},
        }, init=False)
        return self._create_and_start(
            image,
            f"lambda-cell-{cell_id}",
            {labels.CELL: cell_class.label(), labels.INSTANCE: cell_id,
             labels.DAEMON: self.daemon_id, **LOG_CHANNEL_LABELS},
            stem_cell_environment(),
            host_config,
        )

    def _declared_volumes(self, image: str) -> tuple[str, ...]:
        """The VOLUME paths of a function's own image (read at every start: a tag can be
        moved), except those lambdad mounts itself."""
        try:
            config = self._client.api.inspect_image(image).get("Config") or {}
        except docker.errors.ImageNotFound:
            raise Unavailable(f"image {image} is missing; redeploy the function") from None
        except docker.errors.APIError as exc:
            raise Unavailable(f"could not inspect {image}: {exc.explanation or exc}") from None
        return tuple(sorted(path for path in (config.get("Volumes") or {})
                            if path.rstrip("/") not in (RUN_DIR, "/tmp")))

    def clean_folder(self, folder: Path, instance_id: str, image: str,
                     timeout: float = 60.0) -> None:
        """Empties an instance folder that lambdad's own user cannot (a function made a
        folder in it 0700 before it was locked): a short-lived container of `image` runs
        as root with only CAP_DAC_OVERRIDE and CAP_FOWNER, no network, the folder as its
        only writable mount, and removes the folder's contents (rm never follows a
        link). The folder itself, a mount point in there, is left for the caller."""
        api = self._client.api
        host_config = api.create_host_config(**cleanup_options(folder))
        try:
            created = api.create_container(
                image, user="0:0", host_config=host_config,
                command=["find", "/folder", "-mindepth", "1", "-maxdepth", "1",
                         "-exec", "rm", "-rf", "--", "{}", "+"],
                labels={labels.DAEMON: self.daemon_id, labels.INSTANCE: instance_id,
                        labels.CLEANUP: "1"},
            )
        except docker.errors.APIError as exc:
            raise Unavailable(f"could not create a cleanup container: "
                              f"{exc.explanation or exc}") from None
        container_id = str(created["Id"])
        try:
            api.start(container_id)
            api.wait(container_id, timeout=timeout)
        except Exception as exc:  # an API error or the wait's read timeout
            raise Unavailable(f"the cleanup container failed: {exc}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)

    def update_limits(self, container_id: str, limits: CellClass) -> None:
        """Applies a function's memory and CPU limits to a cell of another class (the
        pool only lends cells whose network and pids limit already match)."""
        memory = limits.memory_mb * 1024 * 1024
        try:
            self._client.api.update_container(
                container_id, mem_limit=memory, memswap_limit=memory,
                cpu_quota=int(limits.cpu * 100_000), cpu_period=100_000,
            )
        except (docker.errors.APIError, OSError) as exc:
            raise Unavailable(f"could not apply the function's limits: {exc}") from None

    def image_id(self, image: str) -> str:
        """The id of `image` (a tag), or "" when it is missing."""
        try:
            return str(self._client.images.get(image).id)
        except (docker.errors.ImageNotFound, docker.errors.APIError, OSError):
            return ""

    def image_stamp(self, image: str) -> str:
        """The version stamp (labels.STAMP) `image` was built for, "" when none or missing."""
        try:
            return str((self._client.images.get(image).labels or {}).get(labels.STAMP, ""))
        except (docker.errors.ImageNotFound, docker.errors.APIError, OSError):
            return ""

    def rename(self, container_id: str, name: str) -> None:
        """Names a specialized cell after its function, for `docker ps` and restarts."""
        with contextlib.suppress(docker.errors.APIError):
            self._client.api.rename(container_id, name)

    def is_running_unpaused(self, container_id: str) -> bool:
        try:
            state = self._client.api.inspect_container(container_id)["State"]
        except (docker.errors.APIError, OSError):
            return False
        return bool(state.get("Running")) and not state.get("Paused")

    def pause(self, container_id: str) -> None:
        """Freezes through the Docker API (so Docker knows: a `docker stop` of it works
        even if lambdad dies), then finds its freezer file for the thaw."""
        self._client.api.pause(container_id)
        self._freezer(container_id)

    def unpause(self, container_id: str) -> None:
        self._client.api.unpause(container_id)

    def _freezer(self, container_id: str) -> cgroups.FreezerFile | None:
        if container_id not in self._freezers:
            try:
                pid = int(self._client.api.inspect_container(container_id)["State"]["Pid"])
            except (docker.errors.APIError, OSError, KeyError, TypeError, ValueError):
                return None  # not remembered: asked again next time
            self._freezers[container_id] = cgroups.find(pid, container_id)
        return self._freezers[container_id]

    def thaw(self, container_id: str, *, find: bool = True) -> bool:
        """Thaws a paused container by writing its freezer file (microseconds, where
        `unpause` takes 12-48 ms); False when that cannot be done here, for the caller to
        `unpause`. Docker still says Paused afterwards, until `settle`. Blocks (a Docker
        call) only when the file was not found at the pause (a container adopted paused),
        and not at all with `find=False`: then False unless the file is known."""
        freezer = (self._freezer(container_id) if find
                   else self._freezers.get(container_id))
        if freezer is None:
            return False
        try:
            cgroups.write(freezer, freezer.thawed)
        except OSError:
            self._freezers.pop(container_id, None)
            return False
        return True

    def settle(self, container_id: str) -> None:
        """Brings Docker's view of a directly thawed container back to running: runc
        resumes only a frozen one, so it is frozen again (directly, ~1 ms) and unpaused
        through the API. Raises when it could not be done (the container is left
        running either way)."""
        freezer = self._freezer(container_id)
        if freezer is None:
            raise Unavailable("its freezer file is unknown")
        if not cgroups.freeze(freezer):
            raise Unavailable("it did not freeze within a second")
        try:
            self._client.api.unpause(container_id)
        except BaseException:
            with contextlib.suppress(OSError):
                cgroups.write(freezer, freezer.thawed)
            raise

    def refreeze(self, container_id: str) -> bool:
        """Makes a container Docker says is Paused frozen in fact (a run killed between a
        direct thaw and its settle left it running, Docker's view unchanged); False when
        it runs still (it would not freeze). Without a freezer file nothing was thawed
        directly: Docker's view holds."""
        freezer = self._freezer(container_id)
        if freezer is None:
            return True
        try:
            return cgroups.is_frozen(freezer) or cgroups.freeze(freezer)
        except OSError:  # gone: its exit is reported apart
            return True

    def memory_bytes(self, container_id: str) -> int | None:
        """Memory in use, as `docker stats` shows it (the page cache it can drop excluded)."""
        try:
            stats = self._client.api.stats(container_id, stream=False, one_shot=True)
        except (docker.errors.APIError, OSError):
            return None
        return memory_in_use(stats)

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

    def terminate(self, container_id: str) -> bool:
        """Sends what `docker stop` sends first (the image's STOPSIGNAL, else SIGTERM)
        without waiting for the exit; False when the container is not running (or gone)."""
        api = self._client.api
        try:
            found = api.inspect_container(container_id)
            if not found.get("State", {}).get("Running"):
                return False
            api.kill(container_id, signal=(found.get("Config") or {}).get("StopSignal")
                     or "SIGTERM")
        except (docker.errors.APIError, OSError):
            return False
        return True

    def remove(self, container_id: str, *, grace: float = 2.0) -> None:
        """Stops (SIGTERM, then SIGKILL after `grace`) and removes; a missing one is fine."""
        self._freezers.pop(container_id, None)
        with contextlib.suppress(docker.errors.NotFound):
            container = self._client.containers.get(container_id)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=max(0, int(grace)))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # with any anonymous volume

    def managed(self) -> list[ManagedContainer]:
        """Every container this daemon created, running or not."""
        found = self._client.containers.list(
            all=True, filters={"label": f"{labels.DAEMON}={self.daemon_id}"}
        )
        result = []
        for container in found:
            managed = managed_container(str(container.id), container.labels,
                                        container.status == "running")
            if managed is not None:
                result.append(replace(managed, paused=container.status == "paused"))
        return result
