"""The `cancel` announcement's receiving side (cluster/wiring.cancel_here) against a real
AsyncWorker and Store: a delivery whose row another node ended (a `replace` schedule's
cancel on the leader) stops here and its row keeps that outcome; an announcement whose
row says the event is still queued or running (forged, stale, or requeued since) stops
nothing; a node not delivering it reads nothing."""

from __future__ import annotations

import asyncio
import time

from lambdad.cluster.wiring import cancel_here
from tests.support.queue import hanging_delivery, one_queued, started_worker
from tests.support.store import StoreBackend

GUARD = 10.0  # against a hang, not a speed target


def test_a_delivery_ended_by_another_node_stops_here_and_its_outcome_stands(
        store_backend: StoreBackend) -> None:
    started, cancelled, deliver = hanging_delivery()

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued):
            async with started_worker(store.invocations, deliver) as worker:
                await asyncio.wait_for(started.wait(), GUARD)
                # the leader's cancel, as another node writes it
                await store.invocations.cancel(queued.id, "replaced by a newer run",
                                               time.time())
                await asyncio.wait_for(
                    cancel_here(worker, store.invocations.status, queued.id), GUARD)
                assert cancelled == [queued.id]
                assert not worker.delivering(queued.id)
            ended = await store.invocations.get(queued.id)
            assert (ended.status, ended.last_error) == ("failed", "replaced by a newer run")

    asyncio.run(scenario())


def test_an_announcement_for_a_row_still_running_stops_nothing(
        store_backend: StoreBackend) -> None:
    started, cancelled, deliver = hanging_delivery()
    reads: list[str] = []

    async def scenario() -> None:
        async with one_queued(store_backend.database) as (store, queued), \
                started_worker(store.invocations, deliver) as worker:
            await asyncio.wait_for(started.wait(), GUARD)

            async def status(inv_id: str) -> str:
                reads.append(inv_id)
                found: str = await store.invocations.status(inv_id)
                return found

            await cancel_here(worker, status, queued.id)  # forged: the row says running
            await cancel_here(worker, status, "not-delivered-here")
            await cancel_here(worker, status, "x" * 200)
            assert worker.delivering(queued.id) and cancelled == []
            assert reads == [queued.id]  # only what this node delivers is read
            assert worker.deliveries() == [queued.id]

    asyncio.run(scenario())
