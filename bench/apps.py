"""The `apps` group: issue 17's targets for an import-heavy app and for the trivial handler.

For functions/fastapi-mangum (FastAPI, pydantic 2, Mangum; wheels from the example
wheelhouse) and functions/greet, each deployed under two names with `--concurrency 50
--max-instances 1 --min-instances 0 --idle-timeout 1`, into a lambdad of this group's own
started with `--freeze-window 2` (the main bench daemon stops idle instances at once). Each
round takes the next name with no container left and measures:

1. From zero: the first request (a stem cell, or a container) -> Server-Timing `init` and
   `import`: what lambdad adds to the import is init minus import.
2. Scale-out, four steps: every worker of the instance is held busy (the bench sends each a
   request and stops it with SIGSTOP from the host, so the supervisor sees busy workers),
   then one more request on a pre-opened connection is timed: the supervisor forks a worker
   from the zygote for it. The worker count (from the host: the supervisor's children with
   the runtime's worker oom_score_adj) must rise by one; then SIGCONT, the held requests
   complete. Baseline: the next request (a warm worker).
3. Memory: /proc/<pid>/smaps_rollup of the container's processes (`docker top`): the first
   environment (zygote + first worker, PSS) against each extra worker (USS).
4. Thaw: wait until lambdad froze the idle instance (docker inspect State.Paused), then a
   request, which must say `Lambda-Cold-Start: unpaused`; baseline: the next request.
Then a burst of N requests (default 100) at the warm instance (one instance, concurrency 50),
each on its own connection; baseline: sequential warm requests. Then `lambdactl logs`:
how many of them waited for a worker because the instance's memory capped its workers
(REPORT's Memory Wait), and the caps the runtime logged.

fastapi-nohook is functions/fastapi-mangum without its before-snapshot hook (the warm-up
in the zygote), deployed from a copy: the hook's effect, measured in the same run.
LAMBDA_BENCH_RUNTIME_IMAGE=<tag> runs the group's lambdad with that runtime image (a runtime
built under its own tag: `make runtime-image RUNTIME_IMAGE=<tag>`).

Traffic goes to the gateway on 127.0.0.1 only. Targets are printed as PASS/MISS, never
asserted. See docs/performance.md, "Issue 17".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import appstats
from appstats import (
    ProcMemory,
    WorkerMemory,
    extra_share,
    fresh_sample,
    memory_caps,
    memory_waits,
    report_durations,
    verdict,
    worker_memory,
)
from coldparts import (
    Answer,
    ColdBenchError,
    Containers,
    deploy,
    exchange,
    ms,
    p,
    request_bytes,
    rotation,
    wait,
)
from harness import ROOT, BenchDaemon, executable
from load import _run
from stats import Result, Summary

FREEZE_WINDOW_S = 2  # the group's daemon: frozen this long, then stopped
SCALE_STEPS = 4  # scale-out steps per round: 1 -> 2 workers, ..., 4 -> 5
WARM_BASELINE = 20  # sequential warm requests before the burst
SCALING = ("--concurrency", "50", "--max-instances", "1", "--min-instances", "0",
           "--idle-timeout", "1")


@dataclass(frozen=True)
class App:
    key: str  # the short name in function names and figures
    source: Path
    path: str
    expected: bytes
    without: str = ""  # deployed from a copy of source without this text (it must be there)


APPS = (
    App("fastapi", ROOT / "functions" / "fastapi-mangum", "/items/1", b'"hammer"'),
    # The same app without its warm-up hook: what the hook changes, in the same run.
    App("fastapi-nohook", ROOT / "functions" / "fastapi-mangum", "/items/1", b'"hammer"',
        without="@register_before_snapshot\n"),
    App("greet", ROOT / "functions" / "greet", "/?name=World", b"Hello, World!"),
)


@dataclass
class AppsReport:
    results: list[Result] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=lambda: {"apps": {}})
    anomalies: list[str] = field(default_factory=list)


# Requests (gateway on 127.0.0.1)

async def _fetch(port: int, function: str, app: App, count: int, *, preconnect: bool
                 ) -> list[Answer]:
    """`count` GETs released at once, each on its own connection (opened before the gate
    with `preconnect`, else inside the timed part)."""
    request = request_bytes(function, app.path)
    opened = [await asyncio.open_connection("127.0.0.1", port)
              for _ in range(count)] if preconnect else [None] * count
    return list(await asyncio.gather(*(exchange(c, port, request, app.expected) for c in opened)))


async def _scale_step(port: int, function: str, app: App, workers: list[int],
                      hold_s: float = 1.0) -> tuple[Answer, int]:
    """Every worker of the instance is held busy (SIGSTOP: stopped right after taking a
    request each), then one more request comes: the supervisor must fork a worker for it.
    Returns its answer (to the full response) and how long after it was sent the held
    workers were let go (SIGCONT); the held requests then complete."""
    request = request_bytes(function, app.path)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(len(workers) + 1)]
    stopped: list[int] = []
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        held = [asyncio.ensure_future(exchange(c, port, request, app.expected)) for c in conns[:-1]]
        await asyncio.sleep(0.05)  # each held request is in a stopped worker's channel
        probe = asyncio.ensure_future(exchange(conns[-1], port, request, app.expected))
        sent = time.perf_counter_ns()
        await asyncio.wait([probe], timeout=hold_s)
    finally:
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
    released = time.perf_counter_ns() - sent
    answer = await probe
    for answer_held in await asyncio.gather(*held):
        if answer_held.error:
            raise ColdBenchError(f"{function}: a held request failed: {answer_held.error}")
    return answer, released


def _get(port: int, function: str, app: App) -> Answer:
    answer = asyncio.run(_fetch(port, function, app, 1, preconnect=True))[0]
    if answer.error:
        raise ColdBenchError(f"{function} answered {answer.error}")
    return answer


# The instance's processes, seen from the host (root: /proc of any pid)

class Processes:
    def __init__(self, daemon: BenchDaemon) -> None:
        self.api = daemon.docker.api

    def pids(self, container_id: str) -> list[tuple[int, int]]:
        """(pid, parent pid) of the container's processes, as the host numbers them."""
        top = self.api.top(container_id, ps_args="-eo pid,ppid")
        return [(int(row[0]), int(row[1])) for row in top.get("Processes") or []]

    @staticmethod
    def score(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/oom_score_adj") as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def worker_pids(self, container_id: str) -> list[int]:
        """The workers: the supervisor's children with the runtime's worker score."""
        supervisor = int(self.api.inspect_container(container_id)["State"]["Pid"])
        return [pid for pid, ppid in self.pids(container_id)
                if ppid == supervisor and self.score(pid) == appstats.WORKER_OOM_SCORE]

    def workers(self, container_id: str) -> int:
        return len(self.worker_pids(container_id))

    def memory(self, container_id: str) -> WorkerMemory:
        supervisor = int(self.api.inspect_container(container_id)["State"]["Pid"])
        found: list[tuple[int, int, int, ProcMemory]] = []
        for pid, ppid in self.pids(container_id):
            score = self.score(pid)
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    found.append((pid, ppid, score if score is not None else -1,
                                  ProcMemory.of(f.read())))
            except (OSError, ValueError):
                continue  # ended meanwhile
        return worker_memory(found, supervisor)


# The group

@dataclass
class _Samples:
    cold_ns: list[int] = field(default_factory=list)
    cold_starts: Counter[str] = field(default_factory=Counter)
    inits: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    hooks: list[float] = field(default_factory=list)  # before-snapshot hooks (in init)
    overheads: list[float] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)  # requests served by a new worker
    warm: list[int] = field(default_factory=list)  # the next request after each
    steps_invalid: int = 0  # the worker count did not rise by one
    slower_than_hold: int = 0
    thaw: list[int] = field(default_factory=list)
    thaw_answers: list[Answer] = field(default_factory=list)
    after_thaw: list[int] = field(default_factory=list)
    not_thawed: list[str] = field(default_factory=list)
    first_memory: list[WorkerMemory] = field(default_factory=list)  # at one worker
    memory: list[WorkerMemory] = field(default_factory=list)  # after the scale-out steps
    probes: list[Answer] = field(default_factory=list)
    warms: list[Answer] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)  # REPORT, by request id


