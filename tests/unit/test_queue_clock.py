"""queue/clock.py: moving a node's times onto the database's clock and back."""

from __future__ import annotations

from lambdad.queue.clock import REREAD_S, Offset, offset, settled, shifted, shifted_finish
from lambdad.queue.model import AsyncInvocation, Finish


def _event(**times: float | None) -> AsyncInvocation:
    base: dict[str, float | None] = {"created_at": 100.0, "next_attempt_at": 160.0,
                                     "started_at": None, "finished_at": None}
    base.update(times)
    return AsyncInvocation("id", "f", b"{}", "api", "queued", 1,
                           base["created_at"] or 0.0, base["next_attempt_at"] or 0.0,
                           base["started_at"], base["finished_at"])


def test_the_offset_is_the_database_clock_less_the_nodes_midpoint() -> None:
    # A node an hour ahead read 3700 and 3702 around the database's 101.
    assert offset(3700.0, 101.0, 3702.0) == -3600.0
    assert offset(5.0, 5.5, 6.0) == 0.0


def test_every_time_of_an_event_moves_and_missing_ones_stay_missing() -> None:
    moved = shifted(_event(started_at=130.0), -3600.0)
    assert (moved.created_at, moved.next_attempt_at, moved.started_at, moved.finished_at) == (
        -3500.0, -3440.0, -3470.0, None)
    assert moved.id == "id" and moved.attempts == 1 and moved.status == "queued"


def test_there_and_back_is_the_same_event() -> None:
    event = _event(started_at=130.0, finished_at=150.0)
    assert shifted(shifted(event, 42.5), -42.5) == event


def test_no_shift_is_the_same_object() -> None:
    event = _event()
    assert shifted(event, 0.0) is event


def test_an_ended_attempt_moves_its_retry_time_and_end() -> None:
    finish = Finish("id", "queued", 220.0, 160.0, 500, None, "boom", 1)
    moved = shifted_finish(finish, 10.0)
    assert (moved.next_attempt_at, moved.finished_at) == (230.0, 170.0)
    assert moved.attempt == 1 and moved.error == "boom"
    assert shifted_finish(finish, 0.0) is finish


def test_a_reading_within_the_jitter_keeps_the_offset_in_use() -> None:
    """Two inserts a microsecond apart keep their order: the offset does not wobble."""
    assert settled(None, 0.0004) == 0.0004
    assert settled(0.0004, -0.003, within=0.01) == 0.0004
    assert settled(0.0004, 3600.0, within=0.01) == 3600.0  # the clock was set: follow it


def test_an_offset_is_read_first_then_reused_while_fresh() -> None:
    known = Offset()
    assert known.current(1000.0, 10.0) is None  # never read
    assert known.read(-3600.0, 1000.0, 10.0) == -3600.0
    assert known.current(1000.5, 10.5) == -3600.0  # both clocks went on alike
    assert known.current(1000.0 + REREAD_S, 10.0 + REREAD_S) is None  # stale: read again


def test_an_offset_is_read_again_at_once_when_the_nodes_clock_is_set() -> None:
    known = Offset()
    known.read(-3600.0, 1000.0, 10.0)
    assert known.current(1000.1 - 3600, 10.1) is None  # set back an hour: read again
    assert known.read(0.0004, 1000.1 - 3600, 10.1) == 0.0004


def test_a_new_reading_within_the_jitter_keeps_the_value() -> None:
    known = Offset()
    assert known.read(0.003, 5.0, 1.0) == 0.0  # from 0: synced clocks move nothing
    assert known.read(0.5, 6.0, 2.0) == 0.5
