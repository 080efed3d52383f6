"""The `cluster` group (issue 18): two lambdad nodes on one private PostgreSQL.

`bench/run.py --only cluster` (not part of the default run: it starts PostgreSQL and two
more daemons, about a minute). Ratios are taken within one run:

1. Proxied req/s: loadgen's closed loop through a small asyncio TCP balancer (this file's
   `balance` command, its own process, round-robin per connection) to two nodes' gateways,
   against the same balancer in front of one node. The function is deployed with
   max_instances = 2 (a cluster-wide limit: one instance per node) and each node is
   warmed through its own gateway, so each serves from an instance of its own. Each
   process's CPU seconds over the window (/proc for lambdad A, B and the balancer, cpuacct
   for each node's containers) say where a 2-core machine's time went: two nodes compete
   for the same cores, so the ratio is bounded by the machine, not by lambdad.
2. Deploy on A -> first success on B: from `lambdactl deploy` returning through A to the
   first 200 from B's gateway (the announcement, B's fetch of the artifact, its cold start).
3. Cron fire lag across nodes: schedules created through B (the other node leads, or
   not: the announcement reaches the leader), firing every second; lag = the invocation
   row's created_at - its tick, p50/p99.
4. Async events/s, two consumers vs one: EVENTS events, with both nodes consuming
   (competing consumers), then with B stopped (A alone); events/s = EVENTS / (first
   enqueue -> no event of the batch queued or running). Twice each: queued ahead (rows
   written queued in one transaction, then a NOTIFY lambda_queue: the consumers' drain
   alone), and queued through A's control socket (Invoke EVENT, a few threads) during the
   drain (the system's rate, the enqueue included).

Everything listens on loopback; PostgreSQL only on a Unix socket (tests/support/postgres.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from harness import ROOT, BenchDaemon, executable, free_port
from load import _container_cpu_s
from loadgen import measure, proc_cpu_s
from stats import percentile

if TYPE_CHECKING:
    from tests.support.postgres import Postgres

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc

FUNCTION = "bench-cluster"
SOURCE = ROOT / "functions" / "greet"
CONNECTIONS = 32
EVENTS = 2000
ENQUEUE_THREADS = 8


@dataclass
class ClusterReport:
    lines: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(f"bench: cluster: {line}", flush=True)


# --- the balancer (its own process) ---

async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _balance(listen: int, targets: list[int]) -> None:
    turn = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal turn
        port = targets[turn % len(targets)]
        turn += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


@contextlib.contextmanager
def balancer(targets: list[int]):  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "balance", "--listen", str(port),
         "--to", ",".join(map(str, targets))], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the balancer did not start")
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


# --- the nodes ---

def _node(url: str, key_file: Path, name: str) -> BenchDaemon:
    grpc_port = free_port()
    return BenchDaemon(extra_args=[
        "--database", url, "--node-name", name, "--node-down-after", "3",
        "--cluster-key-file", str(key_file), "--grpc-listen", f"127.0.0.1:{grpc_port}",
        "--advertise-address", f"127.0.0.1:{grpc_port}", "--freeze-window", "0",
        "--max-queued-events", str(2 * EVENTS)])


def _get(node: BenchDaemon, path: str = "/?name=World") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", node.gateway_port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": f"{FUNCTION}.localhost"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return -1
    finally:
        conn.close()


def _lambdactl(node: BenchDaemon, *args: str) -> str:
    result = subprocess.run([executable("lambdactl"), *args], env=node.env(),
                            capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"lambdactl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def _containers_cpu_s(node: BenchDaemon) -> float:
    """CPU seconds the node's running containers of FUNCTION used so far (cpuacct)."""
    return sum(_container_cpu_s(c["Id"]) or 0.0
               for c in node.function_containers(FUNCTION, running=True))


def _proxied(nodes: list[BenchDaemon], everyone: list[BenchDaemon],
             duration: float) -> dict[str, float]:
    """req/s through the balancer to `nodes`, and each process's CPU seconds (lambdad and
    containers of every node in `everyone`, so an idle node's share shows too)."""
    with balancer([n.gateway_port for n in nodes]) as (port, balancer_pid):
        pids = {f"node{i}": n.process.pid for i, n in enumerate(everyone)
                if n.process is not None}

        def sample() -> dict[str, float]:
            cpu = {k: proc_cpu_s(pid) or 0.0 for k, pid in {
                **pids, "balancer": balancer_pid}.items()}
            cpu.update({f"containers{i}": _containers_cpu_s(n) for i, n in enumerate(everyone)})
            return cpu

        before = sample()
        result = measure(tcp_port=port, host_header=f"{FUNCTION}.localhost",
                         path="/?name=World", connections=CONNECTIONS, duration=duration,
                         warmup=1.0)
        after = sample()
    figures = {"rps": result.rps, "p99_ms": result.p99_ms, "errors": float(result.errors),
               "loadgen_cpu_pct": result.cpu_pct}
    # (the CPU deltas span the warm-up too: compare them as shares, not per request)
    figures.update({f"cpu_{k}_s": after[k] - before[k] for k in after})
    return figures


