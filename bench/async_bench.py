"""The `async` group: event enqueue throughput and delivery drain, and cron firing lag.

1. Enqueue: `Invoke(type=EVENT)` over the daemon's Unix socket from a small thread pool
   (each call returns 202 and an id once the event is in the store), against the same number
   of synchronous `Invoke` calls from the same pool; then the time until every event is
   delivered (no invocation left `queued` or `running`). Target (issue 16): delivered
   events/s >= 0.9x the sync req/s of the same run. lambdad's CPU seconds (/proc) over each
   phase, per call and per event, say the same without the machine's noise.
2. Cron lag: a schedule firing every second; lag = the invocation's `created_at` - the
   event's `scheduled_time`, against the lag of `asyncio.sleep` timers in this process,
   woken at the same whole seconds.

Traffic goes only to the daemon's Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from harness import GRPC_OPTIONS, BenchDaemon
from load import _deploy
from loadgen import proc_cpu_s
from stats import Result, Summary, percentile

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc

FUNCTION = "bench-async"
PAYLOAD = b'{"name":"x"}'
EXPECTED = b"Hello, x!"
CRON = "* * * * * *"  # every second (6 fields: seconds first)
MIN_DELIVERED_OVER_SYNC = 0.9  # issue 16: async delivery at the speed of sync invocation


class AsyncBenchError(RuntimeError):
    """The async benchmark could not run; the message says why."""


@dataclass
class AsyncReport:
    results: list[Result] = field(default_factory=list)  # rows of the main (median) table
    lines: list[str] = field(default_factory=list)  # printed after the tables
    verdicts: list[str] = field(default_factory=list)  # targets: PASS / MISS
    figures: dict[str, Any] = field(default_factory=dict)  # for --json


def _burst(call: Callable[[], None], count: int, threads: int, budget: float
           ) -> tuple[list[int], float]:
    """`count` calls from `threads` threads (stopping at `budget` seconds); per-call latencies
    in ns and the wall time of the whole burst."""
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + budget
    samples: list[list[int]] = [[] for _ in range(threads)]

    def worker(mine: list[int]) -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= count or time.monotonic() > deadline:
                    return
                issued += 1
            start = time.perf_counter_ns()
            call()
            mine.append(time.perf_counter_ns() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, s) for s in samples]:
            future.result()  # re-raises a failed call's exception
    wall = time.perf_counter() - start
    return [s for mine in samples for s in mine], wall


def _count(stub: Any, status: str, limit: int) -> int:
    reply = stub.ListInvocations(pb.ListInvocationsRequest(name=FUNCTION, status=status,
                                                           limit=limit), timeout=30)
    return len(reply.invocations)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _cpu_us(before: float | None, after: float | None, count: int) -> float | None:
    """lambdad CPU microseconds per call over a phase, if /proc could be read."""
    if before is None or after is None or not count:
        return None
    return (after - before) / count * 1e6


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} us"


def _stamp(ts: Any) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


async def _timer_lags(until: float) -> list[int]:
    """asyncio.sleep to each next whole second (wall clock) until `until`; ns late per wake."""
    lags: list[int] = []
    while True:
        target = math.floor(time.time()) + 1.0
        if target > until:
            return lags
        await asyncio.sleep(target - time.time())
        lags.append(int((time.time() - target) * 1e9))


def _pcts(ms: list[float]) -> str:
    values = sorted(ms)
    return (f"p50 {percentile(values, 50):.2f} ms, p99 {percentile(values, 99):.2f} ms, "
            f"max {values[-1]:.2f} ms")


def bench_async(daemon: BenchDaemon, report: AsyncReport, *, events: int, threads: int,
                budget: float, drain_timeout: float, cron_window: float) -> None:
    print(f"  async: deploying {FUNCTION} (--concurrency 8)", flush=True)
    _deploy(daemon, FUNCTION, "--concurrency", "8")
    channel = grpc.insecure_channel(daemon.grpc_target, options=GRPC_OPTIONS)
    stub = functions_pb2_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]
    sync_request = pb.InvokeRequest(name=FUNCTION, payload=PAYLOAD,
                                    type=pb.INVOCATION_TYPE_REQUEST_RESPONSE)
    event_request = pb.InvokeRequest(name=FUNCTION, payload=PAYLOAD,
                                     type=pb.INVOCATION_TYPE_EVENT)

    def sync_call() -> None:
        reply = stub.Invoke(sync_request, timeout=30)
        if reply.status_code != 200 or EXPECTED not in reply.payload:
            raise AsyncBenchError(f"Invoke answered {reply.status_code}: {reply.payload[:200]!r}")

    def event_call() -> None:
        reply = stub.Invoke(event_request, timeout=30)
        if reply.status_code != 202 or not reply.request_id:
            raise AsyncBenchError(f"Invoke(EVENT) answered {reply.status_code} "
                                  f"id={reply.request_id!r}")

    assert daemon.process is not None
    pid = daemon.process.pid
    schedule_id = ""
    try:
        for _ in range(20):  # warm-up: the channel, the instance, the handler's first calls
            sync_call()
        # The baseline first, so the queue's deliveries never overlap it.
        sync_cpu = proc_cpu_s(pid)
        sync_ns, sync_wall = _burst(sync_call, events, threads, budget)
        sync_cpu_us = _cpu_us(sync_cpu, proc_cpu_s(pid), len(sync_ns))
        count = len(sync_ns)
        event_cpu = proc_cpu_s(pid)
        enqueue_start = time.monotonic()
        event_ns, event_wall = _burst(event_call, count, threads, budget)
        accepted = len(event_ns)
        accepted_at = time.monotonic()
        print(f"    sync Invoke: {count} calls in {sync_wall:.2f} s; Invoke(EVENT): {accepted} "
              f"accepted in {event_wall:.2f} s ({threads} threads)", flush=True)

        drain_deadline = accepted_at + drain_timeout
        drained = False
        while time.monotonic() < drain_deadline:
            if _count(stub, "queued", 1) == 0 and _count(stub, "running", 1) == 0:
                drained = True
                break
            time.sleep(0.05)
        drained_at = time.monotonic()
        event_cpu_us = _cpu_us(event_cpu, proc_cpu_s(pid), accepted)  # polls included
        succeeded = _count(stub, "succeeded", accepted + 100)
        failed = _count(stub, "failed", accepted + 100)
        if not drained:
            print(f"    drain: not finished after {drain_timeout:.0f} s ({succeeded} of "
                  f"{accepted} succeeded)", flush=True)

        sync_rps = count / sync_wall
        event_rps = accepted / event_wall
        drain_s = drained_at - enqueue_start
        delivered_rps = succeeded / drain_s
        report.results.append(Result(
            name="async enqueue (Invoke EVENT)",
            what=f"Invoke(type=EVENT) of {FUNCTION} over the Unix socket, {threads} threads, "
            "per call (202 + id once the event is stored)",
            subject=Summary.of(event_ns),
            baseline_name="sync Invoke",
            baseline=Summary.of(sync_ns),
            notes=["baseline: the same number of Invoke(type=REQUEST_RESPONSE) calls from the "
                   "same pool, just before (the handler runs inside the call)"],
        ))
        report.lines += [
            f"enqueue: {event_rps:,.0f} events/s accepted ({accepted} in {event_wall:.2f} s) / "
            f"sync Invoke {sync_rps:,.0f} req/s ({count} in {sync_wall:.2f} s) = "
            f"{event_rps / sync_rps:.2f}x",
            f"delivery drain: {succeeded} succeeded, {failed} failed"
            f"{'' if drained else ' (NOT drained: timed out)'}; {drain_s:.2f} s from the first "
            f"enqueue to an empty queue ({drained_at - accepted_at:.2f} s after the last 202) "
            f"= {delivered_rps:,.0f} delivered events/s ({delivered_rps / sync_rps:.2f}x sync "
            "req/s)",
            f"lambdad CPU: {_us(event_cpu_us)} per event (enqueue to delivery, the drain's polls "
            f"included) / {_us(sync_cpu_us)} per sync Invoke"
            + (f" = {event_cpu_us / sync_cpu_us:.2f}x" if event_cpu_us and sync_cpu_us else ""),
        ]
        ratio = delivered_rps / sync_rps
        report.verdicts.append(
            f"async delivered events/s / sync Invoke req/s, same run: {delivered_rps:,.0f} / "
            f"{sync_rps:,.0f} = {ratio:.2f}x (target >= {MIN_DELIVERED_OVER_SYNC:g}x) "
            f"{_verdict(drained and failed == 0 and ratio >= MIN_DELIVERED_OVER_SYNC)}")
        report.figures["async"] = {
            "threads": threads, "events": accepted, "sync_calls": count,
            "enqueue_eps": round(event_rps, 1), "sync_rps": round(sync_rps, 1),
            "enqueue_over_sync": round(event_rps / sync_rps, 3),
            "drained": drained, "succeeded": succeeded, "failed": failed,
            "drain_s": round(drain_s, 3), "delivered_eps": round(delivered_rps, 1),
            "delivered_over_sync": round(delivered_rps / sync_rps, 3),
            "cpu_us_per_event": None if event_cpu_us is None else round(event_cpu_us, 1),
            "cpu_us_per_sync_call": None if sync_cpu_us is None else round(sync_cpu_us, 1),
        }

        # Cron firing lag, with asyncio timers in this process as the baseline (same seconds).
        print(f"  async: schedule '{CRON}' (overlap allow) for {cron_window:.0f} s, asyncio "
              "timers alongside", flush=True)
        created = stub.CreateSchedule(pb.CreateScheduleRequest(
            name=FUNCTION, cron=CRON, overlap="allow"), timeout=30)
        schedule_id = created.id
        timer_ns = asyncio.run(_timer_lags(time.time() + cron_window))
        stub.DeleteSchedule(pb.DeleteScheduleRequest(id=schedule_id), timeout=30)
        schedule_id = ""
        found = stub.ListInvocations(pb.ListInvocationsRequest(
            name=FUNCTION, limit=accepted + 1000), timeout=30).invocations
        cron_ns: list[int] = []
        for inv in found:
            if inv.source != "schedule":
                continue
            scheduled = datetime.fromisoformat(json.loads(inv.payload)["scheduled_time"])
            cron_ns.append(int((_stamp(inv.created_at) - scheduled.timestamp()) * 1e9))
        if not cron_ns:
            raise AsyncBenchError(f"the schedule fired no invocation in {cron_window:.0f} s")
        timer_ns = timer_ns[:len(cron_ns)] or timer_ns
        cron = Result(
            name="cron firing lag",
            what=f"schedule '{CRON}' of {FUNCTION}: invocation created_at - the event's "
            "scheduled_time",
            subject=Summary.of(cron_ns),
            baseline_name="asyncio.sleep lag",
            baseline=Summary.of(timer_ns),
            notes=["baseline: asyncio.sleep in the bench process until each next whole second "
                   "(wall clock), how late it woke; same seconds, same count"],
        )
        report.results.append(cron)
        cron_ms = [n / 1e6 for n in cron_ns]
        timer_ms = [n / 1e6 for n in timer_ns]
        report.lines.append(
            f"cron lag ({len(cron_ms)} runs): {_pcts(cron_ms)}; asyncio.sleep lag "
            f"({len(timer_ms)}): {_pcts(timer_ms)}; ratio of medians {cron.ratio:.1f}x")
        report.figures["cron"] = {
            "runs": len(cron_ms),
            "p50_ms": round(statistics.median(cron_ms), 3),
            "p99_ms": round(percentile(sorted(cron_ms), 99), 3),
            "max_ms": round(max(cron_ms), 3),
            "timer_p50_ms": round(statistics.median(timer_ms), 3),
            "ratio_of_medians": round(cron.ratio, 3),
        }
        for line in [*report.lines, *report.verdicts]:
            print(f"    {line}", flush=True)
    finally:
        if schedule_id:
            # (if this fails, the daemon and its state folder go with the harness anyway)
            with contextlib.suppress(grpc.RpcError):
                stub.DeleteSchedule(pb.DeleteScheduleRequest(id=schedule_id), timeout=30)
        channel.close()

