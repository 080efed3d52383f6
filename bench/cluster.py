"""The `cluster` group (issue 18): two lambdad nodes on one private PostgreSQL.

`bench/run.py --only cluster` (not part of the default run: it starts PostgreSQL and two
more daemons, about a minute). Ratios are taken within one run:

1. Proxied req/s: loadgen's closed loop through a small asyncio TCP balancer (this file's
   `balance` command, its own process, round-robin per connection) to two nodes' gateways,
   against the same balancer in front of one node. Each process's CPU seconds over the
   window (/proc) say where a 2-core machine's time went: two nodes compete for the same
   cores, so the ratio is bounded by the machine, not by lambdad.
2. Deploy on A -> first success on B: from `lambdactl deploy` returning through A to the
   first 200 from B's gateway (the announcement, B's fetch of the artifact, its cold start).
3. Cron fire lag across nodes: schedules created through B (the other node leads, or
   not: the announcement reaches the leader), firing every second; lag = the invocation
   row's created_at - its tick, p50/p99.
4. Async events/s two consumers vs one: needs the cluster queue (issue 18, P5).

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
from dataclasses import dataclass, field
from pathlib import Path

from harness import ROOT, BenchDaemon, executable, free_port
from loadgen import measure, proc_cpu_s
from stats import percentile

FUNCTION = "bench-cluster"
SOURCE = ROOT / "functions" / "greet"
CONNECTIONS = 32


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
        "--advertise-address", f"127.0.0.1:{grpc_port}", "--freeze-window", "0"])


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


def _proxied(nodes: list[BenchDaemon], pids: list[int], duration: float) -> dict[str, float]:
    """req/s through the balancer to `nodes`, and each process's CPU seconds."""
    with balancer([n.gateway_port for n in nodes]) as (port, balancer_pid):
        watched = {**{f"node{i}": pid for i, pid in enumerate(pids)}, "balancer": balancer_pid}
        before = {k: proc_cpu_s(pid) or 0.0 for k, pid in watched.items()}
        result = measure(tcp_port=port, host_header=f"{FUNCTION}.localhost",
                         path="/?name=World", connections=CONNECTIONS, duration=duration,
                         warmup=1.0)
        after = {k: proc_cpu_s(pid) or 0.0 for k, pid in watched.items()}
    figures = {"rps": result.rps, "p99_ms": result.p99_ms, "errors": float(result.errors),
               "loadgen_cpu_pct": result.cpu_pct}
    # (the CPU deltas span the warm-up too: compare them as shares, not per request)
    figures.update({f"cpu_{k}_s": after[k] - before[k] for k in watched})
    return figures


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
        # as the warm group: one instance per node taking 32 at once (CPU-bound, not
        # bounded by instance slots)
        _lambdactl(a, "deploy", str(SOURCE), "--name", FUNCTION, "--concurrency", "32",
                   "--max-instances", "1")
        deployed = time.monotonic()
        while _get(b) != 200:
            if time.monotonic() - deployed > 60:
                raise RuntimeError("B never served the function deployed on A")
            time.sleep(0.02)
        first_on_b = time.monotonic() - deployed
        report.figures["deploy_a_to_first_success_b_s"] = first_on_b
        report.add(f"deploy on A -> first success on B: {first_on_b:.2f} s "
                   "(announcement + artifact fetch + cold start)")
        for _ in range(20):  # both warm
            _get(a), _get(b)

        # 1. proxied req/s: two nodes vs one, same balancer
        pids = [n.process.pid for n in nodes if n.process is not None]
        one = _proxied([a], pids[:1], duration)
        two = _proxied([a, b], pids, duration)
        report.figures.update({f"one_{k}": v for k, v in one.items()})
        report.figures.update({f"two_{k}": v for k, v in two.items()})
        report.add(f"proxied req/s, {CONNECTIONS} connections: one node {one['rps']:.0f} "
                   f"(p99 {one['p99_ms']:.1f} ms), two nodes {two['rps']:.0f} "
                   f"(p99 {two['p99_ms']:.1f} ms): ratio {two['rps'] / one['rps']:.2f}x")
        report.add("  CPU s over the run (warm-up + window): one node: node A "
                   f"{one['cpu_node0_s']:.2f}, balancer {one['cpu_balancer_s']:.2f}, "
                   f"loadgen {one['loadgen_cpu_pct']:.0f}%; two nodes: A "
                   f"{two['cpu_node0_s']:.2f}, B {two['cpu_node1_s']:.2f}, balancer "
                   f"{two['cpu_balancer_s']:.2f}, loadgen {two['loadgen_cpu_pct']:.0f}%")

        # 3. cron fire lag across nodes (schedules made through B)
        for _ in range(10):
            _lambdactl(b, "schedule", FUNCTION, "--cron", "* * * * * *", "--overlap", "allow")
        start = time.time()
        time.sleep(12)
        rows = postgres.psql(postgres_db(url), (
            "SELECT i.created_at - f.tick FROM schedule_fires f JOIN invocations i "
            f"ON i.id = f.invocation WHERE f.tick > {start + 1:.0f}"))
        lags = sorted(float(x) * 1000 for x in rows.split())
        if not lags:
            raise RuntimeError("no schedule fired")
        p50, p99 = percentile(lags, 50), percentile(lags, 99)
        nodes_fired = postgres.psql(postgres_db(url), "SELECT count(DISTINCT node) FROM "
                                    "schedule_fires").strip()
        report.figures.update({"cron_lag_p50_ms": p50, "cron_lag_p99_ms": p99,
                               "cron_fires": float(len(lags))})
        report.add(f"cron fire lag ({len(lags)} fires, 10 schedules made through B, fired "
                   f"by {nodes_fired} node): p50 {p50:.1f} ms, p99 {p99:.1f} ms")

        # 4. async events/s across consumers
        report.add("async events/s two consumers vs one: needs P5 (the cluster queue)")
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
