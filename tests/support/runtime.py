"""A RuntimeManager over the fake Docker backend, for unit tests of the manager."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lambdad.build.artifacts import ArtifactStore
from lambdad.build.localize import Localized
from lambdad.functions import FunctionConfig, FunctionVersion, Scaling
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.manager import RuntimeManager
from lambdad.runtime.pool import Instance
from tests.support.fake_docker import RUNTIME_IMAGE_ID, FakeContainer, FakeDocker


@contextmanager
def short_root() -> Iterator[Path]:
    """Socket folders under /tmp: a Unix socket's path has at most 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="rm-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def version(name: str = "fn", number: int = 1, *, runtime: str = "python3.11",
            timeout_s: int = 5, env: dict[str, str] | None = None, memory_mb: int = 128,
            **scaling: Any) -> FunctionVersion:
    return FunctionVersion(
        function=name, number=number, image=f"lambda-fn/{name}:v{number}", image_id="id",
        config=FunctionConfig(runtime=runtime, timeout_s=timeout_s, env=env or {},
                              memory_mb=memory_mb, scaling=Scaling(**scaling)),
        code_sha256="0" * 64, code_size=1, created_at=datetime.now(UTC),
    )


class Runtime:
    """The manager, its fake engine and what it reported, in one state folder."""

    def __init__(self, root: Path, *, cells: int = 0, pause_after: float = 0.0,
                 freeze_window: float = 0.0, frozen_memory: int = 0,
                 localize: Callable[[FunctionVersion], Awaitable[Localized]] | None = None,
                 ) -> None:
        self.root = root
        self.instances_dir = root / "i"
        self.cells_dir = root / "c"
        self.instances_dir.mkdir(exist_ok=True)
        self.artifacts = ArtifactStore(root / "artifacts")
        self.artifacts.prepare()
        self.docker = FakeDocker()
        self.events: list[tuple[str, str]] = []  # (event, instance id)
        self.manager = RuntimeManager(
            self.docker, instances_dir=self.instances_dir, cells_dir=self.cells_dir,
            start_timeout=5, on_instance=self._on_instance, artifacts=self.artifacts,
            cell_pool_size=cells, pause_after=pause_after, freeze_window=freeze_window,
            frozen_memory=frozen_memory, socket_owner=os.getuid(), localize=localize,
        )
        self.docker.on_exit = self.manager.instance_exited

    def _on_instance(self, instance: Instance, event: str) -> None:
        self.events.append((event, instance.id))

    def save_artifact(self, v: FunctionVersion, image_id: str = RUNTIME_IMAGE_ID) -> None:
        """The version's code as a build leaves it, for a stem cell to load."""
        code = self.root / "build" / f"{v.function}-{v.number}"
        code.mkdir(parents=True)
        (code / "handler.py").write_text("def handler(event, context):\n    return 1\n")
        self.artifacts.save(v.function, v.number, code, None, runtime_image=image_id)

    def mark_loaded(self, instance_id: str, function: str = "fn", number: int = 1) -> None:
        """The owner file lambdad writes once an instance's code loaded (STATE/c/<id>/owner):
        what a restart adopts a specialized cell or a standard runtime's container by."""
        (self.cells_dir / instance_id).mkdir(parents=True)
        (self.cells_dir / instance_id / "owner").write_text(f"{function}\n{number}\n")

    async def loaded_leftover(self, function: str, number: int, instance_id: str, *,
                              cell: bool = False) -> FakeContainer:
        """A container an earlier run left serving `function` v`number`, with the owner
        file of its loaded code (what a restart adopts it by)."""
        container = await self.docker.leftover(function, number, instance_id,
                                               self.instances_dir, cell=cell)
        self.mark_loaded(instance_id, function, number)
        return container

    async def cells_ready(self, count: int = 1) -> None:
        """Waits for `count` ready stem cells, reconciled first (cells start only once what
        a last run left is gone)."""
        await self.manager.reconcile()
        await until(lambda: len(self.manager.cells.ready_cells()) == count)

    def folders(self) -> list[str]:
        return sorted(os.listdir(self.instances_dir))

    async def call(self, name: str = "fn", number: int | None = None,
                   request_id: str = "req-1") -> tuple[InvocationResponse, dict[str, Any]]:
        response = await self.manager.invoke(InvocationRequest(
            function=name, method=b"GET", target=b"/hello", headers=[], body=b"",
            invocation_type="direct", request_id=request_id, version=number))
        return response, json.loads(await response.read())


async def cell_runtime(root: Path, registered: FunctionVersion, *others: FunctionVersion
                       ) -> Runtime:
    """A runtime with one stem cell ready: `registered` routed (the cell is of its class),
    and its artifact and each of `others`' saved, for a cell to load."""
    rt = Runtime(root, cells=1)
    for v in (registered, *others):
        rt.save_artifact(v)
    rt.manager.register(registered)
    await rt.cells_ready()
    return rt


def age(rt: Runtime, seconds: float, name: str = "") -> None:
    """Makes the instances (of function `name`, or all) idle, and frozen ones frozen,
    `seconds` longer: no real waiting."""
    for pool in rt.manager._routes.every_pool():
        if not name or pool.version.function == name:
            for instance in pool.instances:
                instance.last_used -= seconds
                if instance.frozen_since is not None:
                    instance.frozen_since -= seconds


async def tick(rt: Runtime) -> None:
    """One housekeeping round and the work it started in the background."""
    rt.manager.housekeeping()
    await rt.manager.drain_background()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits for something the manager does in the background."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def run(scenario: Callable[[Path], Awaitable[None]], timeout: float = 20.0) -> None:
    async def bounded(root: Path) -> None:
        async with asyncio.timeout(timeout):
            await scenario(root)

    with short_root() as root:
        asyncio.run(bounded(root))
