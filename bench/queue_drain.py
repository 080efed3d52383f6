"""The async queue's drain of a stored backlog, in one process: no daemon, no Docker.

`python bench/queue_drain.py [EVENTS] [DELAY_S] [LIMIT]` stores EVENTS queued events of one
function in a temporary store, then starts an AsyncWorker whose stand-in delivery burns
0.3 ms of CPU (a proxied call's share of the loop) and waits DELAY_S, and prints delivered
events/s, store cycles and the process's CPU per event until the last delivery ends. It is
the case `bench/run.py --only async` reaches only when enqueue runs ahead of delivery: every
event is waiting, and what paces delivery is the worker (issue 16, fourth pass). For an A/B,
put the other tree's `lambdad` first on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.queue import AsyncInvocation, AsyncWorker, RetryPolicy
from lambdad.queue.worker import Outcome
from lambdad.store import Store

BURN_S = 0.0003


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drain(events: int, delay_s: float, limit: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "state.db")
        await store.open()
        try:
            await store.add_version(FunctionVersion(
                function="f", number=1, image="lambda-fn/f:v1", image_id="sha256:1",
                config=FunctionConfig(), code_sha256="ab" * 32, code_size=1,
                created_at=datetime.now(UTC)), activate=True)
            now = time.time()
            for _ in range(events):
                await store.invocations.insert(AsyncInvocation(
                    id=str(uuid.uuid4()), function="f", payload=b"{}", source="api",
                    status="queued", attempts=0, created_at=now, next_attempt_at=now))
            finished = asyncio.Event()
            delivered = 0

            async def deliver(_inv: AsyncInvocation) -> Outcome:
                nonlocal delivered
                until = time.perf_counter() + BURN_S
                while time.perf_counter() < until:
                    pass
                await asyncio.sleep(delay_s)
                delivered += 1
                if delivered == events:
                    finished.set()
                return True, 200, b"{}", ""

            worker = AsyncWorker(store.invocations, deliver, lambda _: RetryPolicy(),
                                 lambda _: limit)
            cpu, start = _cpu_s(), time.perf_counter()
            worker.start()
            await asyncio.wait_for(finished.wait(), 300)
            wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
            await worker.stop()
            ahead = getattr(worker, "started_ahead", "-")
            return (f"{events / wall:,.0f} delivered events/s; {worker.cycles} cycles; "
                    f"{ahead} started from events claimed ahead; "
                    f"{cpu / events * 1e6:,.0f} us CPU per event")
        finally:
            await store.close()


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.002
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    print(asyncio.run(drain(events, delay_s, limit)))


if __name__ == "__main__":
    main()
