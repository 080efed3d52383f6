"""Stopping instances and stem cells, and removing what they leave on the host.

A stop waits out its grace on the event loop (Docker's die event, passed in through
`exited`, ends the wait early), never in a worker thread; folders go fd-based, with a
cleanup container for what lambdad's user cannot remove.

A start that is cancelled (lambdad stopping, its function deleted) stops its container
like any graceful stop, with the others; `finish` lets a container's creation end first,
so a cancelled start never leaves one that nobody knows of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from lambdad.errors import Unavailable
from lambdad.runtime.backend import Backend
from lambdad.runtime.cells import Cell
from lambdad.runtime.docker_backend import ContainerState
from lambdad.runtime.folder import InstanceFolder, remove_tree
from lambdad.runtime.pool import Instance

log = logging.getLogger("lambdad.runtime")

GRACE_S = 1.0  # a graceful stop's: from the stop signal to SIGKILL, unless it exits first

T = TypeVar("T")


async def finish(work: Awaitable[T]) -> T:
    """Awaits `work` to its end even when cancelled meanwhile (a Docker call in a thread
    goes on regardless: the container it creates must be known, to be stopped); the
    cancellation then comes at the caller's next await."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # taken back now, given again once the work has ended
            cancelled = True
    if cancelled:
        task = asyncio.current_task()
        if task is not None:
            task.cancel()
    return result


class Stopper:
    def __init__(self, backend: Backend, *, instances_dir: Path, runtime_image: str) -> None:
        self._backend = backend
        self._instances_dir = instances_dir
        self._runtime_image = runtime_image  # what a cleanup container runs
        self._exits: dict[str, asyncio.Event] = {}  # containers in their stop's grace

    async def destroy(self, instance: Instance, grace: float = GRACE_S) -> None:
        instance.dead = True
        for conn in instance.idle:
            conn.close()
        instance.idle.clear()
        try:
            async with instance.transition:  # a pause under way ends first
                if instance.paused:  # a frozen process cannot take the stop signal
                    with contextlib.suppress(Exception):
                        if not await asyncio.to_thread(self._backend.thaw,
                                                       instance.container_id):
                            await asyncio.to_thread(self._backend.unpause,
                                                    instance.container_id)
                    instance.paused = False
            ended = await self.stop(instance.container_id, grace)
        finally:  # a failed removal is retried by the next start's reconcile
            await self.remove_folder(instance.folder)
            if instance.code_dir is not None:
                await self.remove_tree(instance.code_dir)
        log.info('instance stopped function=%s version=%d instance=%s reason="%s" ended=%s',
                 instance.version.function, instance.version.number, instance.id,
                 instance.end_reason or "stopped", ended)

    async def unwind(self, instance: Instance, exc: BaseException, reason: str) -> None:
        """Stops an instance whose start ended with `exc`: one that failed is killed at
        once; one whose start was cancelled (lambdad stopping, its function deleted) is
        stopped as the others are, with their grace."""
        cancelled = isinstance(exc, asyncio.CancelledError)
        instance.end_reason = instance.end_reason or (
            "stopped while starting" if cancelled else reason)
        await self.destroy(instance, grace=GRACE_S if cancelled else 0)

    async def destroy_cell(self, cell: Cell) -> None:
        if cell.conn is not None:
            cell.conn.close()
        try:
            await asyncio.to_thread(self._backend.remove, cell.container_id, grace=0)
        finally:  # a failed removal is retried by the next start's reconcile
            await self.remove_folder(cell.folder)
            await self.remove_tree(cell.code_dir)

    def exited(self, container_id: str) -> None:
        """Docker reported the container died: a stop waiting out its grace ends."""
        exited = self._exits.get(container_id)
        if exited is not None:
            exited.set()

    async def stop(self, container_id: str, grace: float) -> str:
        """Stops and removes a container: its stop signal (SIGTERM unless its image says
        otherwise), up to `grace` seconds to exit (Docker's die event ends the wait), then
        SIGKILL with the removal. The grace passes here on
        the event loop, not in a worker thread as `docker stop` would pass it: every Docker
        call shares a few threads, and a function that takes its whole grace to stop (its
        SIGTERM handler, see the runtime's shutdown) must not hold them, stopping its
        instances a few at a time while every other function's starts wait for a thread.

        Returns how it ended, for the log: "exited" (within its grace: the die event came),
        "not running" (when the signal was to go), "killed" (no grace, or it ran out)."""
        ended = "killed"
        if grace > 0:
            exited = self._exits.setdefault(container_id, asyncio.Event())
            try:
                if await asyncio.to_thread(self._backend.terminate, container_id):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(grace):
                            await exited.wait()
                            ended = "exited"
                else:
                    ended = "not running"
            finally:
                self._exits.pop(container_id, None)
        await asyncio.to_thread(self._backend.remove, container_id, grace=0)
        return ended

    async def remove(self, container_id: str) -> None:
        """Removes a container at once (one left by an earlier run)."""
        await asyncio.to_thread(self._backend.remove, container_id, grace=0)

    async def settled_state(self, container_id: str) -> ContainerState:
        """The container's state once a dying process has had a moment to exit.

        A crash closes the socket a little before Docker records the exit; asking
        at once would report a running container and a vaguer error.
        """
        state = await asyncio.to_thread(self._backend.state, container_id)
        for _ in range(10):
            if not state.running:
                break
            await asyncio.sleep(0.05)
            state = await asyncio.to_thread(self._backend.state, container_id)
        return state

    async def remove_folder(self, folder: InstanceFolder) -> None:
        folder.close()
        await self.remove_instance_folder(folder.path.name)

    async def remove_instance_folder(self, name: str) -> None:
        """Removes STATE/i/<name> off the loop, fd-based. What lambdad's user cannot remove
        (folders a function made 0700 before the lock) goes with a cleanup container."""
        if await asyncio.to_thread(remove_tree, self._instances_dir, name):
            return
        log.info("instance folder needs a cleanup container instance=%s", name)
        try:
            await asyncio.to_thread(self._backend.clean_folder, self._instances_dir / name,
                                    name, self._runtime_image)
        except Unavailable as exc:
            log.warning("instance folder left behind instance=%s error=%s", name, exc)
            return
        if await asyncio.to_thread(remove_tree, self._instances_dir, name):
            log.info("instance folder removed by a cleanup container instance=%s", name)
        else:
            log.warning("instance folder left behind instance=%s; the next start retries", name)

    async def remove_tree(self, path: Path) -> None:
        """A cell's code folder (hard links, thousands of files): removed off the loop."""
        if not await asyncio.to_thread(remove_tree, path.parent, path.name):
            log.warning("could not remove %s", path)
