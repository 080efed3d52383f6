"""Scaling with real containers: max honoured, queueing and 429, scale to zero, minimum
kept, timeouts that take an instance down, and a redeploy under load without errors."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

SLEEPER = (
    "import time\n\n"
    "def handler(event, context):\n"
    "    params = event.get('queryStringParameters') or {}\n"
    "    time.sleep(float(params.get('sleep', 0)))\n"
    "    return {'version': context.function_version}\n"
)


def _sleeper(tmp_path: Path, name: str, scaling: str, extra: str = "") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(SLEEPER)
    (folder / "lambda.toml").write_text(f'name = "{name}"\n{extra}\n[scaling]\n{scaling}\n')
    return folder




def test_max_instances_is_honoured_and_requests_queue(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(_sleeper(tmp_path, "capped", "max_instances = 2"))
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(lambdad.containers("capped")))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: lambdad.http("capped", "/?sleep=1"), range(6)))
    finally:
        stop.set()
        watcher.join()
    assert [r.status for r in results] == [200] * 6
    assert max(seen) == 2
    assert sum(r.headers["lambda-cold-start"] != "warm" for r in results) == 1
    info = lambdad.cli("get", "capped", "-o", "json").json()
    assert info["config"]["scaling"]["max_instances"] == 2
    assert info["instances"]["running"] == 2


def test_at_max_with_no_queue_time_the_request_gets_429(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(_sleeper(tmp_path, "tiny", "max_instances = 1\nqueue_timeout = 0"))
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(lambdad.http, "tiny", "/?sleep=1.5")
        time.sleep(0.5)
        throttled = lambdad.http("tiny", "/")
        assert slow.result().status == 200
    assert throttled.status == 429
    assert throttled.json()["error"] == "throttled"
    assert throttled.headers["retry-after"] == "1"
    assert "maximum of 1 instance" in throttled.json()["message"]


def test_scale_to_zero_then_a_cold_start(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(_sleeper(tmp_path, "napper", "idle_timeout = 1"))
    assert len(lambdad.containers("napper")) == 1  # the deploy's warm instance
    warm = lambdad.http("napper", "/")
    assert warm.headers["lambda-cold-start"] == "warm"
    assert re.fullmatch(r"gateway;dur=[\d.]+, function;dur=[\d.]+",
                        warm.headers["server-timing"])
    assert wait_for(lambda: lambdad.containers("napper") == [])
    assert lambdad.cli("get", "napper", "-o", "json").json()["status"] == "idle"
    cold = lambdad.http("napper", "/")
    assert cold.status == 200 and cold.headers["lambda-cold-start"] in ("cell", "container")
    assert "init;dur=" in cold.headers["server-timing"]
    assert len(lambdad.containers("napper")) == 1


def test_minimum_is_kept_and_restored(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(_sleeper(tmp_path, "steady", "min_instances = 2\nidle_timeout = 1"))
    assert wait_for(lambda: len(lambdad.containers("steady")) == 2)
    time.sleep(2.5)  # past the idle timeout: the minimum stays
    containers = lambdad.containers("steady")
    assert len(containers) == 2
    containers[0].kill()
    # Up, running or paused (idle past pause_after: the survivor is by now).
    assert wait_for(lambda: len([c for c in lambdad.containers("steady")
                                  if c.status in ("running", "paused")]) == 2
                     and containers[0].id not in {c.id for c in lambdad.containers("steady")})


def test_a_timeout_takes_the_instance_down_with_its_other_requests(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = _sleeper(tmp_path, "shared", "concurrency = 2", extra="timeout = 2")
    lambdad.deploy(folder)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambdad.http, "shared", "/?sleep=30")
        time.sleep(0.5)
        second = pool.submit(lambdad.http, "shared", "/?sleep=30")
        timed_out, bystander = first.result(), second.result()
    assert timed_out.status == 504
    assert bystander.status == 502
    assert "passed the function's timeout of 2 s" in bystander.json()["message"]
    assert lambdad.http("shared", "/").status == 200


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _load(lambdad: Lambdad, clients: int, during: object, settle: float = 1.0,
          ) -> tuple[Counter[int], Counter[str], list[str]]:
    """`clients` keep-alive clients hammer `busy` while `during()` runs."""
    import http.client

    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    port = lambdad.gateway_port

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            try:
                conn.request("GET", "/?sleep=0.01", headers={"Host": f"busy.localhost:{port}"})
                response = conn.getresponse()
                body = response.read()
            except Exception as exc:  # every failure counts
                with lock:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            with lock:
                statuses[response.status] += 1
                if response.status == 200:
                    versions[json.loads(body)["version"]] += 1
                else:
                    errors.append(f"{response.status}: {body[:300]!r}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(settle)
        during()  # type: ignore[operator]
        time.sleep(settle)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return statuses, versions, errors


def test_redeploy_under_load_loses_no_request_and_leaks_nothing(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = _sleeper(tmp_path, "busy", "concurrency = 10\nmax_instances = 5")
    lambdad.deploy(folder)
    assert lambdad.process is not None
    pid = lambdad.process.pid

    def redeploy() -> None:
        result = lambdad.cli("deploy", str(folder), "--env", "ROUND=2")
        assert result.code == 0, result.stderr

    statuses, versions, errors = _load(lambdad, 50, redeploy)
    assert errors == [], (statuses, errors[:3])
    assert set(statuses) == {200} and statuses[200] > 200, statuses
    assert versions["1"] > 0 and versions["2"] > 0, versions
    # The old version drains and stops.
    assert wait_for(lambda: {str(lambdad.owner(c)[1])
                              for c in lambdad.containers("busy")} == {"2"})
    # Two more runs of the same load meet the same steady state: descriptors (client
    # sockets, pooled upstream connections) and containers do not grow with traffic.
    steady = []
    for _ in range(2):
        statuses, _, errors = _load(lambdad, 50, lambda: time.sleep(1.0))
        assert errors == [] and set(statuses) == {200}
        time.sleep(0.5)
        steady.append((_fd_count(pid), len(lambdad.containers())))
    assert steady[1][0] <= steady[0][0] + 2, steady
    assert steady[1][1] <= steady[0][1], steady
    assert lambdad.http("busy", "/").json() == {"version": "2"}
