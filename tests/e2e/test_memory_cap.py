"""The instance's memory caps its workers: more concurrent requests than fit wait, none fails.

A function whose handler holds 40 MiB while it runs, in a 128 MiB instance with
concurrency 6: six workers would need 240 MiB. The runtime used to fork a worker per
waiting request and the kernel's OOM killer ended some mid-request (502
Runtime.OutOfMemory); now it forks only the workers the cgroup's headroom holds (a worker's
cost measured after its first request, and told to lambdad with that request's answer), so
lambdad sends it no more than fit and the other requests wait in lambdad's queue (or go to
other instances: test_memory_scaleout.py, which also shows a wait inside the instance,
REPORT's Memory Wait and its log line).
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

HOG = '''
import os
import time


def handler(event, context):
    held = b"\\x01" * (40 << 20)  # written: 40 MiB of this worker's own pages
    time.sleep(0.4)
    return {"pid": os.getpid(), "held": len(held)}
'''
CONCURRENT = 6
COLD_BURST = 12  # killed several at once: the old runtime blamed only one on memory


def _logs(daemon: Lambdad, name: str) -> list[str]:
    result = daemon.cli("logs", name, "--tail", "500", "-o", "json")
    assert result.code == 0, result.stderr
    return [str(json.loads(line)["message"]) for line in result.stdout.splitlines()]


def test_requests_beyond_what_memory_holds_wait_for_a_worker(lambdad: Lambdad,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "hog40"
    folder.mkdir()
    (folder / "handler.py").write_text(HOG)
    lambdad.deploy(folder, "--name", "hog40", "--memory", "128", "--concurrency",
                   str(CONCURRENT), "--max-instances", "1", "--timeout", "30")
    first = lambdad.http("hog40")  # the first worker serves, and is measured after
    assert first.status == 200, first.body
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda _: lambdad.http("hog40"), range(CONCURRENT)))
    failed = [(a.status, a.body[:200]) for a in answers if a.status != 200]
    assert not failed, failed  # none OOM-killed: on the old runtime, Runtime.OutOfMemory
    pids = {a.json()["pid"] for a in answers}
    assert len(pids) < CONCURRENT  # fewer workers than requests: some requests waited
    assert len(lambdad.containers("hog40")) == 1
    ids = {a.headers["lambda-request-id"] for a in answers}

    def reports() -> list[str]:
        return [m for m in _logs(lambdad, "hog40") if m.startswith("REPORT ")
                and any(i in m for i in ids)]

    assert wait_for(lambda: len(reports()) == CONCURRENT, timeout=15), _logs(lambdad, "hog40")
    # lambdad knew the cap from the first answer: none waited inside the instance.
    assert not [m for m in reports() if "\tMemory Wait: " in m], reports()
    messages = _logs(lambdad, "hog40")
    assert not any("out of memory" in m for m in messages), messages


def test_workers_the_oom_killer_ends_anyway_are_each_reported(lambdad: Lambdad,
                                                             tmp_path: Path) -> None:
    """The cap's limit: before any worker was measured after a request, a worker is assumed
    to cost the zygote's resident size (~10 MiB here), so a burst at a fresh instance of this
    40 MiB handler still outgrows the cgroup and the kernel kills several workers at once.
    Each such request says Runtime.OutOfMemory (the runtime used to blame only the first on
    memory, the others 'killed by signal 9'), and the instance serves on."""
    folder = tmp_path / "hog40cold"
    folder.mkdir()
    (folder / "handler.py").write_text(HOG)
    lambdad.deploy(folder, "--name", "hog40cold", "--memory", "128", "--concurrency",
                   str(COLD_BURST), "--max-instances", "1", "--timeout", "30")
    with concurrent.futures.ThreadPoolExecutor(COLD_BURST) as pool:
        answers = list(pool.map(lambda _: lambdad.http("hog40cold"), range(COLD_BURST)))
    failed = [a for a in answers if a.status != 200]
    assert failed, "no worker was killed: the burst did not outgrow the instance"
    assert [a.json()["errorType"] for a in failed] == ["Runtime.OutOfMemory"] * len(failed), \
        [a.body[:200] for a in failed]
    assert all("out of memory: limit 128 MiB" in a.json()["errorMessage"] for a in failed)
    assert lambdad.http("hog40cold").status == 200
    assert len(lambdad.containers("hog40cold")) == 1
