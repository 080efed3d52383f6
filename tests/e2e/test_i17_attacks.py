"""Attacks on issue 17's frozen instances and pre-warming, with a real lambdad, the real
CLI and Docker: a daemon stop or a kill -9 while a deploy pre-warms (nothing may be left
running, no half-switched version), and an instance a killed lambdad left frozen (adopted
as frozen: the gauge says so and the frozen memory bound counts it at once)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support import metrics
from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.functions import PREWARM_V1, hanging_prewarm, write_function

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_daemon_stop_during_a_prewarm_leaves_no_container(tmp_path: Path) -> None:
    """The deploy's starts are not any pool's: the daemon's stop must still cancel them
    and stop their containers, not leave them importing with nobody knowing of them."""
    with running_daemon("--start-timeout", "300") as daemon, \
            hanging_prewarm(daemon, tmp_path / "pws", "pwstop") as deploy:
        assert daemon.stop() == 0
        deploy.wait(timeout=30)
        assert deploy.returncode != 0, deploy.stderr
        # Every container of this daemon is gone with it: v1's, the cells, v2's.
        left = [(c.name, daemon.owner(c), c.status) for c in daemon.containers()]
        assert left == [], (left, daemon.log()[-3000:])
        # Started again: v1 is live, v2 was never recorded.
        daemon.start()
        assert daemon.http("pwstop").json() == "v1"
        assert [v["version"] for v in
                daemon.cli("versions", "pwstop", "-o", "json").json()] == [1]


def test_a_kill_during_a_prewarm_then_a_restart_leaves_v1_and_nothing_else(
    tmp_path: Path
) -> None:
    folder = tmp_path / "pwk"
    with running_daemon("--start-timeout", "300") as daemon, \
            hanging_prewarm(daemon, folder, "pwkill") as deploy:
        daemon.stop(signal.SIGKILL)
        deploy.wait(timeout=30)
        assert deploy.returncode != 0
        daemon.start()
        assert daemon.http("pwkill").json() == "v1"
        assert [v["version"] for v in
                daemon.cli("versions", "pwkill", "-o", "json").json()] == [1]
        assert wait_for(lambda: [daemon.owner(c) for c in daemon.containers("pwkill")]
                        == [("pwkill", 1)]), daemon.log()[-3000:]
        # A new deploy numbers v2 again and serves it.
        (folder / "handler.py").write_text(PREWARM_V1.replace("'v1'", "'v2'"))
        daemon.deploy(folder, "--prewarm", "2")
        assert daemon.http("pwkill").json() == "v2"


def test_a_deploy_cancelled_by_its_client_during_a_prewarm_leaves_v1_and_nothing_else(
    tmp_path: Path
) -> None:
    """lambdactl interrupted (Ctrl-C) while the new version imports: the call is cancelled,
    so are its starts; their containers go, v1 serves, v2 is never recorded."""
    with running_daemon("--start-timeout", "300") as daemon, \
            hanging_prewarm(daemon, tmp_path / "pwc", "pwcancel") as deploy:
        deploy.send_signal(signal.SIGINT)
        deploy.wait(timeout=30)
        assert deploy.returncode != 0
        assert wait_for(lambda: [daemon.owner(c) for c in daemon.containers("pwcancel")]
                        == [("pwcancel", 1)], timeout=30), daemon.log()[-3000:]
        assert daemon.http("pwcancel").json() == "v1"
        assert [v["version"] for v in
                daemon.cli("versions", "pwcancel", "-o", "json").json()] == [1]


FROZEN_HANDLER = "def handler(event, context):\n    return 'ok'\n"


def _paused(container: Any) -> bool:
    container.reload()
    return bool(container.attrs["State"]["Paused"])


def _instances(daemon: Lambdad, name: str, state: str) -> float:
    return metrics.sample(daemon, "lambdad_instances", function=name, state=state)


def test_an_instance_left_frozen_by_a_killed_daemon_is_adopted_frozen(tmp_path: Path) -> None:
    """A standard-runtime instance is paused only to be frozen, so one found paused after
    a kill -9 is a frozen instance: the gauge must say frozen (not an idle pause of a live
    instance), and the frozen memory bound must count it, not ignore it until its idle
    timeout has passed again after the restart."""
    manifest = ('name = "adoptfrozen"\nhandler = "handler.handler"\n'
                "[scaling]\nidle_timeout = 5\n")
    folder = write_function(tmp_path / "af", FROZEN_HANDLER, manifest)
    with running_daemon("--freeze-window", "600", "--frozen-memory-mb", "512") as daemon:
        daemon.deploy(folder)
        (container,) = daemon.containers("adoptfrozen")
        assert wait_for(lambda: _instances(daemon, "adoptfrozen", "frozen") == 1
                        and _paused(container), timeout=30)
        daemon.stop(signal.SIGKILL)
        # Restarted with a bound that no frozen instance fits in.
        daemon.extra_args += ["--frozen-memory-mb", "1"]
        daemon.start()
        assert "reconciled: adopted 1 instance(s)" in daemon.log()
        # At once, not once its idle timeout (5 s) has passed again.
        assert (_instances(daemon, "adoptfrozen", "frozen"),
                _instances(daemon, "adoptfrozen", "paused")) == (1, 0)
        # Over the bound: stopped, the longest frozen first (the only one).
        assert wait_for(lambda: daemon.containers("adoptfrozen") == [], timeout=30), \
            daemon.log()[-3000:]
        assert "frozen_memory_mb (1 MiB)" in daemon.log()
