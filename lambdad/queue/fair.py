"""Which queued events to deliver next: the pure rule behind AsyncWorker's dispatch.

Oldest-first over the whole queue lets one function block all others: when the oldest
events belong to a function at its limit, nothing behind them moves (cron events
included). So delivery is per function instead:

- a function at its limit is passed over, never waited for;
- between functions with deliverable events, slots go round-robin, starting with the
  function served longest ago (so a backlog of one cannot starve a newcomer across
  dispatches), and inside one function oldest first;
- the global cap bounds the hogs, not the newcomers: a function with nothing running may
  start one event even when the cap is reached, so a slow function can delay another
  function's first event by nothing at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence

from lambdad.queue.model import AsyncInvocation


def select(
    due: Sequence[AsyncInvocation],
    limits: Mapping[str, int],
    running: Mapping[str, int],
    free: int,
    last_served: Mapping[str, int],
) -> list[AsyncInvocation]:
    """The events to start now, in the order they should start.

    `due`: queued events whose time has come, any order (each function's are taken
    oldest first); `limits`: deliveries a function may have running at once (a missing
    function counts as 1); `running`: deliveries running now per function; `free`: slots
    left under the global cap (may be 0 or less); `last_served`: a number per function
    that grows each time it is served (missing: never served).
    """
    queues: dict[str, deque[AsyncInvocation]] = {}
    for event in sorted(due, key=lambda e: (e.next_attempt_at, e.created_at)):
        queues.setdefault(event.function, deque()).append(event)
    room = {name: max(1, limits.get(name, 1)) - running.get(name, 0) for name in queues}
    ring = sorted((name for name in queues if room[name] > 0),
                  key=lambda name: (last_served.get(name, -1), queues[name][0].next_attempt_at))
    chosen: list[AsyncInvocation] = []
    # A function with nothing running gets its first event whatever the global cap says.
    for name in ring:
        if running.get(name, 0) == 0:
            chosen.append(queues[name].popleft())
            room[name] -= 1
            free -= 1
    while free > 0:
        ring = [name for name in ring if room[name] > 0 and queues[name]]
        if not ring:
            break
        for name in ring:
            if free <= 0:
                break
            chosen.append(queues[name].popleft())
            room[name] -= 1
            free -= 1
    return chosen


def mark_served(last_served: dict[str, int], chosen: Iterable[AsyncInvocation],
                turn: int) -> int:
    """Records the order functions were served in; returns the next turn number."""
    for event in chosen:
        last_served[event.function] = turn
        turn += 1
    return turn


def newcomer_has_room(left: Iterable[str], known: Container[str], limit_for: Callable[[str], int],
                      running: Mapping[str, int], free: int) -> bool:
    """Whether another cycle should run at once: `select` counted a function it had no limit
    for (`known`: those it had) as limit 1, and one such function with events left behind
    may take more under its real limit while the global cap has room."""
    if free <= 0:
        return False
    return any(name not in known and running.get(name, 0) < max(1, limit_for(name))
               for name in left)