def _cpu_line(figures: dict[str, float], count: int) -> str:
    parts = []
    for i, name in enumerate("AB"[:count]):
        parts.append(f"lambdad {name} {figures[f'cpu_node{i}_s']:.2f}, containers {name} "
                     f"{figures[f'cpu_containers{i}_s']:.2f}")
    return (", ".join(parts) + f", balancer {figures['cpu_balancer_s']:.2f}, "
            f"loadgen {figures['loadgen_cpu_pct']:.0f}%")


def _events(postgres: Postgres, db: str, a: BenchDaemon, tag: str, *, ahead: bool
            ) -> tuple[dict[str, float], str]:
    """EVENTS events: queued through A's control socket while the nodes consume (`ahead`
    False), or written queued in one transaction before anyone takes them (`ahead` True:
    the consumers' drain alone, woken by a NOTIFY lambda_queue as any node's is); seconds
    from the first enqueue (the commit) until none is queued or running, and how many
    each node delivered."""
    payload = json.dumps({"name": tag})
    batch = f"convert_from(payload, 'UTF8')::json->>'name' = '{tag}'"
    sql = postgres.psql
    enqueued = 0.0
    if ahead:
        sql(db, "INSERT INTO invocations (id, function, payload, source, status, attempts, "
                "created_at, next_attempt_at) SELECT md5(random()::text || g::text), "
                f"'{FUNCTION}', convert_to('{payload}', 'UTF8'), 'bench', 'queued', 0, "
                "extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp()) "
                f"FROM generate_series(1, {EVENTS}) g")
        start = time.monotonic()
        sql(db, "SELECT pg_notify('lambda_queue', 'bench')")
    else:
        channel = grpc.insecure_channel(a.grpc_target)
        stub = functions_pb2_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.InvokeRequest(name=FUNCTION, payload=payload.encode(),
                                   type=pb.INVOCATION_TYPE_EVENT)
        left = list(range(EVENTS))

        def enqueue() -> None:
            while True:
                try:
                    left.pop()
                except IndexError:
                    return
                reply = stub.Invoke(request, timeout=30)
                if reply.status_code != 202:
                    raise RuntimeError(f"Invoke(EVENT) answered {reply.status_code}")

        start = time.monotonic()
        with ThreadPoolExecutor(ENQUEUE_THREADS) as pool:
            for future in [pool.submit(enqueue) for _ in range(ENQUEUE_THREADS)]:
                future.result()
        enqueued = time.monotonic() - start
        channel.close()
    while int(sql(db, f"SELECT count(*) FROM invocations WHERE {batch} "
                      "AND status IN ('queued', 'running')")):
        if time.monotonic() - start > 300:
            raise RuntimeError(f"the {tag} events were not all delivered within 300 s")
        time.sleep(0.02)
    drained = time.monotonic() - start
    split = sql(db, f"SELECT coalesce(n.name, '?') || '=' || count(*) FROM invocations i "
                    f"LEFT JOIN nodes n ON n.id = i.owner_node WHERE {batch} "
                    "AND i.status = 'succeeded' GROUP BY coalesce(n.name, '?') ORDER BY 1")
    succeeded = sum(int(line.split("=")[1]) for line in split.split() if "=" in line)
    if succeeded != EVENTS:
        raise RuntimeError(f"{succeeded} of the {EVENTS} {tag} events succeeded")
    return ({"eps": EVENTS / drained, "seconds": drained, "enqueue_s": enqueued},
            split.replace("\n", " "))


