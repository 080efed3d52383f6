"""The `outside` group: an outside load generator, as a new user would run one.

wrk (Debian's `wrk` package; `make bench` installs it when it can) loads the gateway
(`Host: bench-warm.localhost`, the warm group's function: `--concurrency 32 --max-instances 1
--min-instances 1`) and functions-framework serving the same logic (the peer group's server)
with keep-alive `GET /?name=World`, at 1 and 32 connections, in one run, alternating the
two targets. Without wrk the same runs go through bench/loadgen.py (also a process of its
own), and the output says so. Traffic goes only to 127.0.0.1.

Issue 16's targets are printed as PASS/MISS: at 1 connection req/s >= 1.5x
functions-framework's and p99 <= 1.5 ms; at 32 connections req/s >= 2x.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BenchDaemon
from load import (
    CLIENTS,
    PEER_VERSION,
    QUERY,
    WARM_FUNCTION,
    LoadBenchError,
    _containers,
    _deploy,
    _peer_server,
    _peer_venv,
    _tree_cpu_s,
    _verdict,
)
from loadgen import measure, proc_cpu_s
from tables import skipped, text_table

EXTRA_DEPLOY = ("--concurrency", "32", "--max-instances", "1", "--min-instances", "1")
MIN_RPS_RATIO_1 = 1.5
MAX_P99_MS_1 = 1.5
MIN_RPS_RATIO_32 = 2.0
WARMUP_S = 1  # a short run per target and connection count before the counted one

# wrk calls done() once at the end; one JSON line on stdout is what we read back.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class OutsideResult:
    """One counted run of the outside generator against one target."""

    target: str
    connections: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float | None  # the server's CPU seconds over the run / requests


@dataclass
class OutsideReport:
    """What the outside group found; printed after the load table."""

    generator: str = ""
    results: list[OutsideResult] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # for --json


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _wrk(script: Path, port: int, host: str, connections: int, duration: int
         ) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
               "-s", str(script), "-H", f"Host: {host}", f"http://127.0.0.1:{port}{QUERY}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30,
                          check=False)
    if proc.returncode != 0:
        raise LoadBenchError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise LoadBenchError(f"wrk printed no summary: {proc.stdout[-300:]}")
    data: dict[str, float] = json.loads(lines[-1])
    return data


def _run_one(script: Path | None, *, target: str, port: int, host: str, connections: int,
             duration: float, cpu: tuple[str, int]) -> OutsideResult:
    """One counted run; `cpu` is (how, pid): "proc" for one process, "tree" for a process
    and its children (gunicorn's arbiter and worker)."""
    how, pid = cpu
    read_cpu = proc_cpu_s if how == "proc" else _tree_cpu_s
    if script is not None:
        seconds = max(1, round(duration))
        _wrk(script, port, host, connections, WARMUP_S)  # warm-up, not counted
        before = read_cpu(pid)
        data = _wrk(script, port, host, connections, seconds)
        after = read_cpu(pid)
        requests = int(data["requests"])
        cpu_us = None
        if before is not None and after is not None and requests:
            cpu_us = (after - before) / requests * 1e6
        return OutsideResult(
            target=target, connections=connections, requests=requests,
            errors=int(data["errors"]), rps=requests / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, server_cpu_us=cpu_us)
    # No wrk: bench/loadgen.py in its own process, CPU read over its window when it can.
    before = read_cpu(pid)
    started = time.monotonic()
    result = measure(tcp_port=port, connections=connections, path=QUERY, host_header=host,
                     duration=duration, warmup=float(WARMUP_S),
                     cpu_pid=pid if how == "proc" else None)
    cpu_us = result.pid_cpu_us_per_request
    if cpu_us is None:
        after = read_cpu(pid)
        if before is not None and after is not None and result.requests:
            # the whole run, warm-up included, over the counted requests: reads high
            ran = time.monotonic() - started
            cpu_us = (after - before) * (result.window_s / ran) / result.requests * 1e6
    return OutsideResult(target=target, connections=connections, requests=result.requests,
                         errors=result.errors, rps=result.rps, p50_ms=result.p50_ms,
                         p99_ms=result.p99_ms, server_cpu_us=cpu_us)


def bench_outside(daemon: BenchDaemon, report: OutsideReport, *, duration: float) -> None:
    try:
        binary = _peer_venv()
    except LoadBenchError as exc:
        skipped(report.verdicts, "outside", exc)
        return
    if not _containers(daemon, WARM_FUNCTION):
        print(f"  outside: deploying {WARM_FUNCTION} ({' '.join(EXTRA_DEPLOY)})", flush=True)
        _deploy(daemon, WARM_FUNCTION, *EXTRA_DEPLOY)
    assert daemon.process is not None
    daemon_pid = daemon.process.pid
    wrk = wrk_path()
    generator = ("wrk (Debian), 1 thread" if wrk else
                 "bench/loadgen.py in its own process (wrk is not installed: "
                 "`apt-get install wrk`)")
    print(f"  outside: generator {generator}", flush=True)
    report.generator = generator
    ours: dict[int, OutsideResult] = {}
    peer: dict[int, OutsideResult] = {}
    with tempfile.TemporaryDirectory(prefix="lbw-", dir="/tmp") as folder:
        script = Path(folder) / "summary.lua" if wrk else None
        if script is not None:
            script.write_text(WRK_SCRIPT)
        with _peer_server(binary) as (port, peer_pid):
            for clients in CLIENTS:  # gateway then peer at each count: one run, interleaved
                ours[clients] = _run_one(
                    script, target="gateway", port=daemon.gateway_port,
                    host=f"{WARM_FUNCTION}.localhost", connections=clients,
                    duration=duration, cpu=("proc", daemon_pid))
                peer[clients] = _run_one(
                    script, target=f"functions-framework {PEER_VERSION}", port=port,
                    host=f"127.0.0.1:{port}", connections=clients, duration=duration,
                    cpu=("tree", peer_pid))
                for result in (ours[clients], peer[clients]):
                    report.results.append(result)
                    cpu = ("" if result.server_cpu_us is None else
                           f"  (server CPU {result.server_cpu_us:.0f} us/request)")
                    print(f"    outside {result.target:28} {clients:2} connections: "
                          f"{result.rps:8,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                          f"p99 {result.p99_ms:.3f} ms  errors {result.errors}{cpu}",
                          flush=True)
    ratio = {c: ours[c].rps / peer[c].rps for c in CLIENTS}
    report.verdicts.append(
        f"outside ({'wrk' if wrk else 'loadgen'}), 1 connection: gateway {ours[1].rps:,.0f} / "
        f"functions-framework {peer[1].rps:,.0f} req/s = {ratio[1]:.2f}x "
        f"(target >= {MIN_RPS_RATIO_1}x) {_verdict(ratio[1] >= MIN_RPS_RATIO_1)}")
    report.verdicts.append(
        f"outside ({'wrk' if wrk else 'loadgen'}), 1 connection: gateway p99 "
        f"{ours[1].p99_ms:.3f} ms (functions-framework {peer[1].p99_ms:.3f} ms; target <= "
        f"{MAX_P99_MS_1} ms) {_verdict(ours[1].p99_ms <= MAX_P99_MS_1)}")
    report.verdicts.append(
        f"outside ({'wrk' if wrk else 'loadgen'}), 32 connections: gateway {ours[32].rps:,.0f} / "
        f"functions-framework {peer[32].rps:,.0f} req/s = {ratio[32]:.2f}x "
        f"(target >= {MIN_RPS_RATIO_32}x) {_verdict(ratio[32] >= MIN_RPS_RATIO_32)}")
    report.figures["outside"] = {
        "generator": "wrk" if wrk else "loadgen",
        **{f"rps_ratio_{c}": round(ratio[c], 3) for c in CLIENTS},
        **{f"{side}_{key}_{c}": round(getattr(results[c], key), 4)
           for side, results in (("gateway", ours), ("peer", peer)) for c in CLIENTS
           for key in ("rps", "p50_ms", "p99_ms")},
        **{f"gateway_daemon_us_per_request_{c}": round(ours[c].server_cpu_us, 1)
           for c in CLIENTS if ours[c].server_cpu_us is not None},
    }


def render_outside(results: list[OutsideResult]) -> str:
    headers = ["target", "connections", "n", "req/s", "p50 ms", "p99 ms", "errors",
               "server CPU us/req"]
    cells = [[r.target, str(r.connections), str(r.requests), f"{r.rps:,.0f}",
              f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}", str(r.errors),
              "-" if r.server_cpu_us is None else f"{r.server_cpu_us:.0f}"] for r in results]
    return text_table(headers, cells, left={0})
