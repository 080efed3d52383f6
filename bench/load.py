"""The issue's load benchmarks: warm (gateway vs instance socket) and peer.

Each load run goes through bench/loadgen.py in a process of its own; see bench/README.md.
Traffic goes only to 127.0.0.1 and to Unix sockets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT, BenchDaemon, UnixHTTPConnection, executable, free_port
from loadgen import LoadResult, canned_server, measure, proc_cpu_s
from stats import LoadRow, Result
from tables import skipped

SOURCE = ROOT / "functions" / "greet"
WARM_FUNCTION = "bench-warm"
EXTRA = os.environ.get("BENCH_DEPLOY_ARGS", "").split()  # experiment knob
QUERY = "/?name=World"
EXPECTED = b"Hello, World!"
CLIENTS = (1, 32)

# Targets of the issue (printed as PASS/MISS, never asserted).
MAX_P50_OVERHEAD_MS = 0.5
MIN_RPS_SHARE_32 = 0.60
MAX_DAEMON_US_PER_REQUEST = 150.0  # issue 16: lambdad CPU per proxied request

PEER_PACKAGE = "functions-framework"
PEER_VERSION = "3.10.2"  # verified: serves with gunicorn (gthread), 1 worker, 4 threads/core
PEER_VENV = ROOT / "bench" / ".peer-venv"
PEER_SOURCE = ROOT / "bench" / "peer" / "main.py"


class LoadBenchError(RuntimeError):
    """A load benchmark could not run; the message says why."""


@dataclass
class LoadReport:
    """What the warm and peer benchmarks found; printed after the main table (cold starts:
    bench/cold.py)."""

    rows: list[LoadRow] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)  # rows of the main (median) table
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gateway: dict[int, LoadResult] = field(default_factory=dict)  # by clients
    floor: dict[int, LoadResult] = field(default_factory=dict)
    ceiling: dict[tuple[str, int], LoadResult] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # for --json

    def add(self, group: str, target: str, result: LoadResult,
            daemon_cpu: float | None = None, instance_cpu: float | None = None) -> None:
        per_request = result.pid_cpu_us_per_request  # lambdad's, when it was watched
        self.rows.append(LoadRow(group=group, target=target, clients=result.connections,
                                 requests=result.requests, errors=result.errors,
                                 rps=result.rps, p50_ms=result.p50_ms, p99_ms=result.p99_ms,
                                 mean_ms=result.mean_ms, gen_cpu_pct=result.cpu_pct,
                                 daemon_cpu_pct=daemon_cpu, instance_cpu_pct=instance_cpu,
                                 daemon_us_per_request=per_request))
        extra = "".join(f", {what} {value:.0f}%" for what, value in
                        (("lambdad", daemon_cpu), ("instance", instance_cpu))
                        if value is not None)
        if per_request is not None:
            extra += f", lambdad {per_request:.0f} us/request"
        print(f"    {group:7} {target:28} {result.connections:2} clients: "
              f"{result.rps:8,.0f} req/s  p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
              f"  (CPU: generator {result.cpu_pct:.0f}%{extra})", flush=True)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _run(command: list[str], *, env: dict[str, str] | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(command, env=env, capture_output=True, timeout=timeout, cwd=ROOT,
                          check=False)
    if proc.returncode != 0:
        raise LoadBenchError(f"`{' '.join(command)}` exited with {proc.returncode}:\n"
                             f"{proc.stdout.decode(errors='replace')}"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def _deploy(daemon: BenchDaemon, name: str, *flags: str) -> dict[str, Any]:
    lambdactl = executable("lambdactl")
    _run([lambdactl, "deploy", str(SOURCE), "--name", name, *flags], env=daemon.env())
    got = _run([lambdactl, "get", name, "-o", "json"], env=daemon.env())
    info: dict[str, Any] = json.loads(got.stdout)
    return info


def _check(conn: http.client.HTTPConnection, headers: dict[str, str]) -> http.client.HTTPResponse:
    conn.request("GET", QUERY, headers=headers)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200 or EXPECTED not in body:
        raise LoadBenchError(f"unexpected response {response.status}: {body[:200]!r}")
    return response


def floor_headers(function: str) -> list[tuple[str, str]]:
    """What the gateway adds on its way to the instance (Lambda-Request-Id: per request)."""
    host = f"{function}.localhost"
    return [
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", host),
        ("Lambda-Deadline-Ms", str(int((time.time() + 600) * 1000))),
        ("Lambda-Invocation-Type", "http"),
    ]


# Warm: the gateway against the floor (the instance's own socket), same instance, same load.

def bench_warm(daemon: BenchDaemon, report: LoadReport, *, duration: float,
               warmup: float) -> None:
    print(f"  warm: deploying {WARM_FUNCTION} (--concurrency 32 --max-instances 1)", flush=True)
    _deploy(daemon, WARM_FUNCTION, "--concurrency", "32", "--max-instances", "1", *EXTRA,
            "--min-instances", "1")
    instance = str(daemon.instance_socket(WARM_FUNCTION))
    running = _containers(daemon, WARM_FUNCTION)
    if len(running) != 1:
        raise LoadBenchError(f"{WARM_FUNCTION} should have one instance, it has {len(running)}")
    container_id = running[0]
    host = f"{WARM_FUNCTION}.localhost"
    gateway = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=30)
    direct = UnixHTTPConnection(instance, timeout=30)
    try:  # both paths answer correctly before we load them
        _check(gateway, {"Host": host})
        _check(direct, {"Host": host, "Lambda-Request-Id": "bench-check",
                        **dict(floor_headers(WARM_FUNCTION))})
    finally:
        gateway.close()
        direct.close()

    print("  warm: generator ceiling against a canned-response server", flush=True)
    for kind in ("tcp", "unix"):
        with canned_server(kind) as target:
            for clients in CLIENTS:
                result = measure(connections=clients, path=QUERY, host_header=host,
                                 duration=duration, warmup=warmup, **target)
                report.ceiling[(kind, clients)] = result
                report.add("ceiling", f"canned server ({kind})", result)

    for clients in CLIENTS:
        floor, d_cpu, i_cpu = _with_cpu(
            daemon, container_id, unix_path=instance, connections=clients, path=QUERY,
            host_header=host, headers=floor_headers(WARM_FUNCTION),
            unique_header="Lambda-Request-Id", duration=duration, warmup=warmup)
        report.floor[clients] = floor
        report.add("warm", "floor: instance invoke.sock", floor, d_cpu, i_cpu)
        via, d_cpu, i_cpu = _with_cpu(
            daemon, container_id, tcp_port=daemon.gateway_port, connections=clients,
            path=QUERY, host_header=host, duration=duration, warmup=warmup)
        report.gateway[clients] = via
        report.add("warm", "gateway 127.0.0.1", via, d_cpu, i_cpu)

    one_gw, one_floor = report.gateway[1], report.floor[1]
    overhead = one_gw.p50_ms - one_floor.p50_ms
    overhead_32 = report.gateway[32].p50_ms - report.floor[32].p50_ms
    share = report.gateway[32].rps / report.floor[32].rps
    share_1 = one_gw.rps / one_floor.rps
    report.verdicts.append(
        f"warm p50 overhead, 1 client: gateway {one_gw.p50_ms:.3f} - floor "
        f"{one_floor.p50_ms:.3f} = {overhead:.3f} ms (target <= {MAX_P50_OVERHEAD_MS} ms) "
        f"{_verdict(overhead <= MAX_P50_OVERHEAD_MS)}")
    report.verdicts.append(
        f"warm req/s, 32 clients: gateway {report.gateway[32].rps:,.0f} / floor "
        f"{report.floor[32].rps:,.0f} = {share:.0%} (target >= {MIN_RPS_SHARE_32:.0%}) "
        f"{_verdict(share >= MIN_RPS_SHARE_32)}")
    report.notes.append(
        f"warm, for information: p50 overhead at 32 clients {overhead_32:.3f} ms; "
        f"req/s share at 1 client {share_1:.0%}")
    best_measured = max(r.rps for r in [*report.gateway.values(), *report.floor.values()])
    ceiling_32 = min(report.ceiling[("tcp", 32)].rps, report.ceiling[("unix", 32)].rps)
    report.notes.append(
        f"generator: at 32 clients it drives a canned server at >= {ceiling_32:,.0f} req/s, "
        f"{ceiling_32 / best_measured:.0f}x the best warm figure ({best_measured:,.0f} req/s): "
        "it is not the bottleneck")
    report.figures["warm"] = {
        "p50_overhead_ms_1": round(overhead, 4), "p50_overhead_ms_32": round(overhead_32, 4),
        "rps_share_32": round(share, 4), "rps_share_1": round(share_1, 4),
        "generator_ceiling_rps_32": round(ceiling_32),
    }
    _cpu_per_request(report)


def _cpu_per_request(report: LoadReport) -> None:
    """lambdad's CPU per proxied request (its utime + stime, all threads, over exactly the
    window whose requests are counted), against issue 16's target; the floor rows show what
    lambdad spends per request it does not proxy (following the instance's logs)."""
    for clients in CLIENTS:
        us = report.gateway[clients].pid_cpu_us_per_request
        floor_us = report.floor[clients].pid_cpu_us_per_request
        if us is None:
            report.verdicts.append(f"lambdad CPU per proxied request, {clients} client(s): "
                                   "not measured (/proc unreadable)")
            continue
        report.verdicts.append(
            f"lambdad CPU per proxied request, {clients:2} client{'s' if clients > 1 else ' '}: "
            f"{us:.0f} us (target <= {MAX_DAEMON_US_PER_REQUEST:.0f} us) "
            f"{_verdict(us <= MAX_DAEMON_US_PER_REQUEST)}")
        report.figures["warm"][f"daemon_us_per_request_{clients}"] = round(us, 1)
        if floor_us is not None:
            report.notes.append(
                f"lambdad CPU per request sent straight to the instance ({clients} "
                f"client{'s' if clients > 1 else ''}): {floor_us:.0f} us (log capture only)")
            report.figures["warm"][f"daemon_us_per_floor_request_{clients}"] = round(
                floor_us, 1)


# Containers and CPU accounting.

def _containers(daemon: BenchDaemon, function: str) -> list[str]:
    """Ids of the function's containers, any state, specialized stem cells included."""
    return [str(c["Id"]) for c in daemon.function_containers(function)]


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process and its children (gunicorn's arbiter and workers)."""
    total = proc_cpu_s(pid)
    if total is None:
        return None
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += proc_cpu_s(int(child)) or 0.0
    return total


def _container_cpu_s(container_id: str) -> float | None:
    """CPU seconds of a container from its cgroup (v1 cpuacct or v2 cpu.stat), if readable."""
    v1 = Path("/sys/fs/cgroup/cpuacct/docker") / container_id / "cpuacct.usage"
    with contextlib.suppress(OSError, ValueError):
        return int(v1.read_text()) / 1e9
    for v2 in (Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope",
               Path("/sys/fs/cgroup/docker") / container_id):
        with contextlib.suppress(OSError, ValueError):
            for line in (v2 / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


def _cpu_pct(before: float | None, after: float | None, wall: float) -> float | None:
    if before is None or after is None or wall <= 0:
        return None
    return 100.0 * (after - before) / wall


def _with_cpu(daemon: BenchDaemon, container_id: str | None, **kwargs: Any
              ) -> tuple[LoadResult, float | None, float | None]:
    """measure(), plus the average CPU of lambdad and of the instance over the whole run;
    the generator also reads lambdad's CPU over its window (`pid_cpu_s`)."""
    pid = daemon.process.pid if daemon.process is not None else None
    d0 = proc_cpu_s(pid) if pid else None
    c0 = _container_cpu_s(container_id) if container_id else None
    t0 = time.monotonic()
    result = measure(cpu_pid=pid, **kwargs)
    wall = time.monotonic() - t0
    d1 = proc_cpu_s(pid) if pid else None
    c1 = _container_cpu_s(container_id) if container_id else None
    return result, _cpu_pct(d0, d1, wall), _cpu_pct(c0, c1, wall)


# Peer: the same handler served by Google's functions-framework, under the same load.

def _peer_venv() -> Path:
    """bench/.peer-venv with the pinned functions-framework; raises LoadBenchError if not."""
    marker = PEER_VENV / f".{PEER_PACKAGE}-{PEER_VERSION}"
    binary = PEER_VENV / "bin" / "functions-framework"
    if marker.exists() and binary.exists():
        return binary
    print(f"  peer: installing {PEER_PACKAGE}=={PEER_VERSION} into "
          f"{PEER_VENV.relative_to(ROOT)}", flush=True)
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    try:
        _run([sys.executable, "-m", "venv", str(PEER_VENV)], timeout=120)
        _run([str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", f"{PEER_PACKAGE}=={PEER_VERSION}"], timeout=240)
    except (LoadBenchError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        last = str(exc).strip().splitlines()[-1:] or ["?"]
        raise LoadBenchError(f"could not install {PEER_PACKAGE}=={PEER_VERSION}: {last[0]}"
                             ) from None
    marker.touch()
    return binary


@contextlib.contextmanager
def _peer_server(binary: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [str(binary), "--target", "greet", "--source", str(PEER_SOURCE),
             "--signature-type", "http", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in ("WORKERS", "THREADS", "DEBUG")},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise LoadBenchError(f"functions-framework exited with {proc.returncode}: "
                                         f"{log.read().decode(errors='replace')[-500:]}")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    _check(conn, {"Host": "localhost"})
                    break
                except (OSError, http.client.HTTPException):
                    if time.monotonic() > deadline:
                        raise LoadBenchError("functions-framework did not answer in 30 s") from None
                    time.sleep(0.1)
                finally:
                    conn.close()
            yield port, proc.pid
        finally:
            if proc.poll() is None:  # gunicorn: the arbiter and its worker share our new group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind, if any


def bench_peer(daemon: BenchDaemon, report: LoadReport, *, duration: float,
               warmup: float) -> None:
    try:
        binary = _peer_venv()
    except LoadBenchError as exc:
        skipped(report.verdicts, "peer", exc)
        return
    if not report.gateway:  # --only peer: measure our side too
        print(f"  peer: deploying {WARM_FUNCTION} for our side", flush=True)
        _deploy(daemon, WARM_FUNCTION, "--concurrency", "32", "--max-instances", "1", *EXTRA,
                "--min-instances", "1")
        container_id = next(iter(_containers(daemon, WARM_FUNCTION)), None)
        for clients in CLIENTS:
            result, d_cpu, i_cpu = _with_cpu(
                daemon, container_id, tcp_port=daemon.gateway_port, connections=clients,
                path=QUERY, host_header=f"{WARM_FUNCTION}.localhost", duration=duration,
                warmup=warmup)
            report.gateway[clients] = result
            report.add("warm", "gateway 127.0.0.1", result, d_cpu, i_cpu)
    print(f"  peer: functions-framework {PEER_VERSION} (gunicorn gthread, default settings)",
          flush=True)
    peer: dict[int, LoadResult] = {}
    with _peer_server(binary) as (port, pid):
        for clients in CLIENTS:
            before, t0 = _tree_cpu_s(pid), time.monotonic()
            peer[clients] = measure(tcp_port=port, connections=clients, path=QUERY,
                                    host_header=f"127.0.0.1:{port}", duration=duration,
                                    warmup=warmup)
            cpu = _cpu_pct(before, _tree_cpu_s(pid), time.monotonic() - t0)
            report.add("peer", f"functions-framework {PEER_VERSION}", peer[clients],
                       instance_cpu=cpu)
    ratios = {c: report.gateway[c].rps / peer[c].rps for c in CLIENTS}
    report.verdicts.append(
        "peer req/s, ours (gateway) / functions-framework: "
        + ", ".join(f"{c} client{'s' if c > 1 else ''} {ratios[c]:.2f}x" for c in CLIENTS)
        + " (no target)")
    report.figures["peer"] = {f"rps_ratio_{c}": round(ratios[c], 3) for c in CLIENTS}

