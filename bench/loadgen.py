"""A small closed-loop HTTP/1.1 load generator, and the canned server that measures its ceiling.

    python bench/loadgen.py run --tcp 8080 --host-header greet.localhost -c 32 --duration 3
    python bench/loadgen.py run --unix /path/invoke.sock -c 1 --requests 1000 --json
    python bench/loadgen.py serve --tcp 9000          # canned 200 responses, for the ceiling

`run` opens N keep-alive connections (to 127.0.0.1:PORT or to a Unix socket), sends one
request on each and a new one as soon as the previous response is complete (closed loop),
for a warm-up and then a fixed duration or request count. It is one thread on raw
non-blocking sockets and epoll: requests are pre-encoded bytes, responses are framed by their
status line and Content-Length only (every response of our stack carries one). Each response
completed in the measuring window adds its latency (perf_counter_ns, from the request's send
to the last byte) to the samples; requests/s = completed responses / window. The process's own
CPU time over the window is reported too: near 100% would mean the generator is the
bottleneck. With `--cpu-pid PID` it also reads that process's CPU time (utime + stime of all
its threads, /proc/PID/stat) at the window's start and end, so a server's CPU per request is
`pid_cpu_s / requests` over exactly the requests counted.

bench/run.py runs this module as a separate process (`measure`, `canned_server`), so the
generator does not share an interpreter or event loop with the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
READ_SIZE = 64 * 1024
DRAIN_S = 5.0  # after the window, in-flight responses get this long before we close


@dataclass(frozen=True)
class LoadResult:
    """One run of the generator against one target."""

    connections: int
    requests: int  # responses completed inside the measuring window
    errors: int  # non-2xx responses and broken connections, whole run
    window_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_pct: float  # the generator's CPU time / window wall time
    pid_cpu_s: float | None = None  # CPU seconds of --cpu-pid over the window, if asked

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def pid_cpu_us_per_request(self) -> float | None:
        """The watched process's CPU microseconds per request completed in the window."""
        if self.pid_cpu_s is None or not self.requests:
            return None
        return self.pid_cpu_s / self.requests * 1e6


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat fields 14
    and 15; the command name in field 2 may hold spaces, so split after its ')')."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: list[int], pct: float) -> int:
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class _Request:
    """Pre-encoded request bytes; optionally a header whose value is unique per request."""

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]],
                 unique_header: str | None) -> None:
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        self._counter = 0
        if unique_header is None:
            self._fixed: bytes | None = (head + "\r\n").encode("latin-1")
            self._prefix = b""
        else:
            self._fixed = None
            token = secrets.token_hex(12)  # 24 hex + "-" + 11 digits: as long as a UUID
            self._prefix = f"{head}{unique_header}: {token}-".encode("latin-1")

    def next(self) -> bytes:
        if self._fixed is not None:
            return self._fixed
        self._counter += 1
        return b"%s%011d\r\n\r\n" % (self._prefix, self._counter)


class _Conn:
    __slots__ = ("buf", "need", "sock", "started", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.need = -1  # total bytes of the current response, once its head is in
        self.status = 0
        self.started = 0


def _connect(tcp_port: int | None, unix_path: str | None) -> socket.socket:
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(unix_path)
    else:
        assert tcp_port is not None
        sock = socket.create_connection(("127.0.0.1", tcp_port))  # loopback only, always
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _send(sock: socket.socket, data: bytes) -> None:
    sent = sock.send(data)
    if sent < len(data):  # never with small requests on an idle socket; be correct anyway
        sock.setblocking(True)
        try:
            sock.sendall(data[sent:])
        finally:
            sock.setblocking(False)


def _content_length(head: bytes | bytearray) -> int:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"response without Content-Length: {bytes(head[:200])!r}")
    start = at + 17
    end = lowered.find(b"\r\n", start)
    return int(lowered[start:] if end < 0 else lowered[start:end])


def generate(*, tcp_port: int | None, unix_path: str | None, connections: int,
             request: _Request, duration: float | None, count: int | None,
             warmup: float, cpu_pid: int | None = None) -> LoadResult:
    """The closed loop itself (runs in this process)."""
    poller = select.epoll()
    conns: dict[int, _Conn] = {}
    latencies = array("q")
    errors = 0
    now = time.perf_counter_ns

    def open_conn() -> None:
        conn = _Conn(_connect(tcp_port, unix_path))
        conns[conn.sock.fileno()] = conn
        poller.register(conn.sock.fileno(), select.EPOLLIN)
        conn.started = now()
        _send(conn.sock, request.next())

    def drop(fd: int) -> None:
        conn = conns.pop(fd)
        poller.unregister(fd)
        conn.sock.close()

    for _ in range(connections):
        open_conn()
    t0 = now()
    measure_from = t0 + int(warmup * 1e9)
    measure_until = measure_from + int(duration * 1e9) if duration is not None else None
    cpu_start: float | None = None
    pid_cpu_start: float | None = None
    pid_cpu_stop: float | None = None
    measuring = False
    stopping = False
    stop_at_ns = 0
    in_flight = connections
    while in_flight:
        events = poller.poll(1.0)
        t = now()
        if not measuring and t >= measure_from:
            measuring = True
            cpu_start = time.process_time()
            if cpu_pid is not None:
                pid_cpu_start = proc_cpu_s(cpu_pid)
            measure_from = t
        if (measuring and not stopping and
                ((measure_until is not None and t >= measure_until)
                 or (count is not None and len(latencies) >= count))):
            stopping = True
            stop_at_ns = t
            if cpu_pid is not None:
                pid_cpu_stop = proc_cpu_s(cpu_pid)
        if stopping and t - stop_at_ns > DRAIN_S * 1e9:
            break
        for fd, _ in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                errors += 1
                drop(fd)
                in_flight -= 1
                if not stopping:
                    open_conn()
                    in_flight += 1
                continue
            buf = conn.buf
            buf += data
            if conn.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                conn.status = int(buf[9:12])
                conn.need = end + 4 + _content_length(buf[:end])
            if len(buf) < conn.need:
                continue
            done = now()
            if conn.status >= 300:
                errors += 1
            elif measuring and not stopping:
                latencies.append(done - conn.started)
            del buf[:conn.need]
            conn.need = -1
            if stopping:
                in_flight -= 1
                continue
            conn.started = now()
            _send(conn.sock, request.next())
    window_ns = (stop_at_ns or now()) - measure_from
    cpu = time.process_time() - (cpu_start if cpu_start is not None else 0.0)
    for fd in list(conns):
        drop(fd)
    poller.close()
    samples = sorted(latencies)
    if not samples:
        raise RuntimeError(f"no response completed in the window ({errors} errors)")
    window_s = window_ns / 1e9
    pid_cpu = None
    if pid_cpu_start is not None and pid_cpu_stop is not None:
        pid_cpu = round(pid_cpu_stop - pid_cpu_start, 4)
    return LoadResult(
        connections=connections, requests=len(samples), errors=errors,
        window_s=round(window_s, 3), rps=len(samples) / window_s,
        p50_ms=_percentile(samples, 50) / 1e6, p99_ms=_percentile(samples, 99) / 1e6,
        mean_ms=sum(samples) / len(samples) / 1e6, cpu_pct=100.0 * cpu / window_s,
        pid_cpu_s=pid_cpu,
    )