def _instance(docker: Containers, function: str) -> str:
    live = [c for c in docker.instances(function) if c.get("State") in ("running", "paused")]
    if len(live) != 1:
        raise ColdBenchError(f"{function}: expected one instance, found {len(live)}")
    return str(live[0]["Id"])


def _round(daemon: BenchDaemon, docker: Containers, procs: Processes, app: App, name: str,
           s: _Samples, n: int) -> None:
    port = daemon.gateway_port
    cold = _get(port, name, app)
    s.cold_ns.append(cold.ns)
    s.cold_starts[cold.start or "(none)"] += 1
    init, imported = cold.timing.get("init"), cold.timing.get("import")
    hooks = cold.timing.get("hooks", 0.0)  # the function's own warm-up, after its import
    if init is not None and imported is not None:
        s.inits.append(init)
        s.imports.append(imported)
        s.hooks.append(hooks)
        s.overheads.append(appstats.from_zero_overhead(init, imported + hooks))
    found: list[str] = []

    def one_instance() -> bool:  # a specialized cell is renamed just after it answered
        with contextlib.suppress(ColdBenchError):
            found[:] = [_instance(docker, name)]
        return bool(found)

    wait(one_instance, f"{name}'s instance (one, named after it)", timeout=10)
    container = found[0]
    wait(lambda: procs.workers(container) == 1, f"{name}'s first worker", timeout=10)
    try:
        s.first_memory.append(procs.memory(container))
    except (ValueError, OSError) as exc:
        print(f"    {name}: memory at one worker not read: {exc}", flush=True)
    forks: list[str] = []
    for _ in range(SCALE_STEPS):
        held = procs.worker_pids(container)
        probe, released = asyncio.run(_scale_step(port, name, app, held))
        if probe.error:
            raise ColdBenchError(f"{name}: a scale-out request failed: {probe.error}")
        after = procs.workers(container)
        sample = fresh_sample(probe.ns, len(held), after)
        if sample is None:
            s.steps_invalid += 1
            forks.append(f"{len(held)}->{after} workers: not counted")
            continue
        if probe.ns >= released:
            s.slower_than_hold += 1
        s.fresh.append(sample)
        warm = _get(port, name, app)  # baseline: the next request, to a warm worker
        s.warm.append(warm.ns)
        s.probes.append(probe)
        s.warms.append(warm)
        forks.append(f"{len(held)}->{after} {ms(sample):.1f} ms (warm {ms(warm.ns):.1f})")
    try:
        s.memory.append(procs.memory(container))
    except (ValueError, OSError) as exc:
        print(f"    {name}: memory not read: {exc}", flush=True)
    waited = wait(lambda: docker.paused(container),
                   f"{name}'s instance to be frozen (idle timeout 1 s)", timeout=15)
    thaw = _get(port, name, app)
    again = _get(port, name, app)
    if thaw.start == "unpaused":
        s.thaw.append(thaw.ns)
        s.thaw_answers.append(thaw)
        s.after_thaw.append(again.ns)
    else:
        s.not_thawed.append(thaw.start or "(none)")
    print(f"    round {n}: {name} from zero {ms(cold.ns):.0f} ms ({cold.start}; init "
          f"{init if init is not None else float('nan'):.1f} ms, import "
          f"{imported if imported is not None else float('nan'):.1f} ms); "
          f"scale-out {'; '.join(forks)}; frozen after {waited:.1f} s, thawed "
          f"{ms(thaw.ns):.1f} ms ({thaw.start}), then {ms(again.ns):.1f} ms", flush=True)


