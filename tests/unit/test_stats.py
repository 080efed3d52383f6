"""Per-minute statistics: bucketing, percentiles on a known distribution, windows."""

from __future__ import annotations

import random

import pytest

from lambdad.metrics.stats import StatsRecorder, StatsRow, bucket_of, percentile, summarize


def test_buckets_are_ordered_and_cover_the_range() -> None:
    assert bucket_of(0.00005) == 0
    assert bucket_of(0.001) < bucket_of(0.01) < bucket_of(1.0) < bucket_of(100.0)
    assert bucket_of(10_000.0) == bucket_of(1e9)  # the last bucket takes the rest


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentiles_of_a_known_distribution_are_within_five_percent(q: float) -> None:
    rng = random.Random(7)
    samples = sorted(rng.lognormvariate(-4, 1) for _ in range(20_000))  # median ~18 ms
    recorder = StatsRecorder()
    for value in samples:
        recorder.invocation("f", value, error=False, cold=False, at=600.0)
    (row,) = recorder.drain()
    exact = samples[int(q * len(samples)) - 1]
    assert percentile(row.buckets, q) == pytest.approx(exact, rel=0.05)


def test_uniform_steps() -> None:
    recorder = StatsRecorder()
    for ms in range(1, 101):  # 1..100 ms
        recorder.invocation("f", ms / 1000, error=ms > 90, cold=ms <= 5, at=60.0)
    (row,) = recorder.drain()
    assert percentile(row.buckets, 0.5) == pytest.approx(0.050, rel=0.06)
    assert percentile(row.buckets, 0.99) == pytest.approx(0.099, rel=0.06)
    five = summarize([row], now_minute=1)[0]
    assert five.invocations == 100 and five.error_rate == pytest.approx(0.10)
    assert five.cold_start_rate == pytest.approx(0.05)


def test_windows_select_by_minute_and_rows_merge_by_addition() -> None:
    recent = StatsRow("f", 1000, invocations=2, errors=1, buckets={10: 2}, instances_max=3)
    older = StatsRow("f", 1000 - 30, invocations=4, buckets={20: 4}, instances_max=5)
    oldest = StatsRow("f", 1000 - 600, invocations=8, buckets={30: 8})
    five, hour, day = summarize([recent, older, oldest], now_minute=1000)
    assert (five.invocations, hour.invocations, day.invocations) == (2, 6, 14)
    assert (five.instances_max, hour.instances_max) == (3, 5)
    merged = StatsRow("f", 1000)
    merged.merge(recent)
    merged.merge(recent)
    assert merged.invocations == 4 and merged.buckets == {10: 4}


def test_empty_windows_are_zero() -> None:
    five, _, _ = summarize([], now_minute=5)
    assert five.invocations == 0 and five.p99 == 0.0 and five.error_rate == 0.0


def test_rows_follow_the_minute_and_a_drain_starts_new_ones() -> None:
    """The recorder remembers each function's current row; a new minute, an older one
    arriving late, or a drain must still land every count in the right row, once."""
    recorder = StatsRecorder()
    recorder.invocation("f", 0.01, error=False, cold=False, at=60.0)
    recorder.invocation("g", 0.01, error=False, cold=False, at=61.0)
    recorder.invocation("f", 0.01, error=True, cold=False, at=125.0)  # minute 2
    recorder.invocation("f", 0.01, error=False, cold=True, at=119.0)  # minute 1, late
    rows = {(r.function, r.minute): r for r in recorder.drain()}
    assert {k: r.invocations for k, r in rows.items()} == {("f", 1): 2, ("g", 1): 1,
                                                             ("f", 2): 1}
    assert rows[("f", 2)].errors == 1 and rows[("f", 1)].cold_starts == 1
    recorder.invocation("f", 0.01, error=False, cold=False, at=126.0)
    (again,) = recorder.drain()
    assert (again.minute, again.invocations) == (2, 1)
    assert rows[("f", 2)].invocations == 1  # the drained row was not counted into


def test_a_flush_the_store_refused_is_written_by_the_next_one() -> None:
    """The database away (cluster mode): the drained rows are not lost."""
    import asyncio
    from typing import Any

    from lambdad.control.queries import Queries
    from lambdad.errors import DatabaseUnavailable
    from lambdad.metrics import Metrics

    class Store:
        def __init__(self) -> None:
            self.written: list[StatsRow] = []
            self.fail = True

        async def add_stats(self, rows: list[StatsRow]) -> None:
            if self.fail:
                raise DatabaseUnavailable("the database is unavailable; try again")
            self.written.extend(rows)

    class Runtime:
        def routed(self) -> list[str]:
            return []

    metrics, store = Metrics(), Store()
    queries = Queries(store=store, runtime=Runtime(), locks=None, url=str,  # type: ignore[arg-type]
                      metrics=metrics)
    metrics.stats.invocation("greet", 0.1, error=False, cold=True, at=600.0)

    async def flushes() -> Any:
        with pytest.raises(DatabaseUnavailable):
            await queries.flush_stats()
        metrics.stats.invocation("greet", 0.2, error=True, cold=False, at=610.0)
        store.fail = False
        await queries.flush_stats()

    asyncio.run(flushes())
    [row] = store.written
    assert (row.function, row.minute, row.invocations, row.errors, row.cold_starts) == (
        "greet", 10, 2, 1, 1)
