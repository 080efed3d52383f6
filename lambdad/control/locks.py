"""One lock per function: deploy, rollback, config changes, delete and schedule creation
of one function never interleave (each reads rows, then writes rows that depend on them).

In cluster mode the lock also spans the nodes: after this node's own lock, a PostgreSQL
advisory lock on the node's session (`remote`, lambdad/cluster/locks.py), polled until
free. If a session dies mid-change its lock is freed; the versions' primary key is the
backstop (a conflicting version row fails and that deploy cleans up)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Protocol

from lambdad.errors import FailedPrecondition

POLL = 0.1  # seconds between tries of a lock another node holds


class RemoteLocks(Protocol):
    async def try_lock(self, name: str) -> bool: ...
    async def unlock(self, name: str) -> None: ...


class FunctionLocks:
    def __init__(self, remote: RemoteLocks | None = None) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self.remote = remote

    def of(self, name: str, *, wait: bool = True) -> FunctionLock:
        """The function's lock across the cluster (`async with`); with `wait=False` a
        lock held by another node fails at once with FailedPrecondition."""
        return FunctionLock(self, name, wait)

    def local(self, name: str) -> asyncio.Lock:
        """This node's lock alone (applying a change another node made and announced)."""
        return self._locks.setdefault(name, asyncio.Lock())

    def busy(self, name: str) -> bool:
        """A change to the function is under way here (its status reads "deploying")."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()


class FunctionLock:
    def __init__(self, locks: FunctionLocks, name: str, wait: bool) -> None:
        self._locks = locks
        self._name = name
        self._wait = wait
        self._local = locks.local(name)
        self._remote: RemoteLocks | None = None

    async def __aenter__(self) -> None:
        await self._local.acquire()
        try:
            remote = self._locks.remote
            if remote is not None:
                while not await remote.try_lock(self._name):
                    if not self._wait:
                        raise FailedPrecondition(
                            f"function {self._name!r} is being changed through another "
                            "node; try again when that ends")
                    await asyncio.sleep(POLL)
                self._remote = remote
        except BaseException:
            self._local.release()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._remote is not None:
                remote, self._remote = self._remote, None
                await asyncio.shield(remote.unlock(self._name))
        finally:
            self._local.release()
