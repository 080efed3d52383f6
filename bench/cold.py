"""The `cold` group: how a request is served when no warm instance is there (issue 9).

1. Stem cell: a standard-runtime function at zero instances, with the cell pool full; the
   request takes a ready cell (code hard-linked in, POST /init) -> `Lambda-Cold-Start: cell`.
2. New container: a Dockerfile function (functions/raw-http) at zero instances, the fallback
   path -> `container`.
3. Unpause: a Dockerfile function kept at one instance, frozen by the daemon's
   `--pause-after` -> `unpaused`.
4. Burst: N concurrent requests to a standard function at zero instances; then how long the
   pool takes to refill, and whether deleting the function leaves containers behind.
5. Idle memory: each ready cell and one warm idle instance (docker stats, one shot, minus
   the inactive page cache, as lambdad's own memory_bytes does).

Baseline of 1 and 2: `docker run --rm --network none <runtime image> true` in the same run.
Every timed request goes to the gateway on 127.0.0.1 on a new connection; the bench only
*looks* at containers (Docker API: list, inspect, stats), it never connects to one.
Targets are printed as PASS/MISS, never asserted. See docs/performance.md, "Cold starts".
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import coldparts
from coldparts import ColdBenchError, Containers, deploy, ms, p, rotation, wait
from harness import ROOT, BenchDaemon, executable
from load import _run
from stats import Result, Summary

RUNTIME_IMAGE = "lambda-runtime/python:3.11"
GREET = ROOT / "functions" / "greet"
RAW_HTTP = ROOT / "functions" / "raw-http"
QUERY = "/?name=World"
GREET_EXPECTED = b"Hello, World!"
RAW_EXPECTED = b"raw HTTP server"

CELL_FUNCTIONS = 6  # rotated: one is timed while the others scale back to zero
RAW_FUNCTIONS = 2
PAUSE_FUNCTION = "bench-pause"
IDLE_FUNCTION = "bench-idle"
BURST_FUNCTION = "bench-burst"
SCALE_TO_ZERO = ("--min-instances", "0", "--idle-timeout", "1")

# Targets of issue 9 (printed as PASS/MISS, never asserted).
MAX_CELL_P50_MS = 10.0
MAX_CELL_P99_MS = 30.0
MAX_CELL_RATIO = 0.05
MAX_BURST_P99_MS = 2000.0
MAX_IDLE_INSTANCE_MIB = 12.0


@dataclass
class ColdReport:
    results: list[Result] = field(default_factory=list)  # rows of the main (median) table
    lines: list[str] = field(default_factory=list)  # printed after the tables
    verdicts: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)  # lambdad did something unexpected
    figures: dict[str, Any] = field(default_factory=dict)  # for --json


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# Requests: one new connection to the gateway each, timed until the body is read.

@dataclass(frozen=True)
class Reply:
    ns: int
    status: int
    start: str  # Lambda-Cold-Start: warm, cell, unpaused or container
    timing: dict[str, float]  # Server-Timing: gateway, function, init (ms)
    body: bytes


def _request(port: int, function: str, expected: bytes) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        start = time.perf_counter_ns()
        conn.request("GET", QUERY, headers={"Host": f"{function}.localhost"})
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter_ns() - start
    finally:
        conn.close()
    if response.status != 200 or expected not in body:
        raise ColdBenchError(f"{function} answered {response.status}: {body[:200]!r}")
    return Reply(elapsed, response.status, response.getheader("Lambda-Cold-Start", ""),
                 coldparts.server_timing(response.getheader("Server-Timing", "")), body)


# What Docker shows of the daemon's containers (the low-level list: no inspect races).

def _cell_class(info: dict[str, Any]) -> str:
    """The pool's label for the function's resource class (lambdad's CellClass.label)."""
    config = info["config"]
    return (f"{int(config['memory_bytes']) // 2**20}MiB/{float(config['cpu']):g}cpu/"
            f"{int(config['pids_limit'])}pids/{config['network']}")


def _docker_run() -> int:
    start = time.perf_counter_ns()
    _run(["docker", "run", "--rm", "--network", "none", RUNTIME_IMAGE, "true"], timeout=60)
    return time.perf_counter_ns() - start


# The group

@dataclass
class _Plan:
    rounds: int  # stem-cell rounds to collect
    ref_rounds: int  # docker run, new-container and unpause rounds
    burst: int
    pool_size: int
    budget: float  # seconds; the stem-cell rounds get three times this


def bench_cold(daemon: BenchDaemon, report: ColdReport, *, rounds: int, ref_rounds: int,
               burst: int, pool_size: int, budget: float) -> None:
    plan = _Plan(rounds, ref_rounds, burst, pool_size, budget)
    docker = Containers(daemon)
    cells = [f"bench-cell-{i}" for i in range(CELL_FUNCTIONS)]
    raws = [f"bench-raw-{i}" for i in range(RAW_FUNCTIONS)]
    print(f"  cold: deploying {', '.join(cells)} (greet), {', '.join(raws)} (raw-http) with "
          f"{' '.join(SCALE_TO_ZERO)}; {PAUSE_FUNCTION} (raw-http, --min-instances 1), "
          f"{IDLE_FUNCTION} (greet, --min-instances 1), {BURST_FUNCTION} (greet, "
          f"--min-instances 0 --max-instances {burst} --idle-timeout 5)", flush=True)
    info: dict[str, dict[str, Any]] = {}
    for name in cells:
        info[name] = deploy(daemon, GREET, name, *SCALE_TO_ZERO)
    for name in raws:
        info[name] = deploy(daemon, RAW_HTTP, name, *SCALE_TO_ZERO)
    deploy(daemon, RAW_HTTP, PAUSE_FUNCTION, "--min-instances", "1")
    deploy(daemon, GREET, IDLE_FUNCTION, "--min-instances", "1")
    burst_info = deploy(daemon, GREET, BURST_FUNCTION, "--min-instances", "0",
                         "--max-instances", str(max(burst, 1)), "--idle-timeout", "5")
    cell_class = _cell_class(info[cells[0]])
    if _cell_class(burst_info) != cell_class:
        raise ColdBenchError("the burst function should be of the stem-cell functions' class")

    baseline = _stem_cells(daemon, docker, report, plan, cells, cell_class)
    _new_containers(daemon, docker, report, plan, raws, baseline)
    _unpause(daemon, docker, report, plan)
    _memory(daemon, docker, report)
    _burst(daemon, docker, report, plan, cell_class)
    if report.anomalies:
        report.lines.append("anomalies (lambdad did not behave as expected):")
        report.lines.extend(f"  - {a}" for a in report.anomalies)
    report.figures["cold"]["anomalies"] = report.anomalies


def _renamed(docker: Containers, function: str) -> bool:
    return any(docker.name(c).startswith(f"lambda-{function}-v")
               for c in docker.instances(function))


def _stem_cells(daemon: BenchDaemon, docker: Containers, report: ColdReport, plan: _Plan,
                names: list[str], cell_class: str) -> Summary:
    """Stem-cell cold starts, with `docker run` baselines interleaved; the baseline."""
    print(f"  cold: stem cells, {plan.rounds} rounds (class {cell_class}, pool of "
          f"{plan.pool_size}), {plan.ref_rounds} docker runs interleaved", flush=True)
    _docker_run()  # warm-up: the runtime image's layers in the page cache
    samples: list[int] = []
    inits: list[float] = []
    firsts: list[float] = []  # the first request, sent to its answer's head (Server-Timing)
    invalid: list[str] = []
    baseline: list[int] = []
    every = max(1, plan.rounds // plan.ref_rounds)
    last = -1
    attempt = 0
    deadline = time.monotonic() + 3 * plan.budget
    warmed = False
    while len(samples) < plan.rounds and attempt < 2 * plan.rounds:
        if samples and time.monotonic() > deadline:
            print(f"    budget of {3 * plan.budget:.0f} s spent: stopping after "
                  f"{len(samples)} of {plan.rounds} rounds", flush=True)
            break
        if warmed and len(baseline) < plan.ref_rounds and attempt % every == 0:
            baseline.append(_docker_run())  # while the others scale down; not timed together
            print(f"    docker run {ms(baseline[-1]):.0f} ms", flush=True)
        index, _ = rotation(docker, names, last)
        name = names[index]
        refill = wait(lambda: len(docker.ready_cells(cell_class)) >= plan.pool_size,
                       f"{plan.pool_size} ready cells of class {cell_class}")
        reply = _request(daemon.gateway_port, name, GREET_EXPECTED)
        last = index
        # A specialized cell is renamed after its function just after it answered: wait
        # for that, so the next round does not count it as a ready cell.
        try:
            wait(functools.partial(_renamed, docker, name),
                  f"the container serving {name} to be named after it", timeout=5)
        except ColdBenchError as exc:
            report.anomalies.append(f"stem cells: {exc}")
        if not warmed:
            warmed = True
            print(f"    warm-up: {name} {ms(reply.ns):.1f} ms ({reply.start}), not counted",
                  flush=True)
            continue
        attempt += 1
        if reply.start != "cell":
            invalid.append(f"{name}: Lambda-Cold-Start {reply.start or '(missing)'}, "
                           f"{ms(reply.ns):.1f} ms")
            print(f"    round {attempt}: {name} NOT served by a cell (Lambda-Cold-Start: "
                  f"{reply.start or '(missing)'}), {ms(reply.ns):.1f} ms: not counted",
                  flush=True)
            continue
        samples.append(reply.ns)
        if "init" in reply.timing:
            inits.append(reply.timing["init"])
        if "function" in reply.timing:
            firsts.append(reply.timing["function"])
        print(f"    round {attempt}: {name} {ms(reply.ns):.1f} ms (lambdad's init "
              f"{reply.timing.get('init', float('nan')):.1f} ms; waited {refill:.2f} s for "
              "the pool)", flush=True)
    while len(baseline) < plan.ref_rounds:
        baseline.append(_docker_run())
    if not samples:
        raise ColdBenchError(f"no round was served by a stem cell: {'; '.join(invalid)}")
    if invalid:
        report.anomalies.append(f"stem cells: {len(invalid)} of {attempt} rounds were not "
                                f"served by a cell ({'; '.join(invalid)})")
    result = Result(
        name="cold start: stem cell",
        what=f"GET {QUERY} through the gateway (new connection) to a greet function with no "
        "instance and the pool full: take a ready cell, link the code in, POST /init, the "
        "request; to the full response",
        subject=Summary.of(samples),
        baseline_name="docker run --rm true",
        baseline=Summary.of(baseline),
        notes=[f"{CELL_FUNCTIONS} functions of one class rotated, each timed once it had no "
               f"container and >= {plan.pool_size} cells were ready; the response must say "
               "Lambda-Cold-Start: cell",
               f"baseline: `docker run --rm --network none {RUNTIME_IMAGE} true` (the CLI: "
               "create, start, wait, remove), interleaved with the rounds"],
    )
    report.results.append(result)
    p50, p99 = result.subject.median_ms, p(samples, 99)
    report.verdicts.append(f"stem-cell cold start p50: {p50:.1f} ms (target <= "
                           f"{MAX_CELL_P50_MS:g} ms) {_verdict(p50 <= MAX_CELL_P50_MS)}")
    report.verdicts.append(f"stem-cell cold start p99: {p99:.1f} ms of {len(samples)} rounds "
                           f"(target <= {MAX_CELL_P99_MS:g} ms) "
                           f"{_verdict(p99 <= MAX_CELL_P99_MS)}")
    report.verdicts.append(
        f"stem-cell cold start / docker run: {p50:.1f} / {result.baseline.median_ms:.0f} ms = "
        f"{result.ratio:.3f}x (target <= {MAX_CELL_RATIO:g}x) "
        f"{_verdict(result.ratio <= MAX_CELL_RATIO)}")
    served = attempt - len(invalid)
    report.verdicts.append(f"stem-cell rounds served by a cell: {served} of {attempt} "
                           f"(check) {_verdict(not invalid)}")
    init_p50 = statistics.median(inits) if inits else None
    first_p50 = statistics.median(firsts) if firsts else None
    report.lines.append(
        f"stem cell: p50 {p50:.1f} ms, p90 {result.subject.p90_ms:.1f} ms, p99 {p99:.1f} ms, "
        f"max {p(samples, 100):.1f} ms over {len(samples)} rounds"
        + (f"; lambdad's init (take + link + POST /init) p50 {init_p50:.1f} ms"
           if init_p50 is not None else "")
        + (f", then the first request in the instance p50 {first_p50:.1f} ms"
           if first_p50 is not None else "")
        + f"; rounds not served by a cell: {len(invalid)}")
    report.figures["cold"] = {
        "docker_run": {"n": len(baseline), "p50_ms": round(result.baseline.median_ms, 2)},
        "cell": {"n": len(samples), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                 "max_ms": round(p(samples, 100), 2),
                 "init_p50_ms": round(init_p50, 2) if init_p50 is not None else None,
                 "first_request_p50_ms": (round(first_p50, 2) if first_p50 is not None
                                          else None),
                 "ratio_of_medians": round(result.ratio, 4), "invalid_rounds": len(invalid)},
    }
    return result.baseline


def _new_containers(daemon: BenchDaemon, docker: Containers, report: ColdReport,
                    plan: _Plan, names: list[str], baseline: Summary) -> None:
    print(f"  cold: new containers (raw-http, a Dockerfile function), {plan.ref_rounds} rounds",
          flush=True)
    samples: list[int] = []
    invalid: list[str] = []
    last = -1
    deadline = time.monotonic() + plan.budget
    for i in range(plan.ref_rounds):
        if samples and time.monotonic() > deadline:
            print(f"    budget of {plan.budget:.0f} s spent: stopping after {i} rounds",
                  flush=True)
            break
        index, _ = rotation(docker, names, last)
        last = index
        reply = _request(daemon.gateway_port, names[index], RAW_EXPECTED)
        if reply.start != "container":
            invalid.append(f"{names[index]}: {reply.start or '(missing)'}")
            print(f"    round {i + 1}: {names[index]} NOT a new container (Lambda-Cold-Start: "
                  f"{reply.start or '(missing)'}): not counted", flush=True)
            continue
        samples.append(reply.ns)
        print(f"    round {i + 1}: {names[index]} {ms(reply.ns):.0f} ms", flush=True)
    if not samples:
        raise ColdBenchError(f"no round was served by a new container: {'; '.join(invalid)}")
    if invalid:
        report.anomalies.append(f"new containers: {len(invalid)} rounds were not served by a "
                                f"new container ({'; '.join(invalid)})")
    result = Result(
        name="cold start: new container",
        what=f"GET {QUERY} through the gateway to a Dockerfile function (functions/raw-http) "
        "with no instance: create and start a container, wait for its socket, the request",
        subject=Summary.of(samples),
        baseline_name="docker run --rm true",
        baseline=baseline,
        notes=["the fallback path (Dockerfile functions, or no ready cell); the response must "
               "say Lambda-Cold-Start: container; baseline: the same docker runs as above"],
    )
    report.results.append(result)
    report.lines.append(
        f"new container: p50 {result.subject.median_ms:.0f} ms over {len(samples)} rounds, "
        f"{result.ratio:.2f}x docker run ({baseline.median_ms:.0f} ms)")
    report.figures["cold"]["container"] = {
        "n": len(samples), "p50_ms": round(result.subject.median_ms, 2),
        "ratio_of_medians": round(result.ratio, 3), "invalid_rounds": len(invalid)}


def _unpause(daemon: BenchDaemon, docker: Containers, report: ColdReport,
             plan: _Plan) -> None:
    rounds = max(plan.ref_rounds, 5)
    print(f"  cold: unpause ({PAUSE_FUNCTION}, raw-http, --min-instances 1), {rounds} rounds",
          flush=True)
    def live() -> list[str]:
        return [str(c["Id"]) for c in docker.instances(PAUSE_FUNCTION)
                if c.get("State") in ("running", "paused")]

    wait(lambda: len(live()) == 1, f"{PAUSE_FUNCTION} to have exactly one instance")
    container_id = live()[0]
    samples: list[int] = []
    warm: list[int] = []
    invalid: list[str] = []
    waits: list[float] = []
    for i in range(rounds):
        waits.append(wait(lambda: docker.paused(container_id),
                           f"{PAUSE_FUNCTION}'s instance to be paused (is lambdad running "
                           "with --pause-after?)"))
        reply = _request(daemon.gateway_port, PAUSE_FUNCTION, RAW_EXPECTED)
        again = _request(daemon.gateway_port, PAUSE_FUNCTION, RAW_EXPECTED)
        if again.start == "warm":
            warm.append(again.ns)
        if reply.start != "unpaused":
            invalid.append(reply.start or "(missing)")
            print(f"    round {i + 1}: NOT unpaused (Lambda-Cold-Start: "
                  f"{reply.start or '(missing)'}): not counted", flush=True)
            continue
        samples.append(reply.ns)
        print(f"    round {i + 1}: unpaused {ms(reply.ns):.1f} ms, then warm "
              f"{ms(again.ns):.1f} ms ({again.start}); paused after {waits[-1]:.1f} s",
              flush=True)
    if live() != [container_id]:
        report.anomalies.append(f"unpause: {PAUSE_FUNCTION}'s instance was replaced "
                                f"(now {len(live())} instance(s))")
    if not samples or not warm:
        raise ColdBenchError(f"no round was served by an unpaused instance: {invalid}")
    if invalid:
        report.anomalies.append(f"unpause: {len(invalid)} rounds were not served by an "
                                f"unpaused instance ({', '.join(invalid)})")
    result = Result(
        name="unpause + first response",
        what=f"GET {QUERY} through the gateway to {PAUSE_FUNCTION} while its only instance is "
        "paused (cgroup freezer): unpause, the request",
        subject=Summary.of(samples),
        baseline_name="warm request",
        baseline=Summary.of(warm),
        notes=["the response must say Lambda-Cold-Start: unpaused; baseline: the next "
               "request, same function, also on a new connection (warm)"],
    )
    report.results.append(result)
    extra = result.subject.median_ms - result.baseline.median_ms
    report.lines.append(
        f"unpause: p50 {result.subject.median_ms:.1f} ms over {len(samples)} rounds, warm "
        f"{result.baseline.median_ms:.1f} ms: unpausing adds {extra:.1f} ms; paused "
        f"{statistics.median(waits):.1f} s (median) after the previous request")
    report.figures["cold"]["unpause"] = {
        "n": len(samples), "p50_ms": round(result.subject.median_ms, 2),
        "warm_p50_ms": round(result.baseline.median_ms, 2), "added_ms": round(extra, 2),
        "invalid_rounds": len(invalid)}


def _memory(daemon: BenchDaemon, docker: Containers, report: ColdReport) -> None:
    print("  cold: idle memory (docker stats, one shot, minus inactive file cache)", flush=True)
    wait(lambda: len(docker.instances(IDLE_FUNCTION)) == 1,
          f"{IDLE_FUNCTION} to have exactly one instance")
    for _ in range(3):
        _request(daemon.gateway_port, IDLE_FUNCTION, GREET_EXPECTED)
    time.sleep(1.0)  # idle
    instance = docker.instances(IDLE_FUNCTION)[0]
    path = "specialized cell" if "lambda.cell" in (instance.get("Labels") or {}) else \
        "new container"
    readings = [docker.memory_mib(str(instance["Id"])) for _ in range(3)]
    instance_mib = statistics.median([r for r in readings if r is not None] or [float("nan")])
    cells = docker.ready_cells()
    cell_mib = [m for m in (docker.memory_mib(str(c["Id"])) for c in cells) if m is not None]
    if not cell_mib:
        raise ColdBenchError("no ready cell to measure")
    median_cell = statistics.median(cell_mib)
    total = sum(cell_mib)
    report.lines.append(
        f"idle memory: ready cell median {median_cell:.1f} MiB (of {len(cell_mib)}: "
        f"{', '.join(f'{m:.1f}' for m in sorted(cell_mib))}), pool total {total:.1f} MiB; "
        f"one warm idle instance ({IDLE_FUNCTION}, a {path}) {instance_mib:.1f} MiB")
    report.verdicts.append(
        f"idle instance memory: {instance_mib:.1f} MiB (target <= {MAX_IDLE_INSTANCE_MIB:g} "
        f"MiB) {_verdict(instance_mib <= MAX_IDLE_INSTANCE_MIB)}")
    report.figures["cold"]["memory"] = {
        "cell_mib_median": round(median_cell, 2), "cells": len(cell_mib),
        "pool_total_mib": round(total, 2), "instance_mib": round(instance_mib, 2),
        "instance_path": path}


async def _burst_requests(port: int, function: str, count: int) -> list[coldparts.Answer]:
    """`count` GETs at once, each on its own connection."""
    request = coldparts.request_bytes(function, QUERY)
    gate = asyncio.Event()

    async def one() -> coldparts.Answer:
        await gate.wait()
        return await coldparts.exchange(None, port, request, GREET_EXPECTED)

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    await asyncio.sleep(0)  # every task is waiting at the gate
    gate.set()
    return list(await asyncio.gather(*tasks))


def _burst(daemon: BenchDaemon, docker: Containers, report: ColdReport, plan: _Plan,
           cell_class: str) -> None:
    print(f"  cold: burst of {plan.burst} concurrent requests to {BURST_FUNCTION} at zero "
          "instances", flush=True)
    wait(lambda: not docker.instances(BURST_FUNCTION),
          f"{BURST_FUNCTION} to scale to zero (idle timeout 5 s)")
    wait(lambda: len(docker.ready_cells(cell_class)) >= plan.pool_size,
          f"{plan.pool_size} ready cells of class {cell_class}")
    started = time.perf_counter()
    replies = asyncio.run(_burst_requests(daemon.gateway_port, BURST_FUNCTION, plan.burst))
    wall = time.perf_counter() - started
    ended = time.monotonic()
    served_by_cells = sum(1 for r in replies if r.start == "cell" and not r.error)

    def specialized() -> int:  # cells renamed after the function (just after they answered)
        return sum(1 for c in docker.instances(BURST_FUNCTION)
                   if "lambda.cell" in (c.get("Labels") or {}))

    try:  # until then they would pass for ready cells
        wait(lambda: specialized() >= served_by_cells,
              f"the {served_by_cells} cells that served the burst to be named after it",
              timeout=5)
    except ColdBenchError as exc:
        report.anomalies.append(f"burst: {exc}")
    made = docker.instances(BURST_FUNCTION)
    from_cells = sum(1 for c in made if "lambda.cell" in (c.get("Labels") or {}))
    refill: float | None = None
    try:
        wait(lambda: len(docker.ready_cells(cell_class)) >= plan.pool_size,
              f"the pool to refill to {plan.pool_size} ready cells after the burst", timeout=60)
        refill = time.monotonic() - ended
    except ColdBenchError as exc:
        refill = None
        report.anomalies.append(f"burst: {exc}")
    lambdactl = executable("lambdactl")
    _run([lambdactl, "delete", BURST_FUNCTION, "--yes"], env=daemon.env())
    deleted = time.monotonic()
    gone: float | None = None
    try:
        wait(lambda: not docker.instances(BURST_FUNCTION),
              f"{BURST_FUNCTION}'s containers to go after delete")
        gone = time.monotonic() - deleted
    except ColdBenchError:
        pass
    leaked = [f"{docker.name(c)} ({c.get('State')})" for c in docker.instances(BURST_FUNCTION)]
    # Anything of this daemon neither running nor paused for a few seconds is left over
    # from somewhere (a cell the pool is refilling is "created" for a moment).
    def _stale() -> list[str]:
        return [f"{docker.name(c)} ({c.get('State')})" for c in docker.all()
                if c.get("State") not in ("running", "paused")]

    stale = _stale()
    settle = time.monotonic() + 5.0
    while stale and time.monotonic() < settle:
        time.sleep(0.1)
        stale = _stale()

    samples = [r.ns for r in replies if not r.error]
    errors = [r.error for r in replies if r.error]
    paths = Counter(r.start or "(none)" for r in replies if not r.error)
    p50 = p(samples, 50) if samples else float("nan")
    p99 = p(samples, 99) if samples else float("nan")
    top = p(samples, 100) if samples else float("nan")
    print(f"    {len(samples)} ok, {len(errors)} errors in {wall:.2f} s: p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms, max {top:.0f} ms; served {dict(paths)}; {len(made)} instances "
          f"({from_cells} from cells)", flush=True)
    if errors:
        shown = "; ".join(f"{n}x {e}" for e, n in Counter(errors).most_common(3))
        report.anomalies.append(f"burst: {len(errors)} of {plan.burst} requests failed: {shown}")
    if leaked:
        report.anomalies.append(f"burst: {len(leaked)} container(s) of {BURST_FUNCTION} still "
                                f"there {coldparts.WAIT_S:.0f} s after delete: "
                                f"{', '.join(leaked[:5])}")
    if stale:
        report.anomalies.append(f"containers of this daemon neither running nor paused: "
                                f"{', '.join(stale[:5])}")
    report.lines.append(
        f"burst: {plan.burst} concurrent requests, {len(errors)} errors, p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms, max {top:.0f} ms, all answered in {wall:.2f} s; served by "
        + ", ".join(f"{k} {v}" for k, v in sorted(paths.items()))
        + f"; {len(made)} instances ({from_cells} specialized cells, "
        f"{len(made) - from_cells} new containers)")
    report.lines.append(
        "burst: pool back to "
        f"{plan.pool_size} ready cells "
        + (f"{refill:.2f} s after the last response" if refill is not None
           else "NOT within 60 s")
        + "; after `lambdactl delete`: "
        + (f"no container left ({gone:.2f} s)" if not leaked and gone is not None
           else f"{len(leaked)} left")
        + (f"; {len(stale)} stale container(s) of the daemon" if stale else ""))
    report.verdicts.append(f"burst errors: {len(errors)} of {plan.burst} (required: 0) "
                           f"{_verdict(not errors)}")
    report.verdicts.append(f"burst p99: {p99:.0f} ms (target <= {MAX_BURST_P99_MS:.0f} ms) "
                           f"{_verdict(bool(samples) and p99 <= MAX_BURST_P99_MS)}")
    report.verdicts.append(f"burst clean-up: pool refilled, no container left after delete "
                           f"(check) {_verdict(refill is not None and not leaked and not stale)}")
    report.figures["cold"]["burst"] = {
        "requests": plan.burst, "errors": len(errors), "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1), "max_ms": round(top, 1), "wall_s": round(wall, 3),
        "served": dict(paths), "instances": len(made), "instances_from_cells": from_cells,
        "refill_s": round(refill, 3) if refill is not None else None,
        "leaked": leaked, "stale": stale}
