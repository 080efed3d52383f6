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
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lambdad.runtime.starts import MAX_CONTAINER_STARTS
from tests.support import metrics
from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.functions import manifest, write_function

pytestmark = pytest.mark.slow

# Python's default executor, which asyncio.to_thread uses: this many threads at most.
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)

STALLING = '''
import os, signal, socket, time


def on_sigterm(signum, frame):
    """Never ends on its own: takes the whole grace, and says it is alive meanwhile."""
    print(f"sigterm {time.time():.3f}", flush=True)
    while True:
        print(f"alive {time.time():.3f}", flush=True)
        time.sleep(0.02)


signal.signal(signal.SIGTERM, on_sigterm)


def handler(event, context):
    time.sleep(1)  # long enough for every instance to take one of the requests sent at once
    return {"pid": os.getpid(), "container": socket.gethostname()}
'''


def test_instances_that_stall_their_stop_get_their_sigterm_together(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    count = EXECUTOR_THREADS + 2  # more instances than the threads Docker calls run on
    daemon.deploy(write_function(tmp_path / "stall", STALLING, manifest(
        "stall", "app.handler", min_instances=count, max_instances=count), module="app"))
    # Every instance serves a request before the stop. A running container is not yet an
    # instance with a handler: its runtime may still be loading the code, or (loaded) not
    # have forked its first worker, the process whose SIGTERM handler runs. Stopped then,
    # it has no worker to take the SIGTERM (and one whose load ends after the stop began is
    # stopped on its own, not with the others): this test stopped such an instance about
    # one run in four.
    assert wait_for(lambda: metrics.total(daemon, "lambdad_instances", function="stall",
                                          state="idle") == count, 120)
    with ThreadPoolExecutor(count) as pool:
        served = list(pool.map(lambda _: daemon.http("stall").json()["container"],
                               range(count)))
    assert len(set(served)) == count, served
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


WILD = '''
import os, signal, sys, time

FORGED = ("START RequestId: forged Version: 1\\nEND RequestId: forged\\n"
          "REPORT RequestId: forged\\tDuration: 1.00 ms\\tBilled Duration: 1 ms\\t"
          "Memory Size: 128 MB\\tMax Memory Used: 1 MB\\n")


def escape():
    """A child in a session of its own that ignores SIGTERM and keeps writing frames."""
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            try:
                sys.stdout.write(FORGED)
                sys.stdout.flush()
            except OSError:
                pass
            time.sleep(0.01)


def on_sigterm(signum, frame):
    print("wild: sigterm", flush=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    for _ in range(3):
        escape()
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGSTOP, signal.SIGUSR1):
            try:
                os.kill(pid, sig) if pid != os.getpid() else None
            except OSError:
                pass
    os.write(1, FORGED.encode() * 200)
    while True:
        time.sleep(0.05)


signal.signal(signal.SIGTERM, on_sigterm)


def handler(event, context):
    return {"pid": os.getpid()}
'''


def processes_of(container_id: str) -> list[int]:
    """Processes on this host in the container's cgroup (any that outlived it too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if container_id.encode() in (entry / "cgroup").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_sigterm_handler_that_escapes_signals_everyone_and_forges_frames_is_contained(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "wild", WILD,
                            manifest("wild", "app.handler", idle_timeout=1), module="app")
    lambdad.deploy(folder)
    lambdad.deploy("greet", "--name", "calm")
    assert lambdad.http("wild", "/").status == 200
    ids = [c.id for c in lambdad.containers("wild")]
    assert ids and all(len(processes_of(i)) >= 3 for i in ids)  # supervisor, zygote, worker
    # Scaled down after its idle timeout: the handler runs, and nothing of it outlives it.
    assert wait_for(lambda: lambdad.containers("wild") == [], 60)
    assert wait_for(lambda: not any(processes_of(i) for i in ids), 10)
    entries = [json.loads(line) for line in
               lambdad.cli("logs", "wild", "-o", "json").stdout.splitlines()]
    assert any(e["message"] == "wild: sigterm" for e in entries)
    # Its forged frames are text of its own lines, never frames.
    assert any(str(e["message"]).startswith("START RequestId: forged") for e in entries
               if e["stream"] != "runtime")
    frames = [e for e in entries if e["stream"] == "runtime"]
    assert frames and not [e for e in frames if "forged" in str(e["message"])
                           or e["request_id"] == "forged"], frames
    # The daemon and the other function go on; the function can be called and redeployed.
    assert lambdad.http("calm", "/?name=still").json() == {"message": "Hello, still!"}
    assert lambdad.http("wild", "/").status == 200
    lambdad.deploy(folder)
    assert lambdad.http("wild", "/").status == 200


SLOW_START = '''
import time

time.sleep(4)  # the import: every start of an instance takes this long


def handler(event, context):
    return {"ok": True}
'''


def _stopped_lines(daemon: Lambdad, function: str) -> list[str]:
    return [line for line in daemon.log().splitlines()
            if f"instance stopped function={function} " in line]


def test_a_daemon_stop_cancels_instance_starts_and_creates_no_container_after_it(
    tmp_path: Path,
) -> None:
    """lambdad stops while `min_instances` starts are under way: MAX_CONTAINER_STARTS are
    loading their code, one more waits for its turn to create a container. The stop must
    create nothing (that one waiting used to create its container seconds after the stop
    began, once a turn came free), stop the starting ones with the others, leave no
    container and nothing a restart has to clean up."""
    count = 1 + MAX_CONTAINER_STARTS + 1  # the deploy's, those loading, one waiting
    folder = write_function(tmp_path / "slowstart", SLOW_START, manifest(
        "slowstart", "app.handler", min_instances=count, max_instances=count), module="app")
    # No stem cells: a cell's start is not an instance's (cells refill on their own).
    with running_daemon("--cell-pool-size", "0") as daemon:
        began = datetime.now(UTC)
        daemon.deploy(folder)  # its instance is up; the minimum's starts begin
        assert wait_for(lambda: len(daemon.containers("slowstart")) == count - 1, 60)
        assert metrics.total(daemon, "lambdad_instances", function="slowstart",
                             state="idle") == 1  # the others are still starting
        stop_began = time.time()
        assert daemon.stop() == 0
        events = list(daemon.docker.events(
            since=began, until=datetime.now(UTC) + timedelta(seconds=2), decode=True,
            filters={"type": "container", "event": ["create", "kill"],
                     "label": f"lambda.daemon={daemon.daemon_id}"}))
        created = {e["id"]: float(e["timeNano"]) / 1e9 for e in events
                   if e["status"] == "create"}
        assert len(created) == count - 1, created
        assert [t for t in created.values() if t >= stop_began] == []  # none after it began
        # Each, starting or not, got the stop signal of a graceful stop (not a bare kill).
        signalled = {e["id"] for e in events if e["status"] == "kill"
                     and e["Actor"]["Attributes"].get("signal") == "15"}
        assert signalled == set(created), events
        assert daemon.containers() == []
        assert list((daemon.state_dir / "i").iterdir()) == []
        stopped = _stopped_lines(daemon, "slowstart")
        assert len([line for line in stopped if 'reason="stopped while starting"' in line]
                   ) == MAX_CONTAINER_STARTS, stopped
        assert len(stopped) == count - 1, stopped
        # Nothing left for the next start to reconcile; the function is served again.
        daemon.start()
        assert "reconciled:" not in daemon.log()
        assert daemon.http("slowstart", "/").json() == {"ok": True}


QUICK = '''
def handler(event, context):
    return {"ok": True}
'''


def test_a_daemon_stop_ends_each_grace_when_the_instance_exits(fresh_lambdad: Lambdad,
                                                              tmp_path: Path) -> None:
    """The instances' runtimes exit as soon as they get SIGTERM (no handler to run): the
    daemon's stop must see each one exit (Docker's die event ends its grace), not wait out
    the whole grace and then kill. The event watcher used to stop before the instances, so
    every one of them was "killed" after its full grace."""
    daemon = fresh_lambdad
    count = 3
    daemon.deploy(write_function(tmp_path / "quick", QUICK, manifest(
        "quick", "app.handler", min_instances=count, max_instances=count), module="app"))
    assert wait_for(lambda: metrics.total(daemon, "lambdad_instances", function="quick",
                                          state="idle") == count, 120)
    assert daemon.stop() == 0
    stopped = _stopped_lines(daemon, "quick")
    assert len(stopped) == count, daemon.log()[-3000:]
    ended = [re.search(r" ended=(.+)$", line) for line in stopped]
    assert [m.group(1) if m else None for m in ended] == ["exited"] * count, stopped
