"""CPU per request of the gateway's own share: the client side and the invocation's
bookkeeping, without the instance hop or the log capture.

    .venv/bin/python bench/gatewaycpu.py --rounds 3 --duration 3

Starts, in a child process, the real `Gateway` with the real `control.invoke.Invoker` and
`Metrics` (labels, per-minute stats), in front of an in-memory runtime that answers every
request at once with the headers and body `functions/greet` answers with (no socket, no
container, no logs). `bench/loadgen.py` (its own process) then loads it at 1 and 32
connections, alternately, and reads the child's CPU time over each window: what is left is
what `gateway/`, h11 on the client side, asyncio's client-side plumbing and
`control/invoke.py` + metrics cost per request. The whole daemon's figure is the warm
group's (`bench/run.py --only warm`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = b'{"message": "Hello, World!"}'


async def _serve() -> None:
    sys.path.insert(0, str(ROOT))
    from lambdad.control.invoke import Invoker
    from lambdad.gateway import Gateway
    from lambdad.metrics import Metrics
    from lambdad.runtime.invocation import InvocationRequest, InvocationResponse

    async def body() -> AsyncIterator[bytes]:
        yield BODY

    class Instance:
        """Answers like a warm instance of functions/greet, without one."""

        async def invoke(self, request: InvocationRequest) -> InvocationResponse:
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(BODY)).encode()),
                       (b"lambda-function-ms", b"0.05")]
            response = InvocationResponse(200, headers, 1, False, body(), function_ms=0.05)
            if hasattr(response, "content"):  # the hop hands a body that came whole as bytes
                response.content = BODY
            return response

    gateway = Gateway(Invoker(Instance(), Metrics()))  # type: ignore[arg-type]
    await gateway.start("127.0.0.1", 0)
    print(gateway.port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gateway.stop(1.0)


def _load(port: int, pid: int, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), "run", "--tcp", str(port),
         "--host-header", "bench.localhost", "--path", "/?name=World", "-c", str(connections),
         "--duration", str(duration), "--cpu-pid", str(pid), "--json"],
        check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gatewaycpu.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        per: dict[int, list[float]] = {1: [], 32: []}
        for _ in range(args.rounds):
            for connections in (1, 32):
                r = _load(port, child.pid, connections, args.duration)
                us = r["pid_cpu_s"] / r["requests"] * 1e6 if r["requests"] else float("nan")
                per[connections].append(us)
                print(f"{connections:3} conn: {r['rps']:8,.0f} req/s  p50 {r['p50_ms']:.3f} ms"
                      f"  p99 {r['p99_ms']:.3f} ms  gateway CPU {us:6.0f} us/request",
                      flush=True)
        for connections, values in per.items():
            print(f"median, {connections} conn: {statistics.median(values):.0f} us/request "
                  f"({', '.join(f'{v:.0f}' for v in values)})")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
