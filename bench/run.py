"""`make bench`: latency and throughput of lambda, each against a baseline from the same run.

Starts a private lambdad (temporary state folder, free loopback port, own image prefix),
deploys functions/greet under a few names, measures, prints tables and removes everything it
made. Speed targets live here, never in timed tests. See bench/README.md and
docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from apps import AppsReport, bench_apps
from async_bench import AsyncReport, bench_async
from cluster import ClusterReport, bench_cluster
from cold import ColdReport, bench_cold
from harness import GRPC_OPTIONS, ROOT, BenchDaemon, UnixHTTPConnection, executable
from load import LoadReport, bench_peer, bench_warm
from outside import OutsideReport, bench_outside, render_outside
from stats import Result, Summary, render_load_table, render_table

from lambdad.api.v1 import functions_pb2, functions_pb2_grpc
from lambdad.build.dockerfile import generated_dockerfile

FUNCTION = "bench-greet"
SOURCE = ROOT / "functions" / "greet"
RUNTIME_IMAGE = "lambda-runtime/python:3.11"
PAYLOAD = b'{"name":"World"}'
EXPECTED = b"Hello, World!"
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
GROUPS = ("deploy", "deps", "http", "invoke", "warm", "cold", "peer", "outside", "async",
          "apps")
# Run only when asked (--only): `cluster` starts PostgreSQL and two more nodes (~1 min).
EXTRA_GROUPS = ("cluster",)
# The example apps whose requirements.txt the deps group resolves, from the wheels
# `make example-wheels` fetched (benchmarks talk to loopback only, never to an index).
DEPS_APPS = ("fastapi-mangum", "flask-apig-wsgi", "powertools")
EXAMPLE_WHEELS = ROOT / ".cache" / "example-wheels"


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Deploy, invoke, warm-load, cold-start, peer and async benchmarks of lambda, "
        "each with a baseline measured in the same run (ratio = median / baseline median).",
    )
    parser.add_argument("--only", default=",".join(GROUPS), metavar="GROUPS",
                        help=f"comma-separated benchmarks to run (default: all of "
                        f"{','.join(GROUPS)})")
    parser.add_argument("--rounds", type=int, default=15,
                        help="rounds of the invoke benchmarks: HTTP batches and lambdactl "
                        "invokes (default: 15)")
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per round for the HTTP and gRPC benchmarks (default: 200)")
    parser.add_argument("--deploys", type=int, default=5,
                        help="timed deploys and docker builds, after one warm-up each "
                        "(default: 5)")
    parser.add_argument("--budget", type=float, default=30.0, metavar="SECONDS",
                        help="a benchmark stops starting new rounds after this long "
                        "(default: 30)")
    parser.add_argument("--duration", type=float, default=3.0, metavar="SECONDS",
                        help="measuring window of each warm/peer/outside load run; wrk "
                        "rounds it to whole seconds (default: 3)")
    parser.add_argument("--warmup", type=float, default=0.5, metavar="SECONDS",
                        help="warm-up before each load run's window (default: 0.5)")
    parser.add_argument("--cold-rounds", type=int, default=30,
                        help="cold: stem-cell cold starts timed, after one warm-up; they stop "
                        "after 3x --budget (default: 30)")
    parser.add_argument("--cold-ref-rounds", type=int, default=8, metavar="N",
                        help="cold: docker run baselines, new-container cold starts and "
                        "unpauses timed (default: 8)")
    parser.add_argument("--burst", type=int, default=100, metavar="N",
                        help="cold: concurrent requests to a function at zero instances "
                        "(default: 100)")
    parser.add_argument("--cell-pool-size", type=int, default=2, metavar="N",
                        help="lambdad --cell-pool-size: stem cells kept ready per class "
                        "(default: 2, lambdad's default)")
    parser.add_argument("--pause-after", type=float, default=0.5, metavar="SECONDS",
                        help="lambdad --pause-after: idle Dockerfile instances are paused "
                        "after this long; only the cold group deploys any (default: 0.5)")
    parser.add_argument("--apps-rounds", type=int, default=6, metavar="N",
                        help="apps: rounds per app (fastapi-mangum, greet): from zero, three "
                        "scale-out groups, memory, thaw (default: 6)")
    parser.add_argument("--async-events", type=int, default=2000, metavar="N",
                        help="async: events enqueued, and sync calls of its baseline, each "
                        "bounded by min(--budget, 8) seconds (default: 2000)")
    parser.add_argument("--async-threads", type=int, default=8, metavar="N",
                        help="async: client threads sending them (default: 8)")
    parser.add_argument("--cron-window", type=float, default=8.0, metavar="SECONDS",
                        help="async: how long the every-second schedule runs (default: 8)")
    parser.add_argument("--json", nargs="?", const=str(DEFAULT_JSON), default=None,
                        metavar="PATH", help=f"also write the results as JSON (default path: "
                        f"{DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--keep-log", action="store_true",
                        help="print the daemon's log at the end")
    args = parser.parse_args(argv)
    for name in ("rounds", "requests", "deploys", "cold_rounds", "cold_ref_rounds", "burst",
                 "cell_pool_size", "async_events", "async_threads", "apps_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cron_window < 2:
        parser.error("--cron-window must be at least 2 seconds")
    if args.pause_after <= 0:
        parser.error("--pause-after must be positive (the cold group measures unpausing)")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(only) - set(GROUPS) - set(EXTRA_GROUPS))
    if unknown or not only:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(GROUPS + EXTRA_GROUPS)}")
    args.only = [g for g in GROUPS + EXTRA_GROUPS if g in only]
    return args


def timed(fn: Callable[[], None]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def rounds(count: int, budget: float) -> Iterator[int]:
    """0..count-1, stopping early (after at least one round) once `budget` seconds passed."""
    deadline = time.monotonic() + budget
    for i in range(count):
        if i > 0 and time.monotonic() > deadline:
            print(f"    budget of {budget:.0f} s spent: stopping after {i} of {count} rounds",
                  flush=True)
            return
        yield i


def run(command: list[str], *, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(command, env=env, capture_output=True, timeout=timeout, cwd=ROOT,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(command)}` exited with {proc.returncode}:\n"
                         f"{proc.stdout.decode(errors='replace')}"
                         f"{proc.stderr.decode(errors='replace')}")
    return proc


# 1. A warm-cache deploy of a one-line change, against `docker build -q` of a one-file change.

def _one_line_change(handler: Path, n: int) -> None:
    """Rewrites the handler's last line as the round's own: each deploy and each build sees
    new code, as a developer's edit-deploy loop does (an unchanged upload would let Docker
    answer from its layer cache without copying anything)."""
    lines = handler.read_text().splitlines()
    if lines and lines[-1].startswith("# bench round "):
        lines.pop()
    handler.write_text("\n".join([*lines, f"# bench round {n}"]) + "\n")


def bench_deploy(daemon: BenchDaemon, args: argparse.Namespace) -> Result:
    lambdactl = executable("lambdactl")
    env = daemon.env()
    work = Path(tempfile.mkdtemp(prefix="lbctx-", dir="/tmp"))
    source = work / "greet"  # the function folder the CLI deploys
    context = work / "context"  # the baseline's docker build context
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(SOURCE, source, ignore=ignore)
        shutil.copytree(SOURCE, context / "code", ignore=ignore)
        # The baseline builds FROM the local runtime image (no pull) and COPYs the code: a
        # one-file change rebuilds the COPY layer, as lambda's image builds did.
        (context / "Dockerfile").write_text(generated_dockerfile(RUNTIME_IMAGE, with_deps=False))
        deploy = [lambdactl, "deploy", str(source), "--name", FUNCTION]
        # The daemon builds Dockerfile functions through the Engine API's classic builder:
        # so does the baseline.
        build_env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        daemon_label = f"lambda.daemon={daemon.daemon_id}"

        def docker_build(n: int) -> None:
            _one_line_change(context / "code" / "handler.py", n)
            run(["docker", "build", "-q", "--pull=false",
                 "-t", f"{daemon.image_prefix}/baseline:v{n}",
                 "--label", daemon_label, "--label", "lambda.function=bench-baseline",
                 "--label", f"lambda.version={n}", str(context)], env=build_env)

        def cli_deploy(n: int) -> None:
            _one_line_change(source / "handler.py", n)
            run(deploy, env=env)

        print("  deploy: warm-up (first deploy and first docker build, not counted)", flush=True)
        cli_deploy(0)
        docker_build(0)
        subject: list[int] = []
        baseline: list[int] = []
        for i in rounds(args.deploys, args.budget):
            # Alternate the order so neither side always follows the other's cleanup work.
            build = functools.partial(docker_build, i + 1)
            ship = functools.partial(cli_deploy, i + 1)
            if i % 2:
                subject.append(timed(ship))
                baseline.append(timed(build))
            else:
                baseline.append(timed(build))
                subject.append(timed(ship))
            print(f"    round {i + 1}: deploy {subject[-1] / 1e6:.0f} ms, "
                  f"docker build {baseline[-1] / 1e6:.0f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Result(
        name="deploy (warm cache)",
        what=f"wall time of `lambdactl deploy` of functions/greet with a one-line change, "
        f"as {FUNCTION} (a new version: package, upload, build, start the instance, switch "
        "traffic)",
        subject=Summary.of(subject),
        baseline_name="docker build -q",
        baseline=Summary.of(baseline),
        notes=["baseline: DOCKER_BUILDKIT=0 docker build -q --pull=false of FROM the local "
               "runtime image + COPY code, with a one-line change of handler.py each round; "
               "target: ratio <= 1.0"],
    )


# 1b. Deploys of apps with requirements.txt: resolved by pip vs taken from the build cache.

def public_wheelhouse() -> Path:
    """A world-readable copy of the example wheels: a daemon running as root resolves as
    uid 65534, which cannot reach the checkout's folder if it lives under /root."""
    if not any(EXAMPLE_WHEELS.glob("*.whl")):
        raise BenchError(f"no wheels in {EXAMPLE_WHEELS}: run `make example-wheels` first")
    folder = Path(tempfile.mkdtemp(prefix="lbwheels-", dir="/tmp"))
    folder.chmod(0o755)
    for wheel in EXAMPLE_WHEELS.glob("*.whl"):
        shutil.copy(wheel, folder / wheel.name)
        (folder / wheel.name).chmod(0o644)
    return folder


