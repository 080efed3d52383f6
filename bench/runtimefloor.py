"""The standard runtime's own cost per request, without Docker or lambdad (issue 16).

    .venv/bin/python bench/runtimefloor.py --duration 3 --rounds 2 [--no-channel]

Starts `python3 -I -m lambda_runtime` on the host, as the runtime image starts it, serving
functions/greet on a Unix socket, with LAMBDA_LOG_CHANNEL=1 and a reader of the channel that
reads like lambdad's (one read, then a 20 ms rest), and loads the socket with
bench/loadgen.py (its own process) at 1 and 32 connections with the headers the gateway adds.
It prints req/s, p50, p99 and the runtime's CPU per request: the supervisor's and its
children's (the zygote and the workers), from /proc over the measured window. This is the
bench's "floor: instance invoke.sock" row minus the container: what the runtime alone costs.
Run `py-spy record -p PID` against the printed pids to profile either side.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNTIME = ROOT / "packaging" / "runtime" / "python"
FUNCTION = ROOT / "functions" / "greet"
QUERY = "/?name=World"
HEADERS = [
    "X-Forwarded-For: 127.0.0.1",
    "X-Forwarded-Proto: http",
    "X-Forwarded-Host: greet.localhost",
    "Lambda-Invocation-Type: http",
]


def _cpu_s(pid: int) -> float:
    """utime + stime of `pid` (all its threads), 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _switches(pid: int) -> int:
    """Voluntary context switches of `pid` so far: how often it slept and was woken."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in status.splitlines()
               if line.startswith("voluntary_ctxt_switches:"))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return found


def _reader(path: str, stop: threading.Event, counts: list[int], decode: bool) -> None:
    """lambdad's side of the log channel: a read, then a rest (lambdad's BATCH_S); with
    `decode`, each read is also decoded into entries by lambdad's own decoder, so the
    reader costs CPU in bursts as lambdad's does."""
    decoder = None
    if decode:
        sys.path.insert(0, str(ROOT))
        from lambdad.logs.channel import RecordDecoder

        decoder = RecordDecoder("greet", 1, "bench")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"GET /.lambda/logs HTTP/1.1\r\nHost: x\r\nLambda-Log-Channel: 1\r\n\r\n")
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            return
        counts[0] += len(data)
        if decoder is not None:
            for entry in decoder.feed(data):
                entry.to_json()
        time.sleep(0.02)
    sock.close()


def start(folder: str, channel: bool, runtime: Path = RUNTIME
          ) -> tuple[subprocess.Popen[bytes], str]:
    path = os.path.join(folder, "invoke.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "_HANDLER": "handler.handler",
        "AWS_LAMBDA_FUNCTION_NAME": "greet",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "LAMBDA_SOCKET": path,
        "LAMBDA_TASK_ROOT": str(FUNCTION),
        "LAMBDA_DEPS_ROOT": os.path.join(folder, "deps"),
    }
    if channel:
        env["LAMBDA_LOG_CHANNEL"] = "1"
    code = f"import sys; sys.path.insert(0, {str(runtime)!r}); import lambda_runtime.__main__"
    proc = subprocess.Popen([sys.executable, "-I", "-B", "-u", "-c", code], env=env,
                            cwd=str(FUNCTION), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the runtime did not start (exit {proc.poll()})")
        time.sleep(0.01)
    return proc, path


def measure(path: str, pid: int, connections: int, duration: float) -> dict[str, float]:
    pids = [pid, *_children(pid)]
    before = [_cpu_s(p) for p in pids]
    switches = _switches(pid)
    command = [sys.executable, str(HERE / "loadgen.py"), "run", "--json", "--unix", path,
               "-c", str(connections), "--duration", str(duration), "--warmup", "0.5",
               "--path", QUERY, "--host-header", "greet.localhost",
               "--unique-header", "Lambda-Request-Id", "--cpu-pid", str(pid)]
    deadline = str(int((time.time() + 600) * 1000))
    for header in [*HEADERS, f"Lambda-Deadline-Ms: {deadline}"]:
        command += ["--header", header]
    out = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    switches = _switches(pid) - switches
    pids_after = [pid, *_children(pid)]
    # The window's supervisor CPU is loadgen's; the children's is over the whole run (with
    # the 0.5 s warm-up), scaled to the window by its share of the run's requests.
    children = sum(_cpu_s(p) for p in pids_after[1:]) - sum(
        b for p, b in zip(pids[1:], before[1:], strict=True) if p in pids_after)
    share = result["window_s"] / (result["window_s"] + 0.5)
    result["workers_us"] = children * share / result["requests"] * 1e6
    result["supervisor_us"] = (result["pid_cpu_s"] or 0) / result["requests"] * 1e6
    # over the whole run, warm-up included: per request, as the children's CPU
    result["switches"] = switches * share / result["requests"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--no-channel", action="store_true",
                        help="the runtime writes its logs to stdout (discarded) instead")
    parser.add_argument("--decode", action="store_true",
                        help="the channel's reader decodes what it reads, as lambdad does")
    parser.add_argument("--runtime", type=Path, default=RUNTIME,
                        help="the folder holding lambda_runtime/ (another tree's, to compare)")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="keep the runtime up this long before loading it (to attach py-spy)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtfloor-") as folder:
        proc, path = start(folder, channel=not args.no_channel, runtime=args.runtime)
        stop = threading.Event()
        counts = [0]
        reader = None
        if not args.no_channel:
            reader = threading.Thread(target=_reader, args=(path, stop, counts, args.decode),
                                      daemon=True)
            reader.start()
        try:
            print(f"runtime: supervisor pid {proc.pid}, children {_children(proc.pid)}, "
                  f"socket {path}", flush=True)
            time.sleep(args.hold)
            for _ in range(args.rounds):
                for connections in args.connections:
                    r = measure(path, proc.pid, connections, args.duration)
                    print(f"  {connections:>2} conn: {r['rps']:>7,.0f} req/s  p50 "
                          f"{r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  mean "
                          f"{r['mean_ms']:.3f} ms  errors {r['errors']}  CPU/request: "
                          f"supervisor {r['supervisor_us']:.0f} us, zygote+workers "
                          f"{r['workers_us']:.0f} us; supervisor sleeps "
                          f"{r['switches']:.2f}", flush=True)
        finally:
            stop.set()
            proc.terminate()
            proc.wait(10)
        if reader is not None:
            print(f"log channel: {counts[0]:,} bytes read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
