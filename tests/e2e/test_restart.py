"""State survives restarts and kill -9; nothing is orphaned; one daemon per state folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.support.daemon import FUNCTIONS, ROOT, Lambdad

pytestmark = pytest.mark.slow


def test_sigterm_stops_instances_and_restart_serves_again(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    daemon.deploy("greet", "--name", "greet")
    assert daemon.stop(signal.SIGTERM) == 0
    assert "lambdad stopped" in daemon.log()
    assert daemon.containers() == []
    assert not daemon.socket_path.exists()
    daemon.start()
    assert daemon.http("greet", "/?name=again").json() == {"message": "Hello, again!"}
    assert len(daemon.containers("greet")) == 1


def test_kill_9_then_restart_reconciles(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    daemon.deploy("greet", "--name", "greet")
    daemon.deploy("calculator")
    before = {c.id for c in daemon.containers()}
    assert len(before) == 2
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert "reconciled: removed 2 container(s)" in daemon.log()
    listed = daemon.cli("list", "-o", "json").json()
    assert [(f["name"], f["version"]) for f in listed] == [("calculator", 1), ("greet", 1)]
    assert daemon.http("greet", "/?name=x").status == 200
    after = daemon.containers()
    assert len(after) == 2 and not before & {c.id for c in after}


def test_a_second_daemon_on_the_same_state_is_refused(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    second = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert second.returncode == 1
    assert "another lambdad is already running" in second.stderr
    assert daemon.cli("list").code == 0  # the first one is untouched


def test_kill_9_during_a_deploy_leaves_all_or_nothing(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    deploy = subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "deploy", str(FUNCTIONS / "greet"), "--name", "half"],
        env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert deploy.stderr is not None
    deadline = time.monotonic() + 60
    for line in deploy.stderr:
        if line.startswith("[2/3]") or time.monotonic() > deadline:
            break
    daemon.stop(signal.SIGKILL)
    deploy.wait(timeout=30)
    assert deploy.returncode != 0
    daemon.start()
    get = daemon.cli("get", "half", "-o", "json")
    if get.code == 0:  # the row was written: the version must be complete and serving
        assert daemon.http("half", "/?name=x").status == 200
        assert len(daemon.images("half")) == 1
    else:
        assert get.code == 4
        assert daemon.images("half") == []
        assert daemon.containers("half") == []
    # The daemon is healthy either way: a fresh deploy of the same name works.
    daemon.deploy("greet", "--name", "half")
    assert daemon.http("half", "/?name=y").json() == {"message": "Hello, y!"}
