"""The instance hop alone: lambdad's CPU per request for the HTTP/1.1 exchange with an
instance's Unix socket, the h11 hop of `main` at ff364ce against the current one.

Noise-resistant on a shared machine: the "instance" is a canned asyncio server in its own
process, the client side runs in this process, and what is counted is this process's CPU
seconds (`time.process_time`) per request, in alternating rounds. Covers what
`runtime/upstream.py` (and `hop.py`) do per request: encode, write, parse the answer, hand
the body over, recycle the connection. Not the gateway, the pool or the log capture.

    .venv/bin/python bench/hopbench.py [--requests 5000] [--rounds 3] [--old-commit ff364ce]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdad.runtime import upstream as new_upstream  # noqa: E402
from lambdad.runtime.hop import encode_request  # noqa: E402

# What the gateway forwards for `GET /?name=World` from the load generator, and roughly what
# the Python runtime answers.
HEADERS = [(b"host", b"perf.localhost"), (b"user-agent", b"loadgen"), (b"accept", b"*/*"),
           (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-proto", b"http"),
           (b"x-forwarded-host", b"perf.localhost")]
LAMBDA = [(b"lambda-request-id", b"0b7e4b9e-8d43-4a0a-9c59-2f1c0d6f4e11"),
          (b"lambda-deadline-ms", b"1795000000000"), (b"lambda-invocation-type", b"http")]
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"lambda-function-ms: 0.21\r\ncontent-length: 20\r\n\r\n"
            b'{"message": "Hello"}')


def serve(path: str) -> None:
    """The canned instance: one answer per request head, keep-alive."""

    class Canned(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                self.buffer = self.buffer[end + 4:]
                self.transport.write(RESPONSE)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_unix_server(Canned, path)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def load_old(commit: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:lambdad/runtime/upstream.py"],
                            cwd=ROOT, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp(prefix="hopbench-")) / "old_upstream.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_upstream", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_old(old: ModuleType, path: str, requests: int, clients: int) -> float:
    loop = asyncio.get_running_loop()

    async def client(n: int) -> None:
        _, protocol = await loop.create_unix_connection(old._Protocol, path)
        conn = old.UpstreamConnection(protocol)
        for _ in range(n):
            # what forward.py did per request: timeout contexts around the head and the body
            async with asyncio.timeout_at(loop.time() + 30):
                await conn.request(b"GET", b"/?name=World", [*HEADERS, *LAMBDA], b"")
            async with asyncio.timeout_at(loop.time() + 30):
                b"".join([chunk async for chunk in conn.body()])
            assert conn.recycle()
        conn.close()

    return await _timed(client, requests, clients)


async def run_new(path: str, requests: int, clients: int) -> float:
    loop = asyncio.get_running_loop()
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in LAMBDA)

    async def client(n: int) -> None:
        _, conn = await loop.create_unix_connection(new_upstream.UpstreamConnection, path)
        for _ in range(n):
            payload = encode_request(b"GET", b"/?name=World", HEADERS, lines, b"", b"x.lambda")
            await conn.request(payload, head_only=False, deadline=loop.time() + 30)
            assert conn.reader.complete
            conn.reader.take_body()
            assert conn.recycle()
        conn.close()

    return await _timed(client, requests, clients)


async def _timed(client: Any, requests: int, clients: int) -> float:
    per = requests // clients
    await asyncio.gather(*(client(10) for _ in range(clients)))  # warm-up, connections
    started = time.process_time()
    await asyncio.gather(*(client(per) for _ in range(clients)))
    return (time.process_time() - started) / (per * clients) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-commit", default="ff364ce")
    args = parser.parse_args()
    old = load_old(args.old_commit)
    folder = tempfile.mkdtemp(prefix="hopbench-")
    path = f"{folder}/invoke.sock"
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(path,),
                                                          daemon=True)
    server.start()
    try:
        while not Path(path).exists():
            time.sleep(0.01)
        print("client CPU per request on the hop (us), alternating rounds:")
        for clients in (1, 32):
            old_us, new_us = [], []
            for _ in range(args.rounds):
                old_us.append(asyncio.run(run_old(old, path, args.requests, clients)))
                new_us.append(asyncio.run(run_new(path, args.requests, clients)))
            print(f"  {clients:2d} connection(s): h11 hop {_fmt(old_us)}   "
                  f"httptools hop {_fmt(new_us)}   "
                  f"ratio {min(new_us) / min(old_us):.2f} (best of each)")
    finally:
        server.kill()


def _fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    main()