def bench_deps(daemon: BenchDaemon, args: argparse.Namespace) -> list[Result]:
    lambdactl = executable("lambdactl")
    env = daemon.env()
    results = []
    for app in DEPS_APPS:
        name = f"bench-{app}"
        deploy = [lambdactl, "deploy", str(ROOT / "functions" / app), "--name", name]
        print(f"  deps: {app}: warm-up (first deploy, not counted)", flush=True)
        run(deploy, env=env)
        cached: list[int] = []
        resolved: list[int] = []
        for i in rounds(args.deploys, args.budget):
            # Alternate the order so neither side always follows the other's clean-up.
            order = [(resolved, [*deploy, "--no-cache"]), (cached, deploy)]
            for samples, command in order if i % 2 else order[::-1]:
                samples.append(timed(functools.partial(run, command, env=env)))
            print(f"    round {i + 1}: from the build cache {cached[-1] / 1e6:.0f} ms, "
                  f"pip {resolved[-1] / 1e6:.0f} ms", flush=True)
        results.append(Result(
            name=f"deploy {app} (cache)",
            what=f"wall time of `lambdactl deploy functions/{app}` when its requirements come "
            "from the build cache (warm)",
            subject=Summary.of(cached),
            baseline_name="--no-cache (pip)",
            baseline=Summary.of(resolved),
            notes=["baseline: the same deploy with --no-cache: pip resolves requirements.txt "
                   "from the local wheelhouse (make example-wheels), as a cold cache would"],
        ))
    return results


