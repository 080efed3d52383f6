"""What the cold group (cold.py) and the apps group (apps.py) share: functions deployed into
a private lambdad, its containers as Docker shows them, waiting for a state, and one timed
request to the gateway with what its response says of the start (Lambda-Cold-Start,
Server-Timing).

Requests go to the gateway on 127.0.0.1 only; containers are only looked at (Docker API:
list, inspect, stats), never connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BenchDaemon, executable
from load import _run
from stats import percentile

WAIT_S = 30.0  # longest wait for a state (zero instances, full pool, paused) before failing


class ColdBenchError(RuntimeError):
    """The cold (or apps) benchmark could not run; the message says why."""


def ms(ns: float) -> float:
    return ns / 1e6


def p(samples_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile in ms."""
    return percentile(sorted(ms(s) for s in samples_ns), pct)


def server_timing(value: str) -> dict[str, float]:
    """A Server-Timing header's durations by name (gateway, function, init, import; ms)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                with contextlib.suppress(ValueError):
                    out[name] = float(number)
    return out


# One request, raw HTTP/1.1 on its own connection (Connection: close), to its full response.

@dataclass(frozen=True)
class Answer:
    ns: int
    start: str  # Lambda-Cold-Start: warm, cell, unpaused or container
    timing: dict[str, float]  # Server-Timing
    error: str  # "" when the answer was a 200 with the expected body
    request_id: str = ""


def request_bytes(function: str, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {function}.localhost\r\n"
            "Connection: close\r\n\r\n").encode()


async def exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
                   port: int, request: bytes, expected: bytes) -> Answer:
    """One request (on `conn`, else a new connection, inside the timed part) to its full
    response; an error (not raised) unless a 200 whose body holds `expected`."""
    start = time.perf_counter_ns()
    try:
        reader, writer = conn or await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            raw = await asyncio.wait_for(reader.read(-1), timeout=60)
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return Answer(time.perf_counter_ns() - start, "", {}, f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter_ns() - start
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Answer(elapsed, "", {}, f"bad response {raw[:80]!r}")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    error = "" if status == 200 and expected in body else f"{status}: {body[:120]!r}"
    return Answer(elapsed, headers.get("lambda-cold-start", ""),
                  server_timing(headers.get("server-timing", "")), error,
                  headers.get("lambda-request-id", ""))


# What Docker shows of the daemon's containers (the low-level list: no inspect races).

class Containers:
    def __init__(self, daemon: BenchDaemon) -> None:
        if daemon.daemon_id is None:
            raise ColdBenchError("lambdad wrote no daemon-id")
        self.daemon = daemon
        self.api = daemon.docker.api
        self.label = f"lambda.daemon={daemon.daemon_id}"
        self.instances_dir = daemon.state_dir / "i"

    def all(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.containers(all=True, filters={"label": self.label})
        return found

    @staticmethod
    def name(container: dict[str, Any]) -> str:
        return str((container.get("Names") or ["?"])[0]).lstrip("/")

    def instances(self, function: str) -> list[dict[str, Any]]:
        """The function's containers in any state: labelled for it (started as containers)
        or named after it (specialized cells keep their `lambda.cell` label)."""
        return self.daemon.function_containers(function)

    def ready_cells(self, cell_class: str | None = None) -> list[dict[str, Any]]:
        """Generic cells: running, not yet renamed, their socket open."""
        ready = []
        for c in self.all():
            labels = c.get("Labels") or {}
            if ("lambda.cell" not in labels or c.get("State") != "running"
                    or not self.name(c).startswith("lambda-cell-")):
                continue
            if cell_class is not None and labels["lambda.cell"] != cell_class:
                continue
            socket = self.instances_dir / labels.get("lambda.instance", "?") / "invoke.sock"
            if socket.exists():
                ready.append(c)
        return ready

    def paused(self, container_id: str) -> bool:
        return bool(self.api.inspect_container(container_id)["State"].get("Paused"))

    def memory_mib(self, container_id: str) -> float | None:
        """As `docker stats` and lambdad's memory_bytes: usage minus the inactive file cache."""
        stats = self.api.stats(container_id, stream=False, one_shot=True)
        memory = stats.get("memory_stats") or {}
        if memory.get("usage") is None:
            return None
        detail = memory.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        return max(0, int(memory["usage"]) - int(cache)) / 2**20


def wait(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    """Polls `check` every 10 ms; the seconds it took. Raises if `timeout` passes."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise ColdBenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def deploy(daemon: BenchDaemon, source: Path, name: str, *flags: str) -> dict[str, Any]:
    """`lambdactl deploy SOURCE --name NAME FLAGS`; the function as `lambdactl get` shows it."""
    lambdactl = executable("lambdactl")
    _run([lambdactl, "deploy", str(source), "--name", name, *flags], env=daemon.env())
    got = _run([lambdactl, "get", name, "-o", "json"], env=daemon.env())
    info: dict[str, Any] = json.loads(got.stdout)
    return info


def rotation(docker: Containers, names: list[str], after: int) -> tuple[int, float]:
    """The index of the next function (in turn, after `after`) with no container at all,
    and how long we waited for one."""
    found: list[int] = []

    def any_at_zero() -> bool:
        for step in range(1, len(names) + 1):
            index = (after + step) % len(names)
            if not docker.instances(names[index]):
                found.append(index)
                return True
        return False

    waited = wait(any_at_zero, f"one of {', '.join(names)} to scale to zero "
                  "(idle timeout 1 s)")
    return found[0], waited
