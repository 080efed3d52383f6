"""queue/room.py: how many deliveries of one function a node may claim on a shared
database, by its own leased instances and the leases nobody holds or needs."""

from __future__ import annotations

from lambdad.queue.room import Capacity, room

ONE = Capacity(instances=1, per_instance=1)


def test_a_node_without_a_lease_leaves_the_events_to_the_holder() -> None:
    """max_instances 1, held by A (idle): B and C claim nothing, A claims one."""
    leases = {"A": 1}
    assert room("B", ONE, {}, leases) == 0
    assert room("C", ONE, {}, leases) == 0
    assert room("A", ONE, {}, leases) == 1


def test_the_holder_claims_only_its_free_slots() -> None:
    shape = Capacity(instances=1, per_instance=4)
    assert room("A", shape, {"A": 3}, {"A": 1}) == 1
    assert room("A", shape, {"A": 4}, {"A": 1}) == 0
    assert room("B", shape, {"A": 3}, {"A": 1}) == 0


def test_a_free_lease_goes_to_one_claimer_only() -> None:
    """Nobody holds the lease: the first claimer gets its worth; once it runs a delivery
    beyond its (no) instances, that lease is needed and no other node counts it free."""
    assert room("B", ONE, {}, {}) == 1
    assert room("C", ONE, {"B": 1}, {}) == 0  # B is about to take the lease
    assert room("B", ONE, {"B": 1}, {}) == 0  # and claimed all it may
    assert room("C", ONE, {"B": 1}, {"B": 1}) == 0  # took it


def test_free_leases_add_to_a_nodes_own_instances() -> None:
    shape = Capacity(instances=3, per_instance=2)
    # A holds 1 (2 slots, 1 used), B holds 1 (2 used); 1 lease free.
    running, leases = {"A": 1, "B": 2}, {"A": 1, "B": 1}
    assert room("A", shape, running, leases) == 1 + 2
    assert room("B", shape, running, leases) == 0 + 2
    assert room("C", shape, running, leases) == 2
    # B runs one beyond its instance: it needs the free lease, nobody else counts it.
    running = {"A": 1, "B": 3}
    assert room("A", shape, running, leases) == 1
    assert room("C", shape, running, leases) == 0
    assert room("B", shape, running, leases) == 1


def test_never_beyond_the_delivery_limit_across_the_cluster() -> None:
    """Running attempts of nodes without leases still count (their starts wait)."""
    shape = Capacity(instances=2, per_instance=1)
    assert room("A", shape, {"B": 1, "C": 1}, {}) == 0
    assert room("A", shape, {"B": 3}, {"A": 2}) == 0  # (more than the limit: never negative)


def test_without_leases_it_is_the_delivery_limit_less_the_running_deliveries() -> None:
    """A table no instance leases (SQLite-shaped callers, per_instance 1): as before."""
    shape = Capacity(instances=5, per_instance=1)
    assert room("A", shape, {"A": 1, "B": 2}, {}) == 2
    assert room("A", shape, {}, {}) == 5


def test_the_capacity_limit_is_at_least_one() -> None:
    assert Capacity(0, 0).limit == 1
    assert Capacity(3, 4).limit == 12
    assert room("A", Capacity(0, 0), {}, {}) == 1
