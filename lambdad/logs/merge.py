"""Merging log lines of several nodes by time (cluster mode's `logs`).

Pure. Each node returns its own lines oldest first, so a backlog is a k-way merge and
`tail` is applied after it (each node sends its own last N; the cluster's last N are
among those). A followed stream cannot be merged exactly: a line from a node whose
stream lags would come after newer lines of another, so live lines wait in a
`ReorderBuffer` for a short window and leave it in time order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime

from lambdad.logs.entry import LogEntry


def _time(entry: LogEntry) -> datetime:
    return entry.time


def merge_by_time(sources: Iterable[list[LogEntry]], tail: int = 0) -> list[LogEntry]:
    """The lines of every source (each oldest first) oldest first; with `tail`, only
    the last `tail` of them all."""
    merged = list(heapq.merge(*sources, key=_time))
    return merged[-tail:] if tail else merged


def cut_backlog(entries: list[LogEntry], since_subscribed: datetime,
                tail: int) -> list[LogEntry]:
    """The first batch of a followed stream, in time order: `tail` applies to the lines
    older than the subscription (the backlog of every node), never to newer ones (live
    lines that arrived while the backlogs came in)."""
    ordered = sorted(entries, key=_time)
    old = [e for e in ordered if e.time < since_subscribed]
    new = [e for e in ordered if e.time >= since_subscribed]
    return (old[-tail:] if tail else old) + new


class ReorderBuffer:
    """Holds live lines for `window` seconds of arrival, then releases them in time
    order: a line is released once some line at least as new has waited the window
    out, so lines of a lagging node still take their place if they come within it."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._held: list[tuple[datetime, int, float, LogEntry]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._held)

    def push(self, entry: LogEntry, now: float) -> None:
        heapq.heappush(self._held, (entry.time, self._seq, now, entry))
        self._seq += 1

    def release(self, now: float) -> list[LogEntry]:
        """The lines whose turn has come, oldest first."""
        expired = [t for t, _, arrived, _ in self._held if arrived + self.window <= now]
        if not expired:
            return []
        cutoff = max(expired)
        out = []
        while self._held and self._held[0][0] <= cutoff:
            out.append(heapq.heappop(self._held)[3])
        return out

    def next_release(self) -> float | None:
        """When (monotonic) the oldest arrival has waited the window out."""
        if not self._held:
            return None
        return min(arrived for _, _, arrived, _ in self._held) + self.window

    def flush(self) -> list[LogEntry]:
        out = [item[3] for item in sorted(self._held)]
        self._held.clear()
        return out
