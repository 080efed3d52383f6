"""Start parts in order, stop them in reverse: the daemon's one lifecycle.

A component is anything with `name`, `async start()` and `async stop()`. `Lifecycle.start`
starts one and, once that returned, remembers it; `stop` stops every started one, newest
first, each once; a failed stop is logged and the rest still stop (the first such failure
is raised after them, unless a start failure is already on its way out). A component
whose `start` fails (or is cancelled) must leave nothing behind itself: it is not started,
so its `stop` is not called. Hence a failure anywhere unwinds exactly what started.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, TypeVar

log = logging.getLogger("lambdad")


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


C = TypeVar("C", bound=Component)


class Lifecycle:
    """The started components, in start order; an async context manager that stops them."""

    def __init__(self) -> None:
        self.started: list[Component] = []

    async def start(self, component: C) -> C:
        await component.start()
        self.started.append(component)
        return component

    async def stop(self) -> None:
        failure: Exception | None = None
        while self.started:
            component = self.started.pop()
            try:
                await component.stop()
            except Exception as exc:  # the rest must still stop
                log.exception("stopping %s failed", component.name)
                failure = failure or exc
        if failure is not None:
            raise failure

    async def __aenter__(self) -> Lifecycle:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        try:
            await self.stop()
        except Exception:
            if exc is None:
                raise  # else the start's failure says why, and the stop's was logged


class Step:
    """A component made of two callables, for parts whose start and stop are one call each."""

    def __init__(self, name: str, start: Callable[[], Awaitable[None]] | None = None,
                 stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()
