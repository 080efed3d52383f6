"""Per-minute invocation statistics that outlive restarts, for `lambdactl stats`.

Pure logic: invocations are counted into per-(function, minute) rows with a duration
histogram on fixed log-spaced buckets (each 10% wider than the last, so percentiles are
within ~5%); rows merge by addition, so they can be flushed to the store in pieces and
summed over any window.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

# Bucket upper bounds in seconds: 100 us to ~1000 s, each 10% above the previous.
BOUNDS: tuple[float, ...] = tuple(0.0001 * 1.1 ** i for i in range(170))
WINDOWS = (("5m", 5), ("1h", 60), ("1d", 1440))


@dataclass
class StatsRow:
    function: str
    minute: int  # Unix time // 60
    invocations: int = 0
    errors: int = 0
    cold_starts: int = 0
    duration_sum: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)  # bucket index -> count
    instances_max: int = 0

    def merge(self, other: StatsRow) -> None:
        self.invocations += other.invocations
        self.errors += other.errors
        self.cold_starts += other.cold_starts
        self.duration_sum += other.duration_sum
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.instances_max = max(self.instances_max, other.instances_max)


def bucket_of(seconds: float) -> int:
    return min(bisect.bisect_left(BOUNDS, seconds), len(BOUNDS) - 1)


def percentile(buckets: dict[int, int], q: float) -> float:
    """The q-quantile (0-1) in seconds, interpolated inside its bucket; 0 when empty."""
    total = sum(buckets.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index in sorted(buckets):
        count = buckets[index]
        if seen + count >= rank:
            low = BOUNDS[index - 1] if index > 0 else 0.0
            high = BOUNDS[index]
            fraction = (rank - seen) / count if count else 0.0
            return low + (high - low) * fraction
        seen += count
    return BOUNDS[max(buckets)]


class StatsRecorder:
    """Accumulates in memory between flushes; the daemon flushes to the store."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], StatsRow] = {}
        self._current: dict[str, StatsRow] = {}  # each function's row of its latest minute

    def _row(self, function: str, at: float) -> StatsRow:
        minute = int(at // 60)
        row = self._current.get(function)
        if row is not None and row.minute == minute:
            return row  # nearly always: no tuple key, no second lookup
        key = (function, minute)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = StatsRow(function, minute)
        self._current[function] = row
        return row

    def invocation(self, function: str, seconds: float, *, error: bool, cold: bool,
                   at: float) -> None:
        row = self._row(function, at)
        row.invocations += 1
        row.errors += int(error)
        row.cold_starts += int(cold)
        row.duration_sum += seconds
        index = bucket_of(seconds)
        row.buckets[index] = row.buckets.get(index, 0) + 1

    def instances(self, function: str, count: int, at: float) -> None:
        row = self._row(function, at)
        row.instances_max = max(row.instances_max, count)

    def drain(self) -> list[StatsRow]:
        rows, self._rows = list(self._rows.values()), {}
        self._current.clear()  # the drained rows are the store's now: never count into them
        return rows

    def restore(self, rows: list[StatsRow]) -> None:
        """Drained rows the store could not take (the database away): merged back, so
        the next flush writes them with what came since."""
        for row in rows:
            key = (row.function, row.minute)
            kept = self._rows.get(key)
            if kept is None:
                self._rows[key] = row
            else:
                kept.merge(row)


@dataclass(frozen=True)
class WindowStats:
    window: str
    invocations: int
    error_rate: float
    p50: float
    p95: float
    p99: float
    cold_start_rate: float
    instances_max: int


def summarize(rows: Iterable[StatsRow], now_minute: int) -> list[WindowStats]:
    """The 5-minute, hour and day windows ending at `now_minute` (inclusive)."""
    rows = list(rows)
    result = []
    for label, minutes in WINDOWS:
        total = StatsRow("", 0)
        for row in rows:
            if now_minute - minutes < row.minute <= now_minute:
                total.merge(row)
        count = total.invocations
        result.append(WindowStats(
            window=label,
            invocations=count,
            error_rate=total.errors / count if count else 0.0,
            p50=percentile(total.buckets, 0.50),
            p95=percentile(total.buckets, 0.95),
            p99=percentile(total.buckets, 0.99),
            cold_start_rate=total.cold_starts / count if count else 0.0,
            instances_max=total.instances_max,
        ))
    return result