def _burst(daemon: BenchDaemon, docker: Containers, procs: Processes, app: App, name: str,
           count: int, report: AppsReport) -> dict[str, Any]:
    port = daemon.gateway_port
    _get(port, name, app)  # warm (thaws it if it froze meanwhile)
    warm = [_get(port, name, app).ns for _ in range(WARM_BASELINE)]
    started = time.perf_counter()
    answers = asyncio.run(_fetch(port, name, app, count, preconnect=False))
    wall = time.perf_counter() - started
    ok = [a.ns for a in answers if not a.error]
    errors = [a.error for a in answers if a.error]
    paths = Counter(a.start or "(none)" for a in answers if not a.error)
    container = _instance(docker, name)
    workers = procs.workers(container)
    waits, caps = _memory_waits(daemon, name, [a.request_id for a in answers if not a.error])
    memory: WorkerMemory | None = None
    try:
        memory = procs.memory(container)
    except (ValueError, OSError) as exc:
        report.anomalies.append(f"{app.key} burst: memory not read: {exc}")
    p50 = p(ok, 50) if ok else float("nan")
    p99 = p(ok, 99) if ok else float("nan")
    print(f"    burst: {len(ok)} ok, {len(errors)} errors in {wall:.2f} s, p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms; served {dict(paths)}; {workers} workers after", flush=True)
    if errors:
        shown = "; ".join(f"{k}x {e}" for e, k in Counter(errors).most_common(3))
        report.anomalies.append(f"{app.key} burst: {len(errors)} of {count} failed: {shown}")
    report.verdicts.append(f"{app.key}: burst of {count} at one warm instance (concurrency "
                           f"50): errors {len(errors)} (required 0) {verdict(not errors)}")
    report.verdicts.append(f"{app.key}: burst p99 {p99:.0f} ms (target <= "
                           f"{appstats.MAX_BURST_P99_MS:.0f} ms) "
                           f"{verdict(bool(ok) and p99 <= appstats.MAX_BURST_P99_MS)}")
    if ok:
        report.results.append(Result(
            name=f"{app.key}: burst of {count}",
            what=f"{count} concurrent GET {app.path}, each on a new connection, at one warm "
            "instance (max instances 1, concurrency 50)",
            subject=Summary.of(ok), baseline_name="sequential warm",
            baseline=Summary.of(warm),
            notes=[f"baseline: {WARM_BASELINE} sequential requests, each on a new connection, "
                   "just before"]))
    line = (f"burst: {count} requests, {len(errors)} errors, p50 {p50:.0f} ms, p99 {p99:.0f} "
            f"ms, all in {wall:.2f} s; {workers} workers in the instance after; "
            f"{len(waits)} waited for a worker because memory capped them (REPORT Memory Wait"
            + (f" p50 {statistics.median(waits):.0f} ms, max {max(waits):.0f} ms" if waits
               else "") + f"; caps logged: {caps or 'none'})")
    if memory is not None:
        line += (f"; then each extra worker's USS median "
                 f"{statistics.median(memory.extra_uss_kb or [0]) / 1024:.1f} MiB, the "
                 f"instance's processes {memory.total_pss_kb / 1024:.0f} MiB PSS in all")
    report.lines.append(f"{app.key}: {line}")
    return {"requests": count, "errors": len(errors), "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1), "wall_s": round(wall, 3), "workers_after": workers,
            "warm_p50_ms": round(p(warm, 50), 2),
            "memory_waits": len(waits),
            "memory_wait_p50_ms": round(statistics.median(waits), 1) if waits else None,
            "memory_caps": caps,
            "extra_worker_uss_median_mib": (round(statistics.median(memory.extra_uss_kb)
                                                  / 1024, 2)
                                            if memory and memory.extra_uss_kb else None)}


