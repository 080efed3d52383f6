"""scheduler/catchup.py: which ticks a starting (or new leader's) runner fires at once.
With a recent fire row (the cluster was up, only the leader changed) every tick since is
fired, each once, at most MAX_TICKS; otherwise one catch-up run within the window."""

from __future__ import annotations

import pytest

from lambdad.scheduler.catchup import MAX_TICKS, Missed, missed_ticks
from lambdad.scheduler.cron import next_runs, previous_run

T0 = 1_800_000_000.0  # a minute boundary
EVERY_SECOND = "* * * * * *"
HOURLY = "0 * * * *"


def ticks(cron: str, missed: Missed, now: float, *, window: float = 3600.0,
          fresh: float = 30.0, cap: int = MAX_TICKS) -> list[float]:
    return missed_ticks(missed, now, window=window, fresh=fresh, cap=cap,
                        runs_after=lambda t, n: next_runs(cron, "UTC", t, n),
                        previous=lambda t: previous_run(cron, "UTC", t))


def test_a_takeover_fires_every_tick_since_the_last_fire_row_each_once() -> None:
    # the old leader fired T0 + 10, died; the new leader starts at T0 + 17.5
    got = ticks(EVERY_SECOND, Missed(T0 + 10, T0 + 10, T0 - 100), T0 + 17.5)
    assert got == [T0 + s for s in range(11, 18)]


def test_the_tick_at_now_is_included_and_the_last_fired_one_is_not() -> None:
    assert ticks(EVERY_SECOND, Missed(T0, T0, T0 - 100), T0 + 2) == [T0 + 1, T0 + 2]
    assert ticks(EVERY_SECOND, Missed(T0, T0, T0 - 100), T0 + 0.5) == []


def test_more_missed_ticks_than_the_cap_fire_only_the_latest() -> None:
    missed = Missed(T0, T0, T0 - 1000)
    assert ticks(EVERY_SECOND, missed, T0 + 29, cap=20) == [T0 + 29]
    assert len(ticks(EVERY_SECOND, missed, T0 + 20, cap=20)) == 20  # exactly the cap: each


def test_an_old_last_fire_means_the_cluster_was_down_one_catch_up_run() -> None:
    # last fire 40 s ago, fresh = 30 s: the whole cluster was down; one run, the latest
    assert ticks(EVERY_SECOND, Missed(T0, T0, T0 - 100), T0 + 40) == [T0 + 40]
    assert ticks(HOURLY, Missed(T0 - 3 * 3600, None, T0 - 86400), T0 + 1800) == [T0]


def test_no_fire_row_uses_the_schedules_last_run_as_a_single_daemon_did() -> None:
    assert ticks(HOURLY, Missed(None, T0 - 3 * 3600, T0 - 86400), T0 + 1800) == [T0]
    assert ticks(HOURLY, Missed(None, T0, T0 - 86400), T0 + 1800) == []  # ran already


@pytest.mark.parametrize(("window", "expected"), [(1800.0, [T0]), (1799.0, [])])
def test_the_catch_up_window_bounds_the_single_run(window: float,
                                                   expected: list[float]) -> None:
    assert ticks(HOURLY, Missed(None, None, T0 - 86400), T0 + 1800, window=window) == expected


def test_the_window_and_creation_bound_a_takeovers_ticks_too() -> None:
    # created at T0 + 5: nothing before it, though the last fire row says T0
    assert ticks(EVERY_SECOND, Missed(T0, T0, T0 + 5), T0 + 8) == [T0 + 6, T0 + 7, T0 + 8]
    # a window of 3 s keeps the ticks at most 3 s old (its edge included, as above)
    assert ticks(EVERY_SECOND, Missed(T0, T0, T0 - 100), T0 + 10, window=3) == [
        T0 + 7, T0 + 8, T0 + 9, T0 + 10]


def test_a_schedule_created_after_its_would_be_run_catches_nothing_up() -> None:
    assert ticks(HOURLY, Missed(None, None, T0 + 60), T0 + 1800) == []