# 2. Warm invoke through the gateway, against the instance's own Unix socket.

def _get(conn: http.client.HTTPConnection, headers: dict[str, str]) -> None:
    conn.request("GET", "/?name=World", headers=headers)
    response = conn.getresponse()
    body = response.read()  # read fully, or the connection cannot be reused
    if response.status != 200 or EXPECTED not in body:
        raise BenchError(f"unexpected response {response.status}: {body[:200]!r}")


def bench_http(daemon: BenchDaemon, args: argparse.Namespace) -> Result:
    instance = daemon.instance_socket(FUNCTION)
    gateway = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=30)
    direct = UnixHTTPConnection(str(instance), timeout=30)
    gateway_headers = {"Host": f"{FUNCTION}.localhost"}

    def direct_headers() -> dict[str, str]:
        # What the gateway adds on its way to the instance, so both sides do the same work.
        return {
            "Host": f"{FUNCTION}.localhost",
            "X-Forwarded-For": "127.0.0.1",
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": f"{FUNCTION}.localhost",
            "Lambda-Request-Id": str(uuid.uuid4()),
            "Lambda-Deadline-Ms": str(int((time.time() + 10) * 1000)),
            "Lambda-Invocation-Type": "http",
        }

    def via_gateway() -> None:
        _get(gateway, gateway_headers)

    def via_socket() -> None:
        _get(direct, direct_headers())

    subject: list[int] = []
    baseline: list[int] = []
    try:
        for _ in range(20):  # warm-up: connections, caches, the handler's first calls
            via_gateway()
            via_socket()
        for i in rounds(args.rounds, args.budget):
            sides = [(via_gateway, subject), (via_socket, baseline)]
            for fn, samples in sides if i % 2 == 0 else reversed(sides):
                for _ in range(args.requests):
                    samples.append(timed(fn))
    finally:
        gateway.close()
        direct.close()
    return Result(
        name="HTTP invoke via gateway",
        what=f"GET /?name=World with Host: {FUNCTION}.localhost on one keep-alive connection "
        f"to 127.0.0.1:<gateway>, per request",
        subject=Summary.of(subject),
        baseline_name="instance socket",
        baseline=Summary.of(baseline),
        notes=["baseline: the same request, with the headers the gateway adds, sent straight "
               "to the instance's invoke.sock on one keep-alive connection"],
    )


