"""One lock per function: deploy, rollback, config changes, delete and schedule creation
of one function never interleave (each reads rows, then writes rows that depend on them)."""

from __future__ import annotations

import asyncio


class FunctionLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def local(self, name: str) -> asyncio.Lock:
        """This node's lock alone (applying a change another node made and announced)."""
        return self._locks.setdefault(name, asyncio.Lock())

    def busy(self, name: str) -> bool:
        """A change to the function is under way (its status reads "deploying")."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()
