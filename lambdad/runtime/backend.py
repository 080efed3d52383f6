"""The container surface the runtime manager uses, as a Protocol.

`DockerBackend` implements it against the Docker engine; tests/support/fake_docker.py
implements it in memory, so the manager is unit-tested without Docker. Every method
blocks: the manager calls them in worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lambdad.functions import FunctionVersion
from lambdad.runtime.cells import CellClass
from lambdad.runtime.docker_backend import ContainerState, ManagedContainer


class Backend(Protocol):
    def start(self, version: FunctionVersion, instance_id: str, socket_dir: Path, *,
              init_later: bool = False, code: Path | None = None, image: str = "") -> str: ...

    def start_cell(self, cell_class: CellClass, cell_id: str, socket_dir: Path,
                   code_dir: Path, image: str) -> str: ...

    def clean_folder(self, folder: Path, instance_id: str, image: str,
                     timeout: float = 60.0) -> None: ...

    def update_limits(self, container_id: str, limits: CellClass) -> None: ...

    def image_id(self, image: str) -> str: ...

    def rename(self, container_id: str, name: str) -> None: ...

    def is_running_unpaused(self, container_id: str) -> bool: ...

    def pause(self, container_id: str) -> None: ...

    def unpause(self, container_id: str) -> None: ...

    def memory_bytes(self, container_id: str) -> int | None: ...

    def state(self, container_id: str) -> ContainerState: ...

    def logs_tail(self, container_id: str, lines: int = 20) -> str: ...

    def terminate(self, container_id: str) -> bool: ...

    def remove(self, container_id: str, *, grace: float = 2.0) -> None: ...

    def managed(self) -> list[ManagedContainer]: ...
