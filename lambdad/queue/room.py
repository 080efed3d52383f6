"""How many more deliveries of one function a node may claim on a shared database: the
pure rule behind PgInvocationTable's claim (cluster mode).

A delivery runs on an instance of the node that claimed it, and every instance holds one
of the function's `max_instances` leases across the cluster (runtime/slots.py). Counting
only the running deliveries against `max_instances x concurrency` lets every node claim
while one node holds every lease: each then waits for a lease and asks the holder to stop
its instance, so the instance moves from node to node, deliveries slow and the queue fills
(a function with max_instances = 1 and events arriving through every node). So a node
claims only what it can run without taking a lease away from another node:

- the free slots of its own leased instances (`leases x concurrency - running`), plus
- the leases nobody holds, less those other nodes' running deliveries already need (a
  node that claimed beyond its own instances is about to take a free lease; counting it
  free again would send two nodes after one lease), each worth `concurrency` deliveries;
- and never beyond the function's delivery limit across the cluster.

A node with no lease while all of them are held elsewhere gets no room: the holders
deliver. Its inputs are read in the claim's transaction, under the function's queue lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """A function's shape for deliveries: `instances` (max_instances, across the
    cluster) of `per_instance` concurrent requests each."""

    instances: int
    per_instance: int = 1

    @property
    def limit(self) -> int:
        """Deliveries at once in the whole cluster (at least one)."""
        return max(1, self.instances * max(1, self.per_instance))


def room(node: str, capacity: Capacity, running: Mapping[str, int],
         leases: Mapping[str, int]) -> int:
    """Deliveries of one function `node` may claim now. `running`: the function's running
    attempts per owner node; `leases`: its instance leases per node (both cluster-wide)."""
    per = max(1, capacity.per_instance)
    # Leases other nodes still need for the deliveries they run beyond their instances.
    needed = sum(-(-max(0, count - leases.get(owner, 0) * per) // per)
                 for owner, count in running.items() if owner != node)
    free = max(0, max(1, capacity.instances) - sum(leases.values()) - needed)
    mine = (leases.get(node, 0) + free) * per - running.get(node, 0)
    overall = capacity.limit - sum(running.values())
    return max(0, min(mine, overall))
