"""Which idle instances are frozen instead of stopped, and which frozen ones stop (pure).

An instance idle for its function's `idle_timeout` beyond `min_instances` used to stop at
once; a cold start then imports the function's code again. With a host `freeze_window`
it is kept frozen (cgroup freezer: no CPU, its memory kept) for that long instead, so a
request meanwhile thaws it in milliseconds; the window over, it stops. The memory frozen
instances hold is bounded per host (`frozen_memory_mb`): over the bound, the longest
frozen stop first. These rules work on plain values, so they are unit-tested without
Docker or asyncio; the pool and the runtime manager apply them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class IdleState:
    """What the decision needs of one instance of a pool."""

    last_used: float  # monotonic seconds
    busy: bool
    frozen_since: float | None = None  # in the freeze window since (monotonic); None: not
    unfreezable: bool = False  # its last pause failed: it cannot be kept frozen


@dataclass
class IdleFates:
    """Indices into the states given to `idle_fates`."""

    freeze: list[int] = field(default_factory=list)  # past idle_timeout: keep frozen
    stop: list[int] = field(default_factory=list)  # stop now
    revive: list[int] = field(default_factory=list)  # frozen, but the minimum needs it


def idle_fates(states: Sequence[IdleState], *, now: float, idle_timeout: float,
               min_instances: int, freeze_window: float) -> IdleFates:
    """The fate of each instance idle for `idle_timeout`: the most recently used stay
    for the minimum (a frozen one among them is revived, rather than a new instance
    started); the others are frozen for `freeze_window`, or stopped when the window is
    0, has passed, or the instance could not be frozen. Busy and recently used
    instances are left alone."""
    fates = IdleFates()
    expired = [i for i, s in enumerate(states)
               if not s.busy and now - s.last_used >= idle_timeout]
    live = len(states) - len(expired)
    expired.sort(key=lambda i: states[i].last_used, reverse=True)  # newest first
    kept = max(0, min_instances - live)
    for rank, index in enumerate(expired):
        state = states[index]
        if rank < kept:
            if state.frozen_since is not None:
                fates.revive.append(index)
        elif freeze_window <= 0 or state.unfreezable:
            fates.stop.append(index)
        elif state.frozen_since is None:
            fates.freeze.append(index)
        elif now - state.frozen_since >= freeze_window:
            fates.stop.append(index)
    fates.stop.sort(key=lambda i: states[i].last_used)  # the longest idle go first
    return fates


@dataclass(frozen=True)
class Frozen:
    """A frozen instance as the host-wide bound sees it."""

    frozen_since: float
    memory_bytes: int


def over_bound(frozen: Sequence[Frozen], bound_bytes: int) -> list[int]:
    """Indices of the frozen instances to stop, the longest frozen first, until the memory
    of those left is within `bound_bytes` (0 keeps none)."""
    total = sum(f.memory_bytes for f in frozen)
    stop: list[int] = []
    for index in sorted(range(len(frozen)), key=lambda i: frozen[i].frozen_since):
        if total <= bound_bytes and bound_bytes > 0:
            break
        stop.append(index)
        total -= frozen[index].memory_bytes
    return stop
