"""Which idle instances are frozen instead of stopped, and which frozen ones stop: the
pure rules of runtime/freezing.py, and the pool applying them (no Docker, no clock)."""

from __future__ import annotations

from lambdad.runtime.freezing import Frozen, IdleState, idle_fates, over_bound
from tests.unit.test_pool import Harness, _version, run


def _fates(states: list[IdleState], *, minimum: int = 0, window: float = 60.0,
           now: float = 100.0) -> tuple[list[int], list[int], list[int]]:
    fates = idle_fates(states, now=now, idle_timeout=10, min_instances=minimum,
                       freeze_window=window)
    return fates.freeze, fates.stop, fates.revive


def test_past_the_idle_timeout_instances_are_frozen_not_stopped() -> None:
    states = [IdleState(last_used=95, busy=False),  # idle 5 s: left alone
              IdleState(last_used=80, busy=False),  # idle 20 s: frozen
              IdleState(last_used=10, busy=True)]  # busy: never
    assert _fates(states) == ([1], [], [])


def test_with_no_window_they_stop_at_once_as_before() -> None:
    states = [IdleState(last_used=80, busy=False), IdleState(last_used=50, busy=False)]
    assert _fates(states, window=0) == ([], [1, 0], [])  # the longest idle first


def test_a_frozen_instance_stops_when_its_window_has_passed() -> None:
    states = [IdleState(last_used=10, busy=False, frozen_since=50),  # frozen 50 s
              IdleState(last_used=10, busy=False, frozen_since=30)]  # frozen 70 s
    assert _fates(states) == ([], [1], [])


def test_one_that_could_not_be_frozen_stops() -> None:
    states = [IdleState(last_used=80, busy=False, unfreezable=True)]
    assert _fates(states) == ([], [0], [])


def test_the_minimum_keeps_the_most_recently_used_and_revives_a_frozen_one() -> None:
    states = [IdleState(last_used=30, busy=False, frozen_since=50),  # newer of the idle
              IdleState(last_used=20, busy=False, frozen_since=50),
              IdleState(last_used=85, busy=False)]
    assert _fates(states, minimum=2) == ([], [], [0])  # 0 counts for the minimum again
    assert _fates(states, minimum=1) == ([], [], [])  # 0 and 1 stay frozen
    busy = [IdleState(last_used=0, busy=True), IdleState(last_used=50, busy=False)]
    assert _fates(busy, minimum=1) == ([1], [], [])  # the busy one is the minimum


def test_over_the_bound_the_longest_frozen_stop_first() -> None:
    mib = 1 << 20
    frozen = [Frozen(frozen_since=30, memory_bytes=40 * mib),
              Frozen(frozen_since=10, memory_bytes=50 * mib),  # the longest frozen
              Frozen(frozen_since=20, memory_bytes=30 * mib)]
    assert over_bound(frozen, 200 * mib) == []
    assert over_bound(frozen, 100 * mib) == [1]  # 120 -> 70 MiB
    assert over_bound(frozen, 60 * mib) == [1, 2]  # 120 -> 70 -> 40 MiB
    assert over_bound(frozen, 0) == [1, 2, 0]  # 0 keeps none
    assert over_bound([], 0) == []


def test_the_pool_freezes_past_the_idle_timeout_and_a_request_revives() -> None:
    async def scenario() -> None:
        h = Harness(_version(idle_timeout_s=10))
        instance, _ = await h.pool.acquire(1)
        h.pool.release(instance)
        h.now = 12
        assert h.pool.reap_idle(freeze_window=60) == 0
        assert instance.frozen_since == 12 and h.pool.instances == [instance]
        again, cold = await h.pool.acquire(1)  # a thaw, not a cold start
        assert again is instance and not cold and instance.frozen_since is None
        h.pool.release(instance)
        h.now = 20
        assert h.pool.reap_idle(freeze_window=60) == 0  # idle 8 s: live
        h.now = 25
        assert h.pool.reap_idle(freeze_window=60) == 0
        assert instance.frozen_since == 25  # a new window from now
        h.now = 84
        assert h.pool.reap_idle(freeze_window=60) == 0
        h.now = 85
        assert h.pool.reap_idle(freeze_window=60) == 1
        await h.settle()
        assert h.destroyed == [instance] and h.pool.instances == []
        assert instance.end_reason == "stopped after its idle timeout and freeze window"

    run(scenario())


def test_a_warm_instance_is_preferred_to_a_frozen_one() -> None:
    async def scenario() -> None:
        h = Harness(_version(idle_timeout_s=10, max_instances=2))
        first, _ = await h.pool.acquire(1)
        second, _ = await h.pool.acquire(1)
        h.pool.release(second)
        h.now = 15
        h.pool.release(first)
        h.pool.reap_idle(freeze_window=60)
        assert second.frozen_since == 15
        granted, _ = await h.pool.acquire(1)
        assert granted is first and second.frozen_since == 15

    run(scenario())


def test_evicting_spares_an_instance_a_request_took() -> None:
    async def scenario() -> None:
        h = Harness(_version(idle_timeout_s=10))
        instance, _ = await h.pool.acquire(1)
        h.pool.release(instance)
        h.now = 20
        h.pool.reap_idle(freeze_window=60)
        await h.pool.acquire(1)  # taken before the bound was applied
        assert not h.pool.evict_frozen(instance, "over the bound")
        h.pool.release(instance)
        h.now = 40
        h.pool.reap_idle(freeze_window=60)
        assert h.pool.evict_frozen(instance, "over the bound")
        await h.settle()
        assert h.destroyed == [instance] and instance.end_reason == "over the bound"

    run(scenario())