# 3. `lambdactl invoke` (a fresh Python process per call) against a gRPC call from here.

def bench_invoke(daemon: BenchDaemon, args: argparse.Namespace) -> Result:
    command = [executable("lambdactl"), "invoke", FUNCTION, "--data", PAYLOAD.decode()]
    env = daemon.env()

    def cli_invoke() -> None:
        proc = run(command, env=env, timeout=60)
        if EXPECTED not in proc.stdout:
            raise BenchError(f"lambdactl invoke printed {proc.stdout[:200]!r}")

    channel = grpc.insecure_channel(daemon.grpc_target, options=GRPC_OPTIONS)
    stub = functions_pb2_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]
    request = functions_pb2.InvokeRequest(name=FUNCTION, payload=PAYLOAD)

    def grpc_invoke() -> None:
        reply = stub.Invoke(request, timeout=30)
        if reply.status_code != 200 or EXPECTED not in reply.payload:
            raise BenchError(f"Invoke answered {reply.status_code}: {reply.payload[:200]!r}")

    subject: list[int] = []
    baseline: list[int] = []
    try:
        cli_invoke()  # warm-up: page cache for the interpreter and lambdactl's imports
        for _ in range(20):
            grpc_invoke()
        for i in rounds(args.rounds, args.budget):
            if i % 2:
                subject.append(timed(cli_invoke))
            for _ in range(args.requests):
                baseline.append(timed(grpc_invoke))
            if i % 2 == 0:
                subject.append(timed(cli_invoke))
    finally:
        channel.close()
    return Result(
        name="lambdactl invoke",
        what=f"wall time of `lambdactl invoke {FUNCTION} --data '{PAYLOAD.decode()}'` "
        "(includes Python start-up and imports)",
        subject=Summary.of(subject),
        baseline_name="gRPC Invoke",
        baseline=Summary.of(baseline),
        notes=["baseline: FunctionService.Invoke from the bench process over the daemon's "
               "Unix socket, on one open channel"],
    )


# Main

def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["docker_server"] = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=ROOT, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10, cwd=ROOT, check=False).stdout.strip()
        info["git"] = commit + ("-dirty" if dirty else "")
    return info