def _memory_waits(daemon: BenchDaemon, name: str, request_ids: list[str]
                  ) -> tuple[list[float], list[int]]:
    """The burst's REPORT Memory Wait figures (ms) and the worker caps the runtime logged,
    once every request's REPORT is in `lambdactl logs` (at most 10 s)."""
    lambdactl = executable("lambdactl")
    deadline = time.monotonic() + 10
    while True:
        text = _run([lambdactl, "logs", name, "--tail", "5000"],
                    env=daemon.env()).stdout.decode(errors="replace")
        reported = report_durations(text)
        if all(i in reported for i in request_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    waited = memory_waits(text)
    return [waited[i] for i in request_ids if i in waited], memory_caps(text)


def _summarize(app: App, s: _Samples, report: AppsReport) -> dict[str, Any]:
    key = app.key
    fig: dict[str, Any] = {}
    if not s.cold_ns:
        raise ColdBenchError(f"{key}: no round ran")
    # From zero
    overhead = statistics.median(s.overheads) if s.overheads else float("nan")
    imp = statistics.median(s.imports) if s.imports else float("nan")
    init = statistics.median(s.inits) if s.inits else float("nan")
    hooks = statistics.median(s.hooks) if s.hooks else float("nan")
    if s.imports:
        report.results.append(Result(
            name=f"{key}: from zero", what=f"first GET {app.path} at zero instances, to the "
            "full response (stem cell or container, the import, the request)",
            subject=Summary.of(s.cold_ns), baseline_name="import (Server-Timing)",
            baseline=Summary.of([int(v * 1e6) for v in s.imports]),
            notes=["baseline: the runtime's own timing of the handler's import, from the "
                   "same responses' Server-Timing import;dur"]))
    report.verdicts.append(
        f"{key}: from zero, init - import - hooks p50 {overhead:.1f} ms (import p50 "
        f"{imp:.1f} ms, before-snapshot hooks {hooks:.1f} ms, init {init:.1f} ms; target "
        f"overhead <= {appstats.MAX_FROM_ZERO_OVERHEAD_MS:g} ms) "
        f"{verdict(bool(s.overheads) and overhead <= appstats.MAX_FROM_ZERO_OVERHEAD_MS)}")
    cold_p50 = statistics.median(s.cold_ns) / 1e6
    fig["from_zero"] = {"n": len(s.cold_ns), "p50_ms": round(cold_p50, 2),
                        "init_p50_ms": round(init, 2), "import_p50_ms": round(imp, 2),
                        "hooks_p50_ms": round(hooks, 2),
                        "overhead_p50_ms": round(overhead, 2),
                        "overhead_max_ms": round(max(s.overheads), 2) if s.overheads else None,
                        "served": dict(s.cold_starts)}
    # Scale-out
    if s.fresh:
        result = Result(
            name=f"{key}: scale-out (new worker)",
            what=f"GET {app.path} on a pre-opened connection while every worker of the warm "
            "instance is busy (held by SIGSTOP): the supervisor forks a worker for it",
            subject=Summary.of(s.fresh), baseline_name="next request (warm)",
            baseline=Summary.of(s.warm),
            notes=["baseline: the next request, sent alone (a warm worker)"])
        report.results.append(result)
        p50, p99 = result.subject.median_ms, p(s.fresh, 99)
        report.verdicts.append(
            f"{key}: scale-out p50 {p50:.1f} ms (target <= "
            f"{appstats.MAX_SCALE_OUT_P50_MS:g} ms) "
            f"{verdict(p50 <= appstats.MAX_SCALE_OUT_P50_MS)}")
        report.verdicts.append(
            f"{key}: scale-out p99 {p99:.1f} ms of {len(s.fresh)} forks (target <= "
            f"{appstats.MAX_SCALE_OUT_P99_MS:g} ms) "
            f"{verdict(p99 <= appstats.MAX_SCALE_OUT_P99_MS)}")
        fig["scale_out"] = {"n": len(s.fresh), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                            "warm_p50_ms": round(result.baseline.median_ms, 2),
                            "ratio_of_medians": round(result.ratio, 3),
                            "steps_not_counted": s.steps_invalid,
                            "slower_than_hold": s.slower_than_hold}
    else:
        report.verdicts.append(f"{key}: scale-out: no step forked a worker MISS")
    # Thaw
    if s.thaw:
        result = Result(
            name=f"{key}: thaw (frozen)",
            what=f"GET {app.path} while the only instance is frozen (past its idle timeout, "
            "within the freeze window): thaw, the request",
            subject=Summary.of(s.thaw), baseline_name="next request",
            baseline=Summary.of(s.after_thaw),
            notes=["the response must say Lambda-Cold-Start: unpaused; baseline: the next "
                   "request (warm)"])
        report.results.append(result)
        p50 = result.subject.median_ms
        report.verdicts.append(f"{key}: after an idle period (frozen) p50 {p50:.1f} ms "
                               f"(target <= {appstats.MAX_THAW_P50_MS:g} ms) "
                               f"{verdict(p50 <= appstats.MAX_THAW_P50_MS)}")
        gateway = statistics.median(a.timing.get("gateway", float("nan"))
                                    for a in s.thaw_answers)
        function = statistics.median(a.timing.get("function", float("nan"))
                                     for a in s.thaw_answers)
        report.lines.append(
            f"{key}: thaw, split (Server-Timing p50): gateway {gateway:.1f} ms (the unpause "
            f"is lambdad's, before the request goes on), function {function:.1f} ms")
        fig["thaw"] = {"n": len(s.thaw), "p50_ms": round(p50, 2),
                       "gateway_p50_ms": round(gateway, 2), "function_p50_ms": round(function, 2),
                       "warm_p50_ms": round(result.baseline.median_ms, 2),
                       "not_thawed": s.not_thawed}
    else:
        report.verdicts.append(f"{key}: after an idle period: no request was thawed "
                               f"({s.not_thawed}) MISS")
    if s.not_thawed:
        report.anomalies.append(f"{key}: {len(s.not_thawed)} requests to a frozen instance "
                                f"did not say unpaused: {s.not_thawed}")
    # Memory
    if s.memory and s.first_memory:
        first = statistics.median(m.first_kb for m in s.first_memory)
        extras_kb = [u for m in s.memory for u in m.extra_uss_kb]
        worst = extra_share(first, extras_kb)
        extra = statistics.median(extras_kb) / 1024 if extras_kb else float("nan")
        rss = statistics.median(m.first_worker_rss_kb for m in s.first_memory) / 1024
        report.verdicts.append(
            f"{key}: memory per extra worker (USS) median {extra:.2f} MiB, largest "
            f"{worst:.0%} of the first environment's {first / 1024:.1f} MiB (zygote + first "
            f"worker, PSS, at one worker; target <= {appstats.MAX_EXTRA_WORKER_SHARE:.0%}) "
            f"{verdict(bool(extras_kb) and worst <= appstats.MAX_EXTRA_WORKER_SHARE)}")
        sup = statistics.median(m.supervisor_pss_kb for m in s.first_memory) / 1024
        report.lines.append(
            f"{key}: memory: first environment {first / 1024:.1f} MiB (zygote + first worker, "
            f"PSS, at one worker; the first worker's RSS {rss:.1f} MiB), each extra worker "
            f"{extra:.2f} MiB USS after its request (median of {len(extras_kb)}, largest "
            f"{worst:.0%}); the supervisor {sup:.1f} MiB PSS besides")
        fig["memory"] = {"first_env_pss_mib": round(first / 1024, 2),
                         "first_worker_rss_mib": round(rss, 2),
                         "extra_worker_uss_median_mib": round(extra, 2),
                         "largest_share": round(worst, 3), "supervisor_pss_mib": round(sup, 2),
                         "extra_workers_measured": len(extras_kb)}
    # Where a scale-out request's time goes: REPORT's Duration is the handler in its worker
    probe_runs = [s.durations[a.request_id] for a in s.probes if a.request_id in s.durations]
    warm_runs = [s.durations[a.request_id] for a in s.warms if a.request_id in s.durations]
    waits = [a.timing["function"] - s.durations[a.request_id] for a in s.probes
             if a.request_id in s.durations and "function" in a.timing]
    if probe_runs and warm_runs and waits:
        report.lines.append(
            f"{key}: scale-out request, split (p50): waiting for the fork "
            f"{statistics.median(waits):.1f} ms (Server-Timing function minus REPORT "
            f"Duration), then the handler's first call in the new worker "
            f"{statistics.median(probe_runs):.1f} ms, against {statistics.median(warm_runs):.2f}"
            f" ms for the next call in a warm worker (of {len(probe_runs)} REPORT lines)")
        fig.setdefault("scale_out", {}).update({
            "fork_wait_p50_ms": round(statistics.median(waits), 2),
            "first_call_p50_ms": round(statistics.median(probe_runs), 2),
            "warm_call_p50_ms": round(statistics.median(warm_runs), 2)})
    report.lines.append(
        f"{key}: from zero p50 {cold_p50:.0f} ms end to end (served by "
        f"{dict(s.cold_starts)}), init p50 {init:.1f} ms of which import {imp:.1f} ms; "
        f"scale-out steps not counted (worker count did not rise by one): {s.steps_invalid}, "
        f"probes slower than the 1 s hold: {s.slower_than_hold}")
    return fig


def _source(app: App, copies: Path) -> Path:
    """The folder to deploy: app.source, or a copy of it without app.without."""
    if not app.without:
        return app.source
    folder = copies / app.key
    shutil.copytree(app.source, folder)
    for path in folder.glob("*.py"):
        text = path.read_text()
        if app.without in text:
            path.write_text(text.replace(app.without, ""))
            return folder
    raise ColdBenchError(f"{app.key}: {app.without!r} is not in {app.source}'s code")


def bench_apps(report: AppsReport, *, rounds: int, burst: int, pool_size: int,
               wheelhouse: Path) -> None:
    """Runs the group in a lambdad of its own (a freeze window); removes it all after."""
    if os.geteuid() != 0:
        raise ColdBenchError("the apps group reads the instances' /proc/<pid>/smaps_rollup and "
                             "stops their workers (SIGSTOP) from the host: run it as root")
    image = os.environ.get("LAMBDA_BENCH_RUNTIME_IMAGE", "")
    daemon = BenchDaemon(extra_args=["--cell-pool-size", str(pool_size),
                                     "--freeze-window", str(FREEZE_WINDOW_S),
                                     "--wheelhouse", str(wheelhouse),
                                     *(["--runtime-image", image] if image else [])])
    started = time.monotonic()
    copies = Path(tempfile.mkdtemp(prefix="bench-apps-"))
    try:
        print(f"  apps: own lambdad (--freeze-window {FREEZE_WINDOW_S}, state "
              f"{daemon.state_dir}, runtime image {image or 'default'})", flush=True)
        daemon.start()
        docker = Containers(daemon)
        procs = Processes(daemon)
        for app in APPS:
            names = [f"bench-app-{app.key}-{i}" for i in range(2)]
            print(f"  apps: {app.key}: deploying {', '.join(names)} ({' '.join(SCALING)})",
                  flush=True)
            source = _source(app, copies)
            for name in names:
                deploy(daemon, source, name, *SCALING)
            samples = _Samples()
            last = -1
            for n in range(1, rounds + 1):
                index, _ = rotation(docker, names, last)
                last = index
                _round(daemon, docker, procs, app, names[index], samples, n)
            lambdactl = executable("lambdactl")
            for name in names:  # REPORT lines: the handler's own time in its worker
                logs = _run([lambdactl, "logs", name, "--tail", "5000"], env=daemon.env())
                samples.durations.update(report_durations(logs.stdout.decode(errors="replace")))
            figures = _summarize(app, samples, report)
            figures["burst"] = _burst(daemon, docker, procs, app, names[last], burst, report)
            report.figures["apps"][app.key] = figures
    finally:
        shutil.rmtree(copies, ignore_errors=True)
        removed = daemon.close()
        containers = [r for r in removed if r.startswith("container ")]
        report.lines.append(f"clean-up: the group's lambdad stopped after "
                            f"{time.monotonic() - started:.0f} s; containers it left (removed "
                            f"by the bench): {len(containers)}")
        report.figures["apps"]["leftover_containers"] = containers
    if report.anomalies:
        report.lines.append("anomalies:")
        report.lines.extend(f"  - {a}" for a in report.anomalies)
