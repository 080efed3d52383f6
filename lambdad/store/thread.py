"""The store's one thread: runs blocking calls in order and hands each result back to the
awaiting event loop.

`loop.run_in_executor` on a one-worker ThreadPoolExecutor did the same at about 125 us of
CPU per call (measured in-process, 4,000 calls of a no-op): a concurrent Future, a work
item, the executor's idle-semaphore check (a Condition.wait(0) while the thread is busy),
then wrap_future's chained callbacks. Here a call is one asyncio future, one SimpleQueue
put and one call_soon_threadsafe: about 40-60 us. The async queue makes one call per cycle
of its worker, so this is part of every event's cost (issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class StoreThread:
    """One thread, started at the first call; calls run one at a time, in order."""

    def __init__(self, name: str = "store") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    async def call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the store's thread is shut down")
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    # A daemon thread: a store never closed must not hold the process at exit
                    # (an interrupted transaction is rolled back by SQLite).
                    self._thread = threading.Thread(target=self._serve, name=self._name,
                                                    daemon=True)
                    self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn))
        return await future

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, fn = item
            try:
                result: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handed to the caller, as an executor would
                result = (False, exc)
            # RuntimeError: the caller's loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, *result)

    def shutdown(self) -> None:
        """Runs what was queued, then ends the thread (waits for it)."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
