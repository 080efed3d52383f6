"""Liveness by heartbeat sequence (lambdad/cluster/liveness.py): silence is a sequence
unchanged for a whole window of the observer's own clock, never a clock comparison."""

from __future__ import annotations

from lambdad.cluster.liveness import LivenessObserver


def test_a_node_whose_sequence_stops_is_silent_after_one_window() -> None:
    watch = LivenessObserver(3.0)
    assert watch.observe(0.0, {"a": 1, "b": 7}) == []
    assert watch.observe(0.6, {"a": 2, "b": 7}) == []
    assert watch.observe(2.9, {"a": 5, "b": 7}) == []
    assert watch.observe(3.0, {"a": 6, "b": 7}) == [("b", 7)]  # unchanged since 0.0
    assert watch.observe(3.6, {"a": 6, "b": 7}) == [("b", 7)]  # a changed at 3.0
    assert watch.observe(6.0, {"a": 6, "b": 7}) == [("a", 6), ("b", 7)]


def test_a_beat_restarts_the_window() -> None:
    watch = LivenessObserver(3.0)
    watch.observe(0.0, {"a": 1})
    assert watch.observe(2.5, {"a": 2}) == []
    assert watch.observe(5.0, {"a": 2}) == []
    assert watch.observe(5.5, {"a": 2}) == [("a", 2)]


def test_a_fresh_observer_waits_a_whole_window_whatever_the_sequence() -> None:
    """A node that starts (or reconnects) has watched nobody: a peer whose sequence it
    sees for the first time is not silent before a full window of its own."""
    watch = LivenessObserver(3.0)
    assert watch.observe(100.0, {"a": 40}) == []
    assert watch.observe(102.9, {"a": 40}) == []
    assert watch.observe(103.0, {"a": 40}) == [("a", 40)]


def test_a_database_restart_marks_nobody_down() -> None:
    """Everybody is silent while the database is away; after the reconnect the observer
    resets, and the others beat again within the new window."""
    watch = LivenessObserver(3.0)
    watch.observe(0.0, {"a": 1, "b": 1})
    # the database is gone from 0.5 s to 10 s: no reads at all meanwhile
    watch.reset()
    assert watch.observe(10.0, {"a": 1, "b": 1}) == []  # stale rows: nobody beat yet
    assert watch.observe(10.6, {"a": 2, "b": 1}) == []
    assert watch.observe(11.2, {"a": 3, "b": 2}) == []
    assert watch.observe(13.5, {"a": 7, "b": 6}) == []


def test_nodes_no_longer_up_are_forgotten() -> None:
    """A node marked down (gone from the up list) and back up starts a new window."""
    watch = LivenessObserver(3.0)
    watch.observe(0.0, {"a": 1})
    assert watch.observe(3.0, {"a": 1}) == [("a", 1)]
    assert watch.observe(3.5, {}) == []
    assert watch.observe(4.0, {"a": 1}) == []  # restarted with its old sequence
    assert watch.observe(6.9, {"a": 1}) == []
    assert watch.observe(7.0, {"a": 1}) == [("a", 1)]
