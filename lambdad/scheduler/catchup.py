"""Which runs a runner that starts (or takes over leadership) fires at once (pure).

Each fire leaves a row keyed by (schedule, tick) (scheduler/table.py), so the newest row
says where firing stopped. When that row is recent, the cluster was up and only the
leader changed (killed, partitioned, restarted): every tick since is fired, each once,
so a takeover loses none (the unique key refuses any the old leader fired meanwhile).
When it is old or missing, the daemon (or the whole cluster) was down: one catch-up run
for the latest missed tick, as a single daemon always did. Both stay within the catch-up
window and after the schedule's creation, and a long gap never floods the queue: past
`cap` ticks only the latest is fired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_TICKS = 120  # per schedule and takeover


@dataclass(frozen=True)
class Missed:
    last_tick: float | None  # the newest fire row's tick (None: no row)
    last_run: float | None  # the schedule row's last run (rows older than fire rows)
    created_at: float


def missed_ticks(missed: Missed, now: float, *, window: float, fresh: float,
                 runs_after: Callable[[float, int], list[float]],
                 previous: Callable[[float], float | None],
                 cap: int = MAX_TICKS) -> list[float]:
    """The ticks to fire now, oldest first. `runs_after(t, n)`: the next n runs after t;
    `previous(t)`: the latest run before t. `fresh`: how recent the last fire row
    must be for the cluster to count as up (3 x node_down_after)."""
    if missed.last_tick is not None and now - missed.last_tick <= fresh:
        start = max(missed.last_tick, missed.created_at, now - window - 1)
        ticks = [t for t in runs_after(start, cap + 1) if t <= now and now - t <= window]
        if len(ticks) > cap:
            latest = _latest(now, runs_after, previous)
            return [latest if latest is not None else ticks[-1]]
        return ticks
    latest = _latest(now, runs_after, previous)
    since = missed.last_run if missed.last_run is not None else missed.created_at
    if missed.last_tick is not None:
        since = max(since, missed.last_tick)
    if latest is not None and latest > since and now - latest <= window:
        return [latest]
    return []


def _latest(now: float, runs_after: Callable[[float, int], list[float]],
            previous: Callable[[float], float | None]) -> float | None:
    """The latest run at or before `now` (`previous` leaves out a run at `now` itself,
    which the runner's loop, waiting for runs after `now`, would never fire)."""
    latest = previous(now)
    if latest is not None:
        after = runs_after(latest, 1)
        if after and after[0] <= now:
            latest = after[0]
    return latest
