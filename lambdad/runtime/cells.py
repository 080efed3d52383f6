"""Stem cells: pre-started generic instances of the standard runtime, one pool per class.

A cell is a container of the runtime image with its socket open and no function
loaded. A cold request for a standard-runtime function takes one and specializes it
(the runtime manager does that); from then on it is an ordinary instance of that
version and never comes back here. This module is the pool's bookkeeping only:
which cells are ready, which are starting, what to start next. Starting and
stopping containers are callables the manager passes in, so the rules are unit
tested without Docker.

- The pool keeps `size` ready cells for every class in use (the classes of the
  routed standard-runtime functions); classes that fall out of use lose their cells.
- At most `max_starting` cells start at once, so refilling after a burst does not
  crowd out the containers that requests are waiting for.
- A start that fails is not retried at once: after consecutive failures `refill()`
  waits 1, 2, 4 ... up to 60 seconds, so a missing runtime image cannot spin the loop.
- The refill after a take starts REFILL_DELAY_S later (with `later`, the loop's timer): the
  cell just taken is serving a cold request then, and a container start at that moment
  (the Docker SDK's thread holding the GIL for ~2 ms, dockerd, containerd and runc on the
  same cores) lengthened that request by about 1 ms of lambdad's init alone
  (docs/performance.md, "Issue 16: the cell cold start").
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lambdad.functions import FunctionConfig

if TYPE_CHECKING:
    from lambdad.runtime.folder import InstanceFolder
    from lambdad.runtime.upstream import UpstreamConnection

log = logging.getLogger("lambdad.runtime")


# Variables the interpreter or libc read when the process starts: a cell's process has
# started already, so a function that sets one gets a container of its own instead.
STARTUP_ONLY_PREFIXES = ("LD_", "PYTHON", "MALLOC_", "LC_")
STARTUP_ONLY_NAMES = frozenset({"LANG", "LANGUAGE", "TZ", "GLIBC_TUNABLES"})
# After a take, the pool refills this much later: past the cold request the cell serves
# (p99 well under it on an idle host), long before a container start (hundreds of ms) ends.
REFILL_DELAY_S = 0.05


def needs_own_process(env: Mapping[str, str]) -> bool:
    return any(name.startswith(STARTUP_ONLY_PREFIXES) or name in STARTUP_ONLY_NAMES
               for name in env)


@dataclass(frozen=True, order=True)
class CellClass:
    """What a container is created from and with; cells of one class are interchangeable.

    `image` is the runtime image's id: a version's code goes only into cells of the
    runtime image it was built on.
    """

    memory_mb: int
    network: str
    cpu: float
    pids_limit: int
    image: str = ""

    @classmethod
    def of(cls, config: FunctionConfig, image: str = "") -> CellClass:
        return cls(config.memory_mb, config.network, config.cpu, config.pids_limit, image)

    def label(self) -> str:
        return f"{self.memory_mb}MiB/{self.cpu:g}cpu/{self.pids_limit}pids/{self.network}"


@dataclass(eq=False)
class Cell:
    id: str
    cell_class: CellClass
    container_id: str
    folder: InstanceFolder  # bound read-write at /run/lambda, locked once the socket is up
    code_dir: Path  # holds task/ and deps/, bound read-only at /var/task and /opt/lambda/deps
    conn: UpstreamConnection | None = None  # opened when the socket answered


@dataclass(frozen=True)
class ClassStats:
    cell_class: CellClass
    ready: int
    starting: int


class CellPool:
    def __init__(
        self,
        size: int,
        *,
        start: Callable[[CellClass], Awaitable[Cell]],
        destroy: Callable[[Cell], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], None],
        max_starting: int = 2,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        """`later(delay, callback)` runs a callback after `delay` seconds (the loop's
        call_later); without it a take refills at once."""
        self.size = size
        self._later = later
        self._refill_due = False  # a refill after a take is waiting for its timer
        self._clock = clock
        self._failures = 0  # consecutive failed starts
        self._retry_at = 0.0
        self.max_starting = max_starting
        self._start = start
        self._destroy = destroy
        self._spawn = spawn
        self._ready: dict[CellClass, deque[Cell]] = {}
        self._starting: Counter[CellClass] = Counter()
        self._wanted: set[CellClass] = set()
        self.closed = False
        self.held = False  # wanted classes are kept, but nothing starts (until reconciled)
        self.failed_total = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and not self.closed

    def want(self, classes: Iterable[CellClass]) -> None:
        """Sets the classes in use; cells of other classes stop, missing ones start."""
        self._wanted = set(classes) if self.enabled else set()
        for cell_class in list(self._ready):
            if cell_class not in self._wanted:
                for cell in self._ready.pop(cell_class):
                    self._spawn(self._destroy(cell))
        self.refill()

    def take(self, cell_class: CellClass) -> Cell | None:
        """A ready cell of exactly this class, else one that differs only in memory and
        CPU (the caller updates those), else None. The pool refills in the background."""
        cell = self._pop(cell_class)
        if cell is None:
            for other in sorted(self._ready):
                if (other.network, other.pids_limit, other.image) == (
                        cell_class.network, cell_class.pids_limit, cell_class.image):
                    cell = self._pop(other)
                    if cell is not None:
                        break
        if cell is not None:
            self._failures, self._retry_at = 0, 0.0  # a cell lived to be used: starts work
            self._refill_after_take()
        return cell

    def _refill_after_take(self) -> None:
        """Refills REFILL_DELAY_S from now (one timer for a burst of takes), not while the
        cell just taken serves its cold request."""
        if self._later is None:
            self.refill()
        elif not self._refill_due:
            self._refill_due = True
            self._later(REFILL_DELAY_S, self._delayed_refill)

    def _delayed_refill(self) -> None:
        self._refill_due = False
        self.refill()

    def _pop(self, cell_class: CellClass) -> Cell | None:
        ready = self._ready.get(cell_class)
        if not ready:
            return None
        cell = ready.popleft()  # the oldest: all are equal, and the young ones settle
        if not ready:
            del self._ready[cell_class]
        return cell

    def refill(self) -> None:
        if not self.enabled or self.held or self._clock() < self._retry_at:
            return
        for cell_class in sorted(self._wanted):
            have = len(self._ready.get(cell_class, ())) + self._starting[cell_class]
            for _ in range(self.size - have):
                if sum(self._starting.values()) >= self.max_starting:
                    return
                self._starting[cell_class] += 1
                self._spawn(self._start_one(cell_class))

    def _failed(self, cell_class: CellClass, what: str) -> None:
        self.failed_total += 1
        self._failures += 1
        backoff = min(60.0, 2.0 ** (self._failures - 1))
        self._retry_at = self._clock() + backoff
        log.warning("stem cell %s class=%s retry_in_s=%g", what, cell_class.label(), backoff)

    async def _start_one(self, cell_class: CellClass) -> None:
        try:
            cell = await self._start(cell_class)
        except Exception as exc:
            self._failed(cell_class, f"failed to start: {exc}")
            return
        finally:  # also when cancelled: a phantom "starting" would block refills for good
            self._starting[cell_class] -= 1
        if not self.enabled or cell_class not in self._wanted:
            await self._destroy(cell)
            return
        self._ready.setdefault(cell_class, deque()).append(cell)
        self.refill()

    def lost(self, container_id: str) -> Cell | None:
        """A ready cell's container died: forget it (the caller cleans up)."""
        for cell_class, ready in list(self._ready.items()):
            for cell in ready:
                if cell.container_id == container_id:
                    ready.remove(cell)
                    if not ready:
                        del self._ready[cell_class]
                    self._failed(cell_class, "died while ready")  # no restart loop
                    return cell
        return None

    def ready_cells(self) -> list[Cell]:
        return [cell for ready in self._ready.values() for cell in ready]

    def stats(self) -> list[ClassStats]:
        classes = sorted(set(self._ready) | {c for c, n in self._starting.items() if n} |
                         self._wanted)
        return [ClassStats(c, len(self._ready.get(c, ())), self._starting[c]) for c in classes]

    def close(self) -> list[Cell]:
        """Stops refilling and hands back every ready cell for the caller to destroy."""
        self.closed = True
        self._wanted = set()
        cells = self.ready_cells()
        self._ready.clear()
        return cells
