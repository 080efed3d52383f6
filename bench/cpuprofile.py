"""Where lambdad's CPU per proxied request goes: a py-spy profile broken down by area.

    .venv/bin/python bench/cpuprofile.py                      # 32 then 1 connection, 15 s each
    .venv/bin/python bench/cpuprofile.py --clients 1 --duration 20 --keep /tmp/prof

Starts a private lambdad as bench/run.py does (bench/harness.py), deploys functions/greet as
bench-warm (`--concurrency 32 --max-instances 1 --min-instances 1`) and, per connection count:

1. a clean window: bench/loadgen.py (its own process) through the gateway, with lambdad's CPU
   read from /proc/PID/stat (utime + stime, all threads) at the window's start and end:
   lambdad CPU us per proxied request, unperturbed by the profiler;
2. the same load to the instance's own socket: what lambdad spends per request it does not
   proxy (following the instance's logs: the log capture, by subtraction);
3. a profiled window: `py-spy record -p PID -f raw --full-filenames -F` (idle threads left out,
   so samples are CPU) during the same gateway load, and the samples split into areas
   (`classify`); an area's us/request = its share of the samples x the clean figure of 1.

Traffic goes only to 127.0.0.1 and to the instance's Unix socket. py-spy comes from the dev
extras (`make venv`); it needs ptrace rights on lambdad (root, or the same user with
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import BIN, BenchDaemon
from load import QUERY, WARM_FUNCTION, _check, _containers, _deploy, floor_headers
from loadgen import LoadResult, measure

DEPLOY = ("--concurrency", "32", "--max-instances", "1", "--min-instances", "1")

# Areas, in the order printed. The rules are in `classify`.
H11_CLIENT = "h11, client side (gateway's parsing and framing)"
HOP = "instance hop (runtime/upstream.py + hop.py, h11 included)"
_HOP_MODULES = ("runtime/upstream.py", "runtime/hop.py")
ASYNCIO_STREAMS = "asyncio streams (StreamReader/Writer, client side)"
ASYNCIO_TRANSPORT = "asyncio transports + sockets + epoll"
ASYNCIO_LOOP = "asyncio loop, tasks, futures, timeouts"
GATEWAY = "gateway/ (connection, client, responses, headers, server)"
INVOKE = "control/invoke.py + metrics/stats bookkeeping"
FORWARD = "runtime/forward.py + pool + routing"
LOGGING = "logging"
CAPTURE = "log capture (logs/docker_stream, capture, store, entry)"
OTHER_LAMBDAD = "other lambdad (store, scheduler, api, ...)"
OTHER = "other (no lambdad frame: grpc, threads, interpreter)"
IDLE = "waits py-spy did not see as idle (left out)"
# Leaves that are a thread blocked in C: a pool worker waiting for work, grpc's poller thread
# (C code under Thread.run), the Docker events reader, the loop in epoll_wait, the store's
# thread waiting for a statement. py-spy's idle
# test reads the thread's state when it samples, so a blocked thread it catches runnable
# (just woken, or waiting for a CPU on a busy machine) is kept; these are left out.
_WAIT_LEAVES = frozenset({
    ("concurrent/futures/thread.py", "_worker"), ("threading.py", "Thread.run"),
    ("threading.py", "_worker"), ("selectors.py", "EpollSelector.select"),
    ("threading.py", "Condition.wait"), ("threading.py", "Event.wait"),
    ("queue.py", "Queue.get"),
    # the store's thread waiting in SimpleQueue.get (C, so _serve is the leaf); its work
    # is in the frames above it (store.py, peewee, sqlite3)
    ("lambdad/store/thread.py", "StoreThread._serve"),
})
AREAS = (H11_CLIENT, HOP, ASYNCIO_STREAMS, ASYNCIO_TRANSPORT, ASYNCIO_LOOP, GATEWAY, INVOKE,
         FORWARD, LOGGING, CAPTURE, OTHER_LAMBDAD, OTHER)


@dataclass(frozen=True)
class Frame:
    function: str
    path: str

    @property
    def lambdad(self) -> str | None:
        """The module path inside the lambdad package ("gateway/client.py"), else None."""
        marker = "/lambdad/"
        at = self.path.rfind(marker)
        if at < 0 or "/site-packages/" in self.path[at:]:
            return None
        return self.path[at + len(marker):]

    def short(self) -> str:
        inside = self.lambdad
        if inside is not None:
            return f"lambdad/{inside}:{self.function}"
        for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3/"):
            at = self.path.rfind(marker)
            if at >= 0:
                return f"{self.path[at + len(marker):]}:{self.function}"
        return f"{self.path}:{self.function}"


def parse_frame(text: str) -> Frame:
    """`function (path:line)` as py-spy writes it; `thread (0x..)` and others as they are."""
    name, _, rest = text.partition(" (")
    inner = rest.strip().rstrip(")")
    return Frame(name, inner.rpartition(":")[0] if ":" in inner else "")


def parse_raw(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """py-spy's raw (collapsed) format: `root;...;leaf COUNT` per line."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = [parse_frame(f) for f in stack.split(";")]
        stacks.append((frames, int(count)))
    return stacks