# The canned server: the cheapest possible HTTP/1.1 peer, to show the generator's ceiling.

CANNED_BODY = b'{"message": "Hello, World!"}'
CANNED_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(CANNED_BODY), CANNED_BODY))


class _Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        n = buf.count(b"\r\n\r\n")  # bodiless requests: one head, one response
        if n:
            self.transport.write(CANNED_RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        self.buf = buf


async def _serve(tcp_port: int | None, unix_path: str | None) -> None:
    loop = asyncio.get_running_loop()
    if unix_path is not None:
        server = await loop.create_unix_server(_Canned, unix_path)
    else:
        server = await loop.create_server(_Canned, "127.0.0.1", tcp_port)
    print("ready", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# Used by bench/run.py: each run in a process of its own.

def measure(*, tcp_port: int | None = None, unix_path: str | None = None,
            host_header: str = "localhost", path: str = "/", connections: int = 1,
            headers: list[tuple[str, str]] | None = None, unique_header: str | None = None,
            duration: float | None = 3.0, count: int | None = None,
            warmup: float = 0.5, timeout: float = 60.0,
            cpu_pid: int | None = None) -> LoadResult:
    command = [sys.executable, str(Path(__file__).resolve()), "run", "--json",
               "-c", str(connections), "--warmup", str(warmup), "--path", path,
               "--host-header", host_header]
    command += ["--unix", unix_path] if unix_path is not None else ["--tcp", str(tcp_port)]
    command += ["--requests", str(count)] if count is not None else ["--duration", str(duration)]
    for name, value in headers or []:
        command += ["--header", f"{name}: {value}"]
    if unique_header is not None:
        command += ["--unique-header", unique_header]
    if cpu_pid is not None:
        command += ["--cpu-pid", str(cpu_pid)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen exited with {proc.returncode}: {proc.stderr.strip()}")
    return LoadResult.from_json(json.loads(proc.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def canned_server(kind: str) -> Iterator[dict[str, Any]]:
    """Runs the canned server in its own process; yields measure() target arguments."""
    folder = Path(tempfile.mkdtemp(prefix="lbc-", dir="/tmp"))
    target: dict[str, Any]
    if kind == "unix":
        path = str(folder / "canned.sock")
        target = {"unix_path": path}
        args = ["--unix", path]
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        target = {"tcp_port": port}
        args = ["--tcp", str(port)]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the canned server did not start")
        yield target
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / "canned.sock")
        with contextlib.suppress(OSError):
            folder.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/loadgen.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "serve"):
        p = sub.add_parser(name)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--tcp", type=int, metavar="PORT", help="127.0.0.1:PORT")
        where.add_argument("--unix", metavar="PATH", help="a Unix socket")
        if name == "run":
            p.add_argument("-c", "--connections", type=int, default=1)
            p.add_argument("--duration", type=float, default=3.0, metavar="SECONDS")
            p.add_argument("--requests", type=int, default=None,
                           help="stop after this many measured responses instead")
            p.add_argument("--warmup", type=float, default=0.5, metavar="SECONDS")
            p.add_argument("--method", default="GET")
            p.add_argument("--path", default="/")
            p.add_argument("--host-header", default="localhost")
            p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
            p.add_argument("--unique-header", metavar="NAME",
                           help="a header with a value unique per request (a request id)")
            p.add_argument("--cpu-pid", type=int, metavar="PID",
                           help="also report this process's CPU seconds over the window")
            p.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.tcp, args.unix))
        return 0
    headers = [("Host", args.host_header)]
    for raw in args.header:
        name, _, value = raw.partition(":")
        headers.append((name.strip(), value.strip()))
    request = _Request(args.method, args.path, headers, args.unique_header)
    result = generate(tcp_port=args.tcp, unix_path=args.unix, connections=args.connections,
                      request=request, warmup=args.warmup, count=args.requests,
                      duration=None if args.requests else args.duration,
                      cpu_pid=args.cpu_pid)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        for key, value in asdict(result).items():
            print(f"{key:12} {value:.4f}" if isinstance(value, float) else f"{key:12} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
