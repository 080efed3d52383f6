"""The daemon-wide request-body budget (pure): what fits, what is refused, what comes back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambdad.gateway.budget import SMALL_BODY, BodyBudget, largest_body, small_reserve

MIB = 1024 * 1024


def test_large_bodies_fill_the_budget_up_to_the_small_reserve_and_no_further() -> None:
    budget = BodyBudget(8 * MIB)  # reserve: 1 MiB
    holds = [budget.hold() for _ in range(5)]
    assert [h.cover(2 * MIB) for h in holds] == [True, True, True, False, False]
    assert budget.used == 6 * MIB and budget.refused == 2
    assert holds[3].held == 0  # a refused share holds nothing
    assert holds[3].cover(MIB)  # what is left for large bodies
    # The last MiB: large bodies may not have it, small ones may, up to the limit.
    assert not budget.hold().cover(SMALL_BODY + 1)
    small = [budget.hold() for _ in range(32)]
    assert all(h.cover(SMALL_BODY) for h in small[:16])  # 16 x 64 KiB = the reserve
    assert budget.used == 8 * MIB
    assert not small[16].cover(SMALL_BODY)
    assert not small[16].cover(1)  # full: not even one byte
    assert budget.used == budget.peak == budget.limit
    for hold in holds + small:
        hold.release()
    assert budget.used == 0 and budget.peak == 8 * MIB


def test_a_chunked_body_grows_its_share_and_is_refused_when_it_would_pass_the_room() -> None:
    budget = BodyBudget(2 * MIB)  # reserve 256 KiB: large bodies get 1.75 MiB
    other = budget.hold()
    assert other.cover(MIB)
    grow = budget.hold()
    total = 0
    while grow.cover(total + 64 * 1024):
        total += 64 * 1024
    assert total == MIB - 256 * 1024  # up to 1.75 MiB in all; the other holds 1 MiB
    assert grow.held == total and budget.used == MIB + total
    assert grow.cover(total)  # covering what it holds is free
    other.release()
    assert grow.cover(total + 64 * 1024)  # room again once another share came back


def test_release_is_idempotent_and_the_share_is_a_context_manager() -> None:
    budget = BodyBudget(MIB)
    with budget.hold() as hold:
        assert hold.cover(1000)
        hold.release()
        hold.release()
        assert budget.used == 0
        assert hold.cover(500)
    assert budget.used == 0 and budget.peak == 1000
    with pytest.raises(RuntimeError), budget.hold() as hold:
        hold.cover(100)
        raise RuntimeError("a request failed")
    assert budget.used == 0


def test_reserve_and_largest_body() -> None:
    assert small_reserve(256 * MIB) == 32 * MIB and largest_body(256 * MIB) == 224 * MIB
    assert small_reserve(MIB // 4) == SMALL_BODY  # never less than one small body
    assert largest_body(100 * 1024) == SMALL_BODY  # a tiny budget still takes small bodies
    assert small_reserve(1000) == 1000 and largest_body(1000) == 1000
    with pytest.raises(ValueError):
        BodyBudget(0)


@given(st.integers(min_value=1, max_value=64 * MIB),
       st.lists(st.tuples(st.integers(0, 7), st.integers(0, 8 * MIB)), max_size=60))
def test_the_total_never_passes_the_limit_and_always_comes_back(
    limit: int, steps: list[tuple[int, int]]
) -> None:
    budget = BodyBudget(limit)
    holds = [budget.hold() for _ in range(8)]
    for index, size in steps:
        if size % 5 == 0:
            holds[index].release()
        else:
            before = holds[index].held
            if holds[index].cover(size):
                assert holds[index].held == max(before, size)
            else:
                assert holds[index].held == before
        assert budget.used == sum(h.held for h in holds) <= limit
        large = sum(h.held for h in holds if h.held > SMALL_BODY)
        assert large <= limit - budget.reserve  # the reserve stays for small bodies
    for hold in holds:
        hold.release()
    assert budget.used == 0 and budget.peak <= limit