def _lambdad_area(module: str) -> str:
    if module in _HOP_MODULES:
        return HOP
    if module.startswith("gateway/"):
        return GATEWAY
    if module == "control/invoke.py" or module.startswith("metrics/"):
        return INVOKE
    if module in ("runtime/forward.py", "runtime/pool.py", "runtime/routing.py",
                  "runtime/invocation.py", "runtime/manager.py"):
        return FORWARD
    if module.startswith("logs/"):
        return CAPTURE
    return OTHER_LAMBDAD


def _owner(stack: list[Frame]) -> str | None:
    """The lambdad module nearest the leaf: who called the library code at the leaf."""
    for frame in reversed(stack):
        inside = frame.lambdad
        if inside is not None:
            return inside
    return None


def classify(stack: list[Frame]) -> str:
    """The area one sample's CPU belongs to (stack from root to leaf).

    The leaf's own file decides first: lambdad code is its module's area; h11 goes to whoever
    called it (upstream.py or hop.py: the hop; logs/: the capture; else the client side);
    asyncio and the socket layer are their own areas (their work under the log stream's
    reader goes to the capture), and so is logging; any other library (uuid, json, enum,
    prometheus_client, ...) is charged to the lambdad module that called it, or to `other`
    when none did.
    """
    leaf = stack[-1]
    short = leaf.short()
    module, _, function = short.rpartition(":")
    if (module, function) in _WAIT_LEAVES or (
            short == "socket.py:SocketIO.readinto"
            and not any("/asyncio/" in f.path for f in stack)):
        return IDLE
    inside = leaf.lambdad
    if inside is not None:
        return _lambdad_area(inside)
    owner = _owner(stack)
    path = leaf.path
    if "/h11/" in path:
        if owner in _HOP_MODULES:
            return HOP
        if owner is not None and owner.startswith("logs/"):
            return CAPTURE
        return H11_CLIENT
    if "/logging/" in path:
        return LOGGING
    if any(f"/{m}" in path for m in ("asyncio/", "selectors.py", "socket.py", "ssl.py")):
        if owner is not None and owner.startswith("logs/"):
            return CAPTURE
        if owner in _HOP_MODULES:
            return HOP
        if path.endswith("asyncio/streams.py"):
            return ASYNCIO_STREAMS
        if path.endswith(("selector_events.py", "selectors.py", "socket.py", "transports.py")):
            return ASYNCIO_TRANSPORT
        return ASYNCIO_LOOP
    if "prometheus_client" in path:
        return INVOKE
    if owner is not None:
        return _lambdad_area(owner)
    return OTHER


@dataclass
class Breakdown:
    samples: int  # IDLE left out
    idle: int
    areas: Counter[str]
    self_time: Counter[str]  # leaf frame -> samples
    inclusive: Counter[str]  # lambdad function -> samples with it anywhere on the stack


def breakdown(stacks: list[tuple[list[Frame], int]]) -> Breakdown:
    areas: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for frames, count in stacks:
        code = [f for f in frames if f.path]  # drop py-spy's `thread (0x..)` roots
        if not code:
            continue
        area = classify(code)
        if area == IDLE:
            idle += count
            continue
        total += count
        areas[area] += count
        self_time[code[-1].short()] += count
        for name in {f.short() for f in code if f.lambdad is not None}:
            inclusive[name] += count
    return Breakdown(total, idle, areas, self_time, inclusive)


def render(b: Breakdown, us_per_request: float, top: int) -> str:
    def us(samples: int) -> float:
        return samples / b.samples * us_per_request if b.samples else 0.0

    out = [f"{'area':62} {'samples':>8} {'share':>7} {'us/req':>7}"]
    for area in AREAS:
        n = b.areas.get(area, 0)
        out.append(f"{area:62} {n:8d} {n / max(1, b.samples):7.1%} {us(n):7.1f}")
    out.append(f"{'total':62} {b.samples:8d} {1:7.1%} {us_per_request:7.1f}")
    out.append(f"({IDLE}: {b.idle} samples)")
    out.append("")
    out.append(f"top {top} functions by self time (the leaf frame):")
    for name, n in b.self_time.most_common(top):
        out.append(f"  {n / b.samples:6.1%} {us(n):6.1f} us  {name}")
    out.append("")
    out.append(f"top {top} lambdad functions by inclusive time:")
    for name, n in b.inclusive.most_common(top):
        out.append(f"  {n / b.samples:6.1%} {us(n):6.1f} us  {name}")
    return "\n".join(out)


