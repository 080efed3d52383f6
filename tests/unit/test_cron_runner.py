"""CronRunner against a real Store on temporary SQLite, with stand-ins for the queue and a
clock set just before a run is due: it fires due schedules at their time, catches up one
run missed while down (within the window), forgets removed schedules, and keeps to each
schedule's overlap rule."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import lambdad.scheduler.runner as runner_module
from lambdad.errors import Throttled
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule
from lambdad.scheduler.runner import CronRunner
from tests.support.store import StoreBackend, opened_store

GUARD = 10.0  # against a hang, not a speed target
HOUR = 1_800_000_000.0  # an hour boundary (divisible by 3600)
LEAD = 0.2  # how long before a run the clock is set, in (real) seconds


class Clock:
    """Stands in for the runner's `time` module: the time moves only when the test says.
    The runner's loop re-reads it at least every LEAD real seconds while a run is due
    within LEAD of it."""

    def __init__(self, at: float) -> None:
        self.now = at

    def time(self) -> float:
        return self.now


def set_clock(monkeypatch: pytest.MonkeyPatch, at: float) -> Clock:
    clock = Clock(at)
    monkeypatch.setattr(runner_module, "time", clock)
    return clock


def schedule(sid: str = "s1", *, function: str = "f", cron: str = "* * * * *",
             overlap: str = "skip", created_at: float = HOUR - 86400,
             last_run: float | None = None, last_invocation: str = "") -> Schedule:
    return Schedule(id=sid, function=function, cron=cron, tz="UTC", data=b"{}",
                    overlap=overlap, created_at=created_at, last_run=last_run,
                    last_result="enqueued" if last_run else "", last_invocation=last_invocation)


class Queue:
    """The async queue as the runner sees it: enqueue, an invocation's status, cancel."""

    def __init__(self, status: str = "succeeded", full: bool = False) -> None:
        self.enqueued: list[tuple[str, float, bool]] = []
        self.cancelled: list[tuple[str, str]] = []
        self.asked: list[str] = []
        self.status = status
        self.full = full

    def prepare(self, s: Schedule, when: float, catch_up: bool) -> AsyncInvocation:
        if self.full:
            raise Throttled("function f has 100 queued events")
        self.enqueued.append((s.id, when, catch_up))
        return AsyncInvocation(id=f"inv-{len(self.enqueued)}", function=s.function,
                               payload=b"{}", source="schedule", status="queued",
                               attempts=0, created_at=when, next_attempt_at=when)

    async def status_of(self, invocation_id: str) -> str:
        self.asked.append(invocation_id)
        return self.status

    async def cancel(self, invocation_id: str, reason: str) -> None:
        self.cancelled.append((invocation_id, reason))


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD):
        while not check():
            await asyncio.sleep(0.01)


def run_with(backend: StoreBackend, schedules: list[Schedule], queue: Queue,
             scenario: Callable[[CronRunner, list[Schedule]], Awaitable[None]],
             window: float = 3600.0) -> list[Schedule]:
    """Starts a runner over `schedules` (stored first), runs `scenario`, stops it; returns
    the stored rows as they ended."""

    async def main() -> list[Schedule]:
        async with opened_store(backend.database, "f", "g") as store:
            for s in schedules:
                await store.schedules.insert(s)
            runner = CronRunner(store.schedules, queue.prepare, queue.status_of,
                                queue.cancel, catch_up_window_s=window)
            await runner.start()
            try:
                await scenario(runner, schedules)
            finally:
                await asyncio.wait_for(runner.stop(), GUARD)
            rows: list[Schedule] = await store.schedules.all()
            return rows

    return asyncio.run(main())


