"""Async deliveries go to the node holding the instance (issue 18): three lambdad nodes on
one private PostgreSQL and one Docker engine, a function with max_instances = 1 across the
cluster, events queued through the gateways of all three nodes at once.

Every node competes for the queue, but a node claims a capped function's events only
within what it can run without taking the one instance lease from another node
(queue/room.py). So the node holding the instance delivers them all, one after another,
and the instance is not moved from node to node: every event is accepted (none refused as
full), delivered in its first attempt (no delivery waited for a lease until its queue
timeout), and the function's instances started in the whole cluster stay at one or two,
counted by every node's `lambdad_instance_init_duration_seconds` count and by the
instances that wrote the deliveries' START lines, not by timing.

Before, each node claimed events within the delivery limit (running attempts only), then
waited for the lease and asked the holder to stop its idle instance: the instance moved
between the nodes, one start per move."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, event_function, post_event, start_lines
from tests.support.daemon import Lambdad, wait_for
from tests.support.metrics import total
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

EVENTS_PER_NODE = 30
GUARD = 180.0  # against a hang, not a speed target


def _post(port: int, n: int) -> int:
    """One event through the gateway at `port`; the HTTP status (202: accepted)."""
    return post_event(port, "single", n, timeout=30)[0]


def _serving_instances(node: Lambdad) -> set[str]:
    """The instances whose runtime wrote a START line on this node (each delivery's)."""
    return {entry["instance"] for entry in start_lines(node, "single")}


def test_events_through_every_node_go_to_the_one_instance_without_moving_it(
        postgres: Postgres, tmp_path: Path) -> None:
    cluster = Cluster(postgres, 3).start()
    try:
        deployed = cluster[0].deploy(event_function(
            tmp_path / "single", "single",
            "[scaling]\nmax_instances = 1\nconcurrency = 1\n[async]\nretries = 5\n"))
        assert deployed.code == 0, deployed.stderr
        # No synchronous call through B or C (it would start an instance there): an
        # event sent before a node has the function routed is refused (404) and sent again.
        statuses: list[int] = []
        lock = threading.Lock()

        def sender(node: Lambdad, first: int) -> None:
            for n in range(first, first + EVENTS_PER_NODE):
                deadline = time.monotonic() + 30
                status = _post(node.gateway_port, n)
                while status == 404 and time.monotonic() < deadline:  # not routed yet
                    time.sleep(0.1)
                    status = _post(node.gateway_port, n)
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=sender, args=(node, k * EVENTS_PER_NODE))
                   for k, node in enumerate(cluster.nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD)
        assert statuses == [202] * len(statuses) and len(statuses) == 3 * EVENTS_PER_NODE

        def outcome() -> str:
            return cluster.sql("SELECT status || ':' || count(*) FROM invocations "
                               "WHERE function = 'single' GROUP BY status ORDER BY status")

        assert wait_for(lambda: outcome() == f"succeeded:{3 * EVENTS_PER_NODE}", GUARD), \
            outcome()
        starts = {k: total(node, "lambdad_instance_init_duration_seconds_count",
                           function="single") for k, node in enumerate(cluster.nodes)}
        serving = [_serving_instances(node) for node in cluster.nodes]
        assert 1 <= sum(starts.values()) <= 2, starts  # the deploy's instance, at most one more
        assert sum(len(found) for found in serving) <= 2, (serving, starts)
        # Delivered in its first attempt: no delivery waited for a lease held elsewhere.
        assert cluster.sql("SELECT count(*) FROM invocations WHERE function = 'single' "
                           "AND attempts <> 1") == "0"
    finally:
        cluster.close()
