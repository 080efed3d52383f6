"""Group commit: writes asked for while one is under way go together in the next one.

Every accepted event must be in the store before its 202, and every store call is a hop to
the store's one thread plus a transaction. One hop per event made that hop, not the
database, the cost of an event. Here callers still wait for their own write to be committed,
but all the callers that arrive while a write is running share the next transaction, so a
burst of N events costs a handful of hops instead of N. A lone caller waits for nothing
more than its own write (it starts at once when nothing is under way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256  # the most items one write carries (bounds one transaction's length)


def take(pending: list[T], limit: int) -> tuple[list[T], list[T]]:
    """The next batch and what stays pending: the oldest `limit` items first."""
    return pending[:limit], pending[limit:]


class GroupCommit(Generic[T, R]):
    """`await submit(item)` returns `write`'s result for that item once its batch is written.

    `write` gets a batch and returns one result per item, in order. If it raises, every
    caller of that batch gets the exception (nothing of the batch was committed: `write`
    is one transaction), and the next batch is tried as usual.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *,
                 max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._max_batch = max(1, max_batch)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # writes made (for tests and the curious)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = take(self._pending, self._max_batch)
            try:
                results = await self._write([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch write of {len(batch)} items returned "
                                       f"{len(results)} results")
            except asyncio.CancelledError:
                for _, future in [*batch, *self._pending]:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self.batches += 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its caller may have gone (cancelled)
                    future.set_result(result)

    async def close(self) -> None:
        """Lets the write under way (and what is pending) finish."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