def test_a_schedule_fires_when_due_and_its_run_is_recorded(store_backend: StoreBackend,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    minute = HOUR + 600
    clock = set_clock(monkeypatch, minute - LEAD)
    queue = Queue()

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        assert runner.next_run("s1") == minute
        await asyncio.sleep(2 * LEAD)
        assert queue.enqueued == []  # its last run was the previous minute: nothing missed
        clock.now = minute
        await until(lambda: bool(queue.enqueued))
        assert runner.next_run("s1") == minute + 60

    rows = run_with(store_backend, [schedule(last_run=minute - 60)], queue, scenario)
    assert queue.enqueued == [("s1", minute, False)]
    assert (rows[0].last_run, rows[0].last_result, rows[0].last_invocation) == (
        minute, "enqueued", "inv-1")


def test_one_run_missed_while_down_is_caught_up_at_start(store_backend: StoreBackend,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    set_clock(monkeypatch, HOUR + 1800)  # half past; down since three hours
    queue = Queue()

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        assert queue.enqueued == [("s1", HOUR, True)]  # at start, once, the latest run
        assert runner.next_run("s1") == HOUR + 3600

    rows = run_with(store_backend, [schedule(cron="0 * * * *", last_run=HOUR - 3 * 3600)], queue,
                    scenario)
    assert (rows[0].last_run, rows[0].last_result) == (HOUR, "catch-up")


@pytest.mark.parametrize(("window", "created_at", "caught_up"), [
    (3600.0, HOUR - 86400, True),
    (1800.0, HOUR - 86400, True),  # the missed run is exactly at the window's edge
    (1799.0, HOUR - 86400, False),  # the missed run is older than the window
    (3600.0, HOUR + 60, False),  # created after the run it would catch up
])
def test_the_catch_up_window_and_the_schedules_age_bound_it(
        store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch, window: float,
        created_at: float,
        caught_up: bool) -> None:
    set_clock(monkeypatch, HOUR + 1800)
    queue = Queue()

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        pass

    run_with(store_backend, [schedule(cron="0 * * * *", created_at=created_at)], queue, scenario,
             window=window)
    assert queue.enqueued == ([("s1", HOUR, True)] if caught_up else [])


def test_a_removed_schedule_does_not_fire(store_backend: StoreBackend,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    minute = HOUR + 600
    clock = set_clock(monkeypatch, minute - LEAD)
    queue = Queue()

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        runner.remove("s1")
        runner.remove_function("g")
        assert runner.next_run("s1") is None and runner.next_run("s3") is None
        clock.now = minute
        await until(lambda: bool(queue.enqueued))
        await asyncio.sleep(2 * LEAD)

    run_with(store_backend, [schedule("s1", last_run=minute - 60),
                        schedule("s2", last_run=minute - 60),
                        schedule("s3", function="g", last_run=minute - 60)], queue, scenario)
    assert queue.enqueued == [("s2", minute, False)]  # s1 removed, s3's function deleted


def test_an_added_schedule_fires_without_waiting_for_the_old_timer(
        store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    minute = HOUR + 600
    clock = set_clock(monkeypatch, minute - LEAD)
    queue = Queue()

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        await asyncio.sleep(0.05)  # the loop sleeps now, with nothing to run (up to 60 s)
        runner.add(schedule("new", created_at=minute - 1))
        clock.now = minute
        await until(lambda: bool(queue.enqueued))

    run_with(store_backend, [], queue, scenario)
    assert queue.enqueued == [("new", minute, False)]


@pytest.mark.parametrize(("overlap", "previous", "enqueued", "cancelled", "result"), [
    ("skip", "running", False, False, "skipped"),
    ("skip", "queued", False, False, "skipped"),
    ("skip", "succeeded", True, False, "catch-up"),
    ("replace", "running", True, True, "catch-up"),
    ("allow", "running", True, False, "catch-up"),
])
def test_each_overlap_rule_when_the_previous_run_is_unfinished(
        store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch, overlap: str, previous: str,
        enqueued: bool, cancelled: bool, result: str) -> None:
    set_clock(monkeypatch, HOUR + 1800)
    queue = Queue(status=previous)

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        pass

    rows = run_with(store_backend, [schedule(cron="0 * * * *", overlap=overlap,
                                        last_run=HOUR - 3600, last_invocation="prev")],
                    queue, scenario)
    assert queue.enqueued == ([("s1", HOUR, True)] if enqueued else [])
    assert queue.cancelled == ([("prev", "replaced by a newer run of its schedule")]
                               if cancelled else [])
    assert queue.asked == ([] if overlap == "allow" else ["prev"])
    assert (rows[0].last_run, rows[0].last_result) == (HOUR, result)


def test_a_full_queue_skips_the_run_instead_of_growing(store_backend: StoreBackend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    set_clock(monkeypatch, HOUR + 1800)
    queue = Queue(full=True)

    async def scenario(runner: CronRunner, _: list[Schedule]) -> None:
        pass

    rows = run_with(store_backend, [schedule(cron="0 * * * *", last_run=HOUR - 3600)], queue,
                    scenario)
    assert (rows[0].last_run, rows[0].last_result) == (HOUR, "skipped")