def py_spy() -> str:
    local = BIN / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("bench/cpuprofile.py: py-spy not found; `make venv` installs it "
                         "(dev extras), or `.venv/bin/pip install py-spy`")
    return found


def _line(label: str, result: LoadResult) -> str:
    per = result.pid_cpu_us_per_request
    return (f"  {label:44} {result.rps:8,.0f} req/s  p50 {result.p50_ms:.3f} ms  p99 "
            f"{result.p99_ms:.3f} ms  lambdad {'-' if per is None else f'{per:.0f}'} us/request")


def profile(daemon: BenchDaemon, clients: int, *, duration: float, warmup: float, rate: int,
            keep: Path | None, top: int) -> None:
    assert daemon.process is not None
    pid = daemon.process.pid
    host = f"{WARM_FUNCTION}.localhost"
    instance = str(daemon.instance_socket(WARM_FUNCTION))
    print(f"== {clients} connection(s) ==", flush=True)
    clean = measure(tcp_port=daemon.gateway_port, connections=clients, path=QUERY,
                    host_header=host, duration=duration, warmup=warmup, cpu_pid=pid)
    print(_line("gateway, clean window", clean), flush=True)
    floor = measure(unix_path=instance, connections=clients, path=QUERY, host_header=host,
                    headers=floor_headers(WARM_FUNCTION), unique_header="Lambda-Request-Id",
                    duration=duration, warmup=warmup, cpu_pid=pid)
    print(_line("instance socket (lambdad: log capture only)", floor), flush=True)
    folder = keep or Path(tempfile.mkdtemp(prefix="lbprof-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"lambdad-{clients}c.raw"
    spy = subprocess.Popen(
        [py_spy(), "record", "-p", str(pid), "-f", "raw", "-o", str(raw), "--full-filenames",
         "-F", "-r", str(rate), "-d", str(round(duration + warmup + 1))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # py-spy attaches before the load starts
        profiled = measure(tcp_port=daemon.gateway_port, connections=clients, path=QUERY,
                           host_header=host, duration=duration, warmup=warmup, cpu_pid=pid)
        _, err = spy.communicate(timeout=duration + warmup + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait()
    print(_line("gateway, under py-spy", profiled), flush=True)
    if not raw.exists():
        raise SystemExit(f"py-spy wrote no profile: {err.strip()[-500:]}")
    stacks = parse_raw(raw.read_text().splitlines())
    per_request = clean.pid_cpu_us_per_request or 0.0
    floor_us = floor.pid_cpu_us_per_request
    print(f"  samples: whole profiled run incl. warm-up and drain, idle threads excluded; "
          f"us/req = share x {per_request:.0f} us (the clean window)")
    if floor_us is not None:
        print(f"  log capture by subtraction: {floor_us:.0f} us per request sent straight to "
              "the instance")
    print(render(breakdown(stacks), per_request, top), flush=True)
    if keep is not None:
        print(f"  raw profile: {raw}", flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/cpuprofile.py", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="32,1", help="connection counts (default: 32,1)")
    parser.add_argument("--duration", type=float, default=15.0, metavar="SECONDS",
                        help="each window (default: 15)")
    parser.add_argument("--warmup", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples/s (default: 200)")
    parser.add_argument("--top", type=int, default=20, help="functions listed (default: 20)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the raw profiles in DIR (py-spy's collapsed stacks)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    py_spy()
    daemon = BenchDaemon(extra_args=["--cell-pool-size", "2"])
    try:
        daemon.start()
        _deploy(daemon, WARM_FUNCTION, *DEPLOY)
        if len(_containers(daemon, WARM_FUNCTION)) != 1:
            raise SystemExit(f"{WARM_FUNCTION} should have exactly one instance")
        conn = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=30)
        with contextlib.closing(conn):
            _check(conn, {"Host": f"{WARM_FUNCTION}.localhost"})
        for clients in counts:
            profile(daemon, clients, duration=args.duration, warmup=args.warmup,
                    rate=args.rate, keep=args.keep, top=args.top)
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
