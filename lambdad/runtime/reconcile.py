"""What an earlier run left: its healthy instances of routed versions are adopted (frozen
ones stay frozen until a request thaws them), every other container, instance folder and
cell folder is removed.

A daemon killed with -9 leaves its instances running, and the ones of active versions
can serve at once. A specialized stem cell, and a standard runtime's own container, is
adopted by the owner file written in STATE/c/<id> once its code loaded (one killed before
that would answer NotInitialized); a generic cell never outlives its daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from lambdad.runtime.backend import Backend
from lambdad.runtime.folder import CONTAINER_UID, InstanceFolder, Refused
from lambdad.runtime.pool import Instance
from lambdad.runtime.routing import Routes
from lambdad.runtime.starts import OWNER_FILE, Notify
from lambdad.runtime.stops import Stopper
from lambdad.runtime.upstream import UpstreamConnection

log = logging.getLogger("lambdad.runtime")

INSTANCE_ID = re.compile(r"[0-9a-f]{12}")  # secrets.token_hex(6): a folder name in i/ and c/


@dataclass
class Reconciler:
    backend: Backend
    routes: Routes
    stopper: Stopper
    notify: Notify
    instances_dir: Path
    cells_dir: Path
    socket_owner: int = CONTAINER_UID

    async def run(self) -> tuple[int, int]:
        """Adopts healthy instances of routed versions; removes every other container and
        the folders of everything not adopted. Returns (adopted, removed containers)."""
        adopted: set[str] = set()
        removed = 0
        for container in await asyncio.to_thread(self.backend.managed):
            stamp = container.stamp  # its label (a Dockerfile function's; "" on a cell)
            if container.cell:
                function, number, stamp = await asyncio.to_thread(self._owner,
                                                                  container.instance)
                container = replace(container, function=function, version=number)
            pool = self.routes.active.get(container.function)
            owned = container.cell or (pool is not None
                                       and pool.version.config.runtime != "docker")
            if owned and not container.cell:
                function, number, stamp = await asyncio.to_thread(self._owner,
                                                                  container.instance)
                if (function, number) != (container.function, container.version):
                    # A standard runtime's own container with no owner file: killed before
                    # its POST /init ended (its code never loaded: it would answer
                    # NotInitialized), or started by a lambdad from before the file.
                    # Replaced, not adopted.
                    pool = None
            if pool is not None and stamp and stamp != pool.version.stamp:
                # The same name and number, another version: a function deleted and
                # deployed again (it restarts at v1) while this node was down (cluster
                # mode). Its code is the deleted one's: replaced, not adopted. (No stamp:
                # loaded by a lambdad from before the stamp, adopted as it was then.)
                pool = None
            found = None
            if ((container.running or container.paused) and pool is not None
                    and pool.version.number == container.version
                    and INSTANCE_ID.fullmatch(container.instance)):
                found = await self._adoptable(container.instance)
            if found is not None and pool is not None:
                folder, conn = found
                instance = Instance(
                    container.instance, pool.version, container.id, folder,
                    start_path="cell" if container.cell else "container",
                    code_dir=self.cells_dir / container.instance if owned else None,
                    # only a standard runtime's: a Dockerfile function's is never trusted
                    log_channel=container.log_channel and pool.version.config.runtime != "docker",
                )
                instance.idle.append(conn)
                if container.paused:  # frozen by the earlier run: adopted frozen, thawed
                    await self._adopt_frozen(instance)  # by its next request
                pool.add(instance)
                if container.paused and pool.version.config.runtime != "docker":
                    # A standard runtime is paused only to be frozen (past its idle
                    # timeout): in the freeze window again from now, so the gauge says
                    # frozen and the frozen memory bound counts it at once, not once its
                    # idle timeout has passed again. (A Dockerfile instance may have been
                    # paused live, after pause_after: it stays a paused live one.)
                    instance.frozen_since = instance.last_used
                self.notify(instance, "adopted")
                adopted.add(container.instance)
            else:
                await self.stopper.remove(container.id)
                removed += 1
        # Folders of removed containers, and of a crash's cleanup containers: the same
        # fd-based removal as always, with a cleanup container for what is left.
        for name in await asyncio.to_thread(_children, self.instances_dir):
            if name not in adopted:
                await self.stopper.remove_instance_folder(name)
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cells_dir, 0o711)
        for name in await asyncio.to_thread(_children, self.cells_dir):
            if name not in adopted:  # generic cells never outlive their daemon
                await self.stopper.remove_tree(self.cells_dir / name)
        return len(adopted), removed

    async def _adopt_frozen(self, instance: Instance) -> None:
        """A container the earlier run paused: adopted paused (its socket accepts in the
        kernel while it is frozen), its memory measured as a pause would have. One that
        run thawed directly and was killed before settling runs while Docker says Paused:
        frozen again first, else (it would not freeze) adopted running, to be settled."""
        if not await asyncio.to_thread(self.backend.refreeze, instance.container_id):
            instance.unsettled = True
            return
        instance.paused = True
        size = await asyncio.to_thread(self.backend.memory_bytes, instance.container_id)
        instance.paused_bytes = (size if size is not None
                                 else instance.version.config.memory_mb * 1024 * 1024)

    def _owner(self, instance_id: str) -> tuple[str, int, str]:
        """(function, version, version_stamp) whose code the instance loaded, from its
        owner file; ("", 0, "") without one (a generic cell, or a standard container
        killed before its load)."""
        if not INSTANCE_ID.fullmatch(instance_id):
            return "", 0, ""
        try:
            function, number, *stamp = _read_owner(
                self.cells_dir / instance_id / OWNER_FILE).split()
            return function, int(number), "".join(stamp[:1])
        except (OSError, ValueError):
            return "", 0, ""

    async def _adoptable(
        self, instance_id: str
    ) -> tuple[InstanceFolder, UpstreamConnection] | None:
        """The folder of a running container found at start, locked and checked, with a
        connection to its socket; None when it does not answer or is refused."""
        try:
            folder = InstanceFolder.open(self.instances_dir, instance_id, owner=self.socket_owner)
        except OSError:
            return None
        try:
            folder.lock()  # locked already, unless an older lambdad started it
            return folder, await UpstreamConnection.open(folder)
        except Refused as exc:
            log.warning('instance refused at adoption instance=%s reason="%s"', instance_id,
                        exc.reason)
        except OSError:
            pass
        folder.close()
        return None


def _children(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _read_owner(path: Path) -> str:
    """A cell's owner file, opened without following a link and read within a bound."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, 256).decode()
    finally:
        os.close(fd)
