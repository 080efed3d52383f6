"""Attacks on how instances stop: a function whose SIGTERM handler takes its whole grace.

Each instance's worker processes get SIGTERM and a grace before they are killed (as on
Lambda), so a function can make every stop of its instances last that long. The grace must
pass for all of them at once: lambdad's Docker calls share a few worker threads, and a stop
that holds one for its grace stops the instances a handful at a time (a daemon stop, a
delete or a scale-down of many instances takes many graces) while every other function's
cold starts and deploys wait behind them for a thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

# Python's default executor, which asyncio.to_thread uses: this many threads at most.
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)

STALLING = '''
import os, signal, time


def on_sigterm(signum, frame):
    """Never ends on its own: takes the whole grace, and says it is alive meanwhile."""
    print(f"sigterm {time.time():.3f}", flush=True)
    while True:
        print(f"alive {time.time():.3f}", flush=True)
        time.sleep(0.02)


signal.signal(signal.SIGTERM, on_sigterm)


def handler(event, context):
    return {"pid": os.getpid()}
'''


def test_instances_that_stall_their_stop_get_their_sigterm_together(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    count = EXECUTOR_THREADS + 2  # more instances than the threads Docker calls run on
    folder = tmp_path / "stall"
    folder.mkdir()
    (folder / "app.py").write_text(STALLING)
    (folder / "lambda.toml").write_text(
        'name = "stall"\nhandler = "app.handler"\n'
        f"[scaling]\nmin_instances = {count}\nmax_instances = {count}\n")
    daemon.deploy(folder)
    assert wait_for(lambda: len([c for c in daemon.containers("stall")
                                 if c.status == "running"]) == count, 120)
    assert daemon.stop() == 0

    logs = daemon.state_dir / "logs" / "stall" / "current.jsonl"
    entries = [json.loads(line) for line in logs.read_text().splitlines()]
    sigterm: dict[str, float] = {}
    last_alive: dict[str, float] = {}
    for entry in entries:
        word, _, when = str(entry["message"]).partition(" ")
        if word == "sigterm":
            sigterm[entry["instance"]] = float(when)
        elif word == "alive":
            last_alive[entry["instance"]] = max(float(when),
                                                last_alive.get(entry["instance"], 0.0))
    assert len(sigterm) == count, entries[-20:]  # each instance's handler ran
    # Every instance got its SIGTERM while every other was still in its grace: the graces
    # ran at once, not one batch of instances after another.
    assert max(sigterm.values()) < min(last_alive.values()), (sorted(sigterm.values()),
                                                             sorted(last_alive.values()))