def bench_cluster(report: ClusterReport, *, duration: float = 5.0) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.support.postgres import Postgres

    postgres = Postgres()
    folder = Path(tempfile.mkdtemp(prefix="lbk-", dir="/tmp"))
    key_file = folder / "cluster-key"
    key_file.write_text(secrets.token_urlsafe(32) + "\n")
    nodes: list[BenchDaemon] = []
    try:
        postgres.start()
        url = postgres.url(postgres.create_database())
        nodes = [_node(url, key_file, "a"), _node(url, key_file, "b")]
        for node in nodes:
            node.start(timeout=60)
        a, b = nodes

        # 2. deploy on A -> first success on B
        # max_instances is cluster-wide: one instance per node, each taking 32 at once
        # (CPU-bound, not bounded by instance slots)
        _lambdactl(a, "deploy", str(SOURCE), "--name", FUNCTION, "--concurrency", "32",
                   "--max-instances", str(len(nodes)))
        deployed = time.monotonic()
        while _get(b) != 200:
            if time.monotonic() - deployed > 60:
                raise RuntimeError("B never served the function deployed on A")
            time.sleep(0.02)
        first_on_b = time.monotonic() - deployed
        report.figures["deploy_a_to_first_success_b_s"] = first_on_b
        report.add(f"deploy on A -> first success on B: {first_on_b:.2f} s "
                   "(announcement + artifact fetch + cold start)")
        for _ in range(20):  # each node warm, through its own gateway
            _get(a), _get(b)
        per_node = [len(n.function_containers(FUNCTION, running=True)) for n in nodes]
        if 0 in per_node:
            raise RuntimeError(f"a node has no instance of its own: {per_node}")
        report.add(f"instances per node before the load: A {per_node[0]}, B {per_node[1]} "
                   f"(max_instances {len(nodes)} across the cluster)")

        # 1. proxied req/s: two nodes vs one, same balancer
        one = _proxied([a], nodes, duration)
        two = _proxied([a, b], nodes, duration)
        report.figures.update({f"one_{k}": v for k, v in one.items()})
        report.figures.update({f"two_{k}": v for k, v in two.items()})
        report.add(f"proxied req/s, {CONNECTIONS} connections: one node {one['rps']:.0f} "
                   f"(p99 {one['p99_ms']:.1f} ms), two nodes {two['rps']:.0f} "
                   f"(p99 {two['p99_ms']:.1f} ms): ratio {two['rps'] / one['rps']:.2f}x")
        report.add(f"  CPU s over the run (warm-up + window), one node: {_cpu_line(one, 2)}")
        report.add(f"  two nodes: {_cpu_line(two, 2)}")

        # 3. cron fire lag across nodes (schedules made through B)
        db = postgres_db(url)
        made = [_lambdactl(b, "schedule", FUNCTION, "--cron", "* * * * * *", "--overlap",
                           "allow") for _ in range(10)]
        start = time.time()
        time.sleep(12)
        rows = postgres.psql(db, (
            "SELECT i.created_at - f.tick FROM schedule_fires f JOIN invocations i "
            f"ON i.id = f.invocation WHERE f.tick > {start + 1:.0f}"))
        lags = sorted(float(x) * 1000 for x in rows.split())
        if not lags:
            raise RuntimeError("no schedule fired")
        p50, p99 = percentile(lags, 50), percentile(lags, 99)
        nodes_fired = postgres.psql(db, "SELECT count(DISTINCT node) FROM "
                                    "schedule_fires").strip()
        for schedule_id in made:  # (their fire rows go with them; they would disturb the
            _lambdactl(a, "unschedule", schedule_id)  # async figure)
        report.figures.update({"cron_lag_p50_ms": p50, "cron_lag_p99_ms": p99,
                               "cron_fires": float(len(lags))})
        report.add(f"cron fire lag ({len(lags)} fires, 10 schedules made through B, fired "
                   f"by {nodes_fired} node): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        time.sleep(2)  # the last fires delivered

        # 4. async events/s: two consumers (A and B), then A alone (B stopped cleanly);
        # queued ahead (the consumers alone), then queued through A during the drain
        runs: dict[str, tuple[dict[str, float], str]] = {}
        for ahead in (True, False):
            runs[f"two_{'ahead' if ahead else 'enqueued'}"] = _events(
                postgres, db, a, f"two-{ahead}", ahead=ahead)
        b.stop()
        for ahead in (True, False):
            runs[f"one_{'ahead' if ahead else 'enqueued'}"] = _events(
                postgres, db, a, f"one-{ahead}", ahead=ahead)
        for key, (figures, _) in runs.items():
            report.figures.update({f"async_{key}_{k}": v for k, v in figures.items()})
        for how, what in (("ahead", "queued ahead in one transaction: the drain alone"),
                          ("enqueued", f"queued through A by {ENQUEUE_THREADS} threads "
                                       "during the drain")):
            (two, split), (one, _) = runs[f"two_{how}"], runs[f"one_{how}"]
            report.add(f"async events/s, {EVENTS} events {what}: two consumers "
                       f"{two['eps']:.0f} ({two['seconds']:.2f} s; delivered by {split}), "
                       f"one consumer {one['eps']:.0f} ({one['seconds']:.2f} s): ratio "
                       f"{two['eps'] / one['eps']:.2f}x")
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.close()
        with contextlib.suppress(Exception):
            postgres.stop()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def postgres_db(url: str) -> str:
    """The database name of a tests/support/postgres.py URL."""
    return url.split("/")[-1].split("?")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/cluster.py")
    sub = parser.add_subparsers(dest="command", required=True)
    balance = sub.add_parser("balance", help="a round-robin TCP balancer on loopback")
    balance.add_argument("--listen", type=int, required=True)
    balance.add_argument("--to", required=True, help="comma-separated loopback ports")
    sub.add_parser("run", help="the cluster benchmark alone")
    args = parser.parse_args(argv)
    if args.command == "balance":
        asyncio.run(_balance(args.listen, [int(p) for p in args.to.split(",")]))
        return 0
    report = ClusterReport()
    bench_cluster(report)
    print(json.dumps(report.figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