def reproduce(args: argparse.Namespace) -> str:
    only = "" if len(args.only) == len(GROUPS) else f" --only {','.join(args.only)}"
    return (f".venv/bin/python bench/run.py --rounds {args.rounds} --requests {args.requests} "
            f"--deploys {args.deploys} --budget {args.budget:g} --duration {args.duration:g} "
            f"--warmup {args.warmup:g} --cold-rounds {args.cold_rounds} "
            f"--cold-ref-rounds {args.cold_ref_rounds} --burst {args.burst} "
            f"--cell-pool-size {args.cell_pool_size} --pause-after {args.pause_after:g} "
            f"--async-events {args.async_events} --async-threads {args.async_threads} "
            f"--cron-window {args.cron_window:g} --apps-rounds {args.apps_rounds}{only}")


def preflight() -> None:
    if not SOURCE.is_dir():
        raise BenchError(f"{SOURCE} is missing")
    if shutil.which("docker") is None:
        raise BenchError("the docker CLI is not on PATH")
    probe = subprocess.run(["docker", "image", "inspect", RUNTIME_IMAGE], capture_output=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        raise BenchError(f"image {RUNTIME_IMAGE} is missing: run `make runtime-image`")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that clean up


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        preflight()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    # The async group enqueues --async-events events to one function at once: more than the
    # default cap of queued events per function, which would refuse the rest.
    try:
        wheelhouse = public_wheelhouse() if {"deps", "apps"} & set(args.only) else None
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    daemon = BenchDaemon(extra_args=["--cell-pool-size", str(args.cell_pool_size),
                                     "--pause-after", f"{args.pause_after:g}",
                                     # the cold group waits for scale to zero, then starts cold:
                                     # an instance past its idle timeout stops, not frozen
                                     "--freeze-window", "0",
                                     "--max-queued-events", str(max(1000, args.async_events)),
                                     *(["--wheelhouse", str(wheelhouse)] if wheelhouse else [])])
    results: list[Result] = []
    load = LoadReport()
    outside = OutsideReport()
    asyncs = AsyncReport()
    colds = ColdReport()
    apps = AppsReport()
    cluster = ClusterReport()
    failed: str | None = None
    titles = {
        "deploy": "deploy with a warm build cache",
        "deps": "deploy apps with requirements.txt: build cache vs pip",
        "http": "HTTP invoke through the gateway",
        "invoke": "lambdactl invoke vs gRPC",
        "warm": "warm load: gateway vs instance socket, 1 and 32 clients",
        "cold": "cold starts: stem cell, new container, unpause, burst, idle memory",
        "peer": "peer: functions-framework under the same load",
        "outside": "outside generator (wrk): gateway vs functions-framework, 1 and 32 "
                   "connections",
        "async": "async: event enqueue and delivery vs sync Invoke; cron lag vs asyncio timers",
        "apps": "apps (issue 17): fastapi-mangum and greet: from zero, scale-out, memory per "
                "worker, thaw, burst",
        "cluster": "cluster (issue 18): two nodes on PostgreSQL behind a TCP balancer vs one; "
                   "deploy on A -> first success on B; cron fire lag; async events/s two "
                   "consumers vs one",
    }
    try:
        print(f"bench: starting lambdad (state {daemon.state_dir}, images "
              f"{daemon.image_prefix}/*)", flush=True)
        daemon.start()
        print(f"bench: gateway on 127.0.0.1:{daemon.gateway_port}", flush=True)
        if "deploy" not in args.only and {"http", "invoke"} & set(args.only):
            run([executable("lambdactl"), "deploy", str(SOURCE), "--name", FUNCTION],
                env=daemon.env())
        for n, group in enumerate(args.only, 1):
            print(f"bench: {n}/{len(args.only)} {titles[group]}", flush=True)
            if group == "deploy":
                results.append(bench_deploy(daemon, args))
            elif group == "deps":
                results.extend(bench_deps(daemon, args))
            elif group == "http":
                results.append(bench_http(daemon, args))
            elif group == "invoke":
                results.append(bench_invoke(daemon, args))
            elif group == "warm":
                bench_warm(daemon, load, duration=args.duration, warmup=args.warmup)
            elif group == "cold":
                bench_cold(daemon, colds, rounds=args.cold_rounds,
                           ref_rounds=args.cold_ref_rounds, burst=args.burst,
                           pool_size=args.cell_pool_size, budget=args.budget)
                results.extend(colds.results)
            elif group == "peer":
                bench_peer(daemon, load, duration=args.duration, warmup=args.warmup)
            elif group == "outside":
                bench_outside(daemon, outside, duration=args.duration)
            elif group == "async":
                bench_async(daemon, asyncs, events=args.async_events,
                            threads=args.async_threads, budget=min(args.budget, 8.0),
                            drain_timeout=15.0, cron_window=args.cron_window)
                results.extend(asyncs.results)
            elif group == "apps":
                assert wheelhouse is not None
                bench_apps(apps, rounds=args.apps_rounds, burst=args.burst,
                           pool_size=args.cell_pool_size, wheelhouse=wheelhouse)
                results.extend(apps.results)
            elif group == "cluster":
                bench_cluster(cluster, duration=args.duration)
    except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError,
            grpc.RpcError, ValueError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if failed is not None or args.keep_log:
            log = daemon.log()
            if log:
                print("---- lambdad log (last 40 lines) ----", file=sys.stderr)
                print("\n".join(log.splitlines()[-40:]), file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
        removed = daemon.close()
        if wheelhouse is not None:
            shutil.rmtree(wheelhouse, ignore_errors=True)
        print(f"bench: lambdad stopped; removed {len(removed)} image(s)/container(s) and "
              f"{daemon.state_dir}", flush=True)
    elapsed = time.monotonic() - started
    if failed is not None:
        print(f"bench: FAILED: {failed}", file=sys.stderr)
        return 1

    if cluster.lines:
        print()
        print("cluster (issue 18; bench/cluster.py):")
        for line in cluster.lines:
            print(f"- {line}")
    if results:
        print()
        print(render_table(results))
        print()
        for result in results:
            print(f"- {result.name}: {result.what}")
            for note in result.notes:
                print(f"    {note}")
        print("ratio = median / baseline median (1.00x = no overhead over the baseline)")
    if load.rows:
        print()
        print(render_load_table(load.rows))
        print()
        print(f"- load: closed loop, N keep-alive clients, GET {'/?name=World'}; "
              f"{args.warmup:g} s warm-up, then a {args.duration:g} s window per row "
              "(bench/loadgen.py, its own process)")
        print("    floor: the same requests, with the headers the gateway adds, sent straight "
              "to the instance's invoke.sock (the same instance the gateway uses)")
        print("    gen CPU: the generator's CPU time over the window (100% = it would be "
              "the bottleneck)")
        for note in load.notes:
            print(f"    {note}")
    if outside.results:
        print()
        print(f"outside generator: {outside.generator}; keep-alive GET /?name=World, "
              "1 s warm-up, then the counted run; server CPU = its CPU over the run / requests")
        print(render_outside(outside.results))
    if colds.lines:
        print()
        print("cold starts:")
        for line in colds.lines:
            print(f"  {line}")
    if asyncs.lines:
        print()
        print("async:")
        for line in asyncs.lines:
            print(f"  {line}")
    if apps.lines:
        print()
        print("apps (issue 17):")
        for line in apps.lines:
            print(f"  {line}")
    verdicts = [*load.verdicts, *outside.verdicts, *colds.verdicts, *asyncs.verdicts,
                *apps.verdicts]
    if verdicts:
        print()
        print("targets (printed, never asserted):")
        for verdict in verdicts:
            print(f"  {verdict}")
    print(f"took {elapsed:.0f} s; reproduce with: make bench   (or: {reproduce(args)})")

    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": reproduce(args),
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "environment": environment(),
            "elapsed_s": round(elapsed, 1),
            "results": [r.as_json() for r in results],
            "load": [vars(r) for r in load.rows],
            "targets": verdicts,
            "figures": {**load.figures, **outside.figures, **colds.figures, **asyncs.figures,
                        **apps.figures},
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
