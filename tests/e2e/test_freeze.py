"""Frozen instead of gone (issue 17): an instance past its idle timeout is kept frozen
(docker pause) for the freeze window, thawed by the next request, stopped when the window
has passed or when the frozen instances hold more memory than the host's bound (the
longest frozen first), stopped properly on delete and daemon stop, adopted frozen after
a restart. Real Docker, real lambdad, real CLI and HTTP."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import metrics
from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.functions import write_function

pytestmark = pytest.mark.docker

# The container's hostname is its id: which container served, as the function sees it.
# BALLAST MiB written at import make an instance's memory known within a few MiB.
HANDLER = '''
import os, socket
BALLAST = bytearray(int(os.environ.get("BALLAST_MB", "0")) * 1024 * 1024)
for i in range(0, len(BALLAST), 4096):
    BALLAST[i] = 1

def handler(event, context):
    return {"host": socket.gethostname()}
'''


def _manifest(name: str, ballast_mb: int = 0) -> str:
    return (f'name = "{name}"\nhandler = "handler.handler"\n'
            f'[env]\nBALLAST_MB = "{ballast_mb}"\n'
            "[scaling]\nidle_timeout = 1\n")


def _deploy(daemon: Lambdad, tmp_path: Path, name: str, ballast_mb: int = 0) -> None:
    daemon.deploy(write_function(tmp_path / name, HANDLER, _manifest(name, ballast_mb)))


def _state(container_id: str) -> dict[str, Any] | None:
    """The container's State from docker inspect; None when it is gone."""
    try:
        state: dict[str, Any] = docker.from_env().api.inspect_container(container_id)["State"]
    except docker.errors.NotFound:
        return None
    return state


def _paused(container_id: str) -> bool:
    state = _state(container_id)
    return state is not None and bool(state["Paused"])


def _served(daemon: Lambdad, name: str) -> tuple[str, str]:
    """(the container that served a request, how its instance was got)."""
    response = daemon.http(name, "/")
    assert response.status == 200, response.body
    return response.json()["host"], response.headers["lambda-cold-start"]


def _container(daemon: Lambdad, name: str) -> str:
    (container,) = daemon.containers(name)
    return str(container.id)


def _events(container_id: str, since: float, action: str) -> list[float]:
    """When (epoch seconds) Docker reported `action` for the container since `since`."""
    found = docker.from_env().events(since=int(since), until=int(time.time()) + 2,
                                     decode=True, filters={"container": container_id,
                                                           "event": action})
    return [event["timeNano"] / 1e9 for event in found]


def _freezer_state(container_id: str) -> str:
    """The container's own cgroup v1 freezer state (this host's cgroupfs driver)."""
    return Path(f"/sys/fs/cgroup/freezer/docker/{container_id}/freezer.state").read_text().strip()


def _frozen(daemon: Lambdad, name: str) -> float:
    return metrics.sample(daemon, "lambdad_instances", function=name, state="frozen")


@pytest.fixture(scope="module")
def freezing() -> Iterator[Lambdad]:
    """Instances pause after 0.5 s idle and stay frozen 4 s past their idle timeout."""
    with running_daemon("--pause-after", "0.5", "--freeze-window", "4",
                        "--frozen-memory-mb", "512") as daemon:
        yield daemon


@pytest.mark.slow  # a window to wait out, or a daemon of its own
def test_an_idle_instance_is_frozen_thawed_by_the_next_request_then_stopped(
    freezing: Lambdad, tmp_path: Path
) -> None:
    daemon = freezing
    _deploy(daemon, tmp_path, "thaw")
    host, start = _served(daemon, "thaw")
    container = _container(daemon, "thaw")
    assert container.startswith(host) and start == "warm"
    # Idle for pause_after (0.5 s): paused.
    assert wait_for(lambda: _paused(container), timeout=10)
    # Past its idle timeout (1 s): frozen for the window instead of stopped.
    assert wait_for(lambda: _frozen(daemon, "thaw") == 1, timeout=10)
    assert _paused(container)
    assert metrics.sample(daemon, "lambdad_instances", function="thaw", state="idle") == 0
    # The next request thaws the same container: no new start, no import. It is thawed
    # through its cgroup freezer, not Docker: Docker's unpause event comes after the
    # answer (the settle, once idle), and Docker's view ends unpaused.
    since = time.time()
    host, start = _served(daemon, "thaw")
    answered = time.time()
    assert container.startswith(host) and start == "unpaused"
    assert _frozen(daemon, "thaw") == 0
    assert _served(daemon, "thaw") == (host, "warm")
    assert wait_for(lambda: not _paused(container), timeout=10)
    assert _events(container, since, "unpause")[0] > answered
    assert "settling a thawed instance failed" not in daemon.log()
    # Idle again: frozen again, and gone once the window (4 s) has passed.
    assert wait_for(lambda: _frozen(daemon, "thaw") == 1, timeout=10)
    assert wait_for(lambda: _state(container) is None, timeout=15)
    assert daemon.containers("thaw") == []
    assert "stopped after its idle timeout and freeze window" in daemon.log()
    host, start = _served(daemon, "thaw")  # from zero: a cold start again
    assert start in ("cell", "container") and not container.startswith(host)


def test_a_frozen_instance_stops_on_redeploy_and_with_its_function(
    freezing: Lambdad, tmp_path: Path
) -> None:
    daemon = freezing
    _deploy(daemon, tmp_path, "gone")
    first = _container(daemon, "gone")
    assert wait_for(lambda: _frozen(daemon, "gone") == 1, timeout=10)
    assert _paused(first)
    _deploy(daemon, tmp_path, "gone")  # a new version: the frozen old instance goes
    assert wait_for(lambda: _state(first) is None, timeout=10)
    second = _container(daemon, "gone")
    assert wait_for(lambda: _frozen(daemon, "gone") == 1, timeout=10)
    assert _paused(second)
    assert daemon.cli("delete", "gone").code == 0
    assert _state(second) is None  # thawed and stopped, not left frozen
    assert "could not remove an instance of gone" not in daemon.log()


@pytest.mark.slow  # a window to wait out, or a daemon of its own
def test_over_the_frozen_memory_bound_the_longest_frozen_stops_first(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Two frozen instances of about 70 MiB each (60 MiB of ballast and the runtime) and a
    bound of 100 MiB: one fits, both do not; the one frozen first is stopped."""
    with running_daemon("--pause-after", "0.5", "--freeze-window", "600",
                        "--frozen-memory-mb", "100") as daemon:
        _deploy(daemon, tmp_path, "older", ballast_mb=60)
        older = _container(daemon, "older")
        assert wait_for(lambda: _frozen(daemon, "older") == 1, timeout=10)
        _deploy(daemon, tmp_path, "newer", ballast_mb=60)  # idle from now: frozen later
        newer = _container(daemon, "newer")
        assert _state(older) is not None  # one frozen instance is within the bound
        assert wait_for(lambda: _state(older) is None, timeout=15), daemon.log()[-4000:]
        stops = [line for line in daemon.log().splitlines() if "frozen instance stopped" in line]
        assert wait_for(lambda: _frozen(daemon, "newer") == 1, timeout=10), stops
        assert _paused(newer), stops
        assert len(stops) == 1 and "function=older" in stops[0], stops
        assert "frozen_memory_mb (100 MiB)" in daemon.log()


@pytest.mark.slow  # a window to wait out, or a daemon of its own
def test_a_frozen_instance_is_adopted_frozen_after_a_restart(
    wheelhouse: Path, tmp_path: Path
) -> None:
    with running_daemon("--pause-after", "0.5", "--freeze-window", "600") as daemon:
        _deploy(daemon, tmp_path, "kept")
        container = _container(daemon, "kept")
        assert wait_for(lambda: _frozen(daemon, "kept") == 1 and _paused(container),
                        timeout=10)
        daemon.stop(signal.SIGKILL)  # leaves its instances as they are: frozen
        assert _paused(container)
        daemon.start()
        assert "reconciled: adopted 1 instance(s)" in daemon.log()
        assert _paused(container)  # adopted as it was, not thawed for nothing
        host, start = _served(daemon, "kept")
        assert container.startswith(host) and start == "unpaused"
        # Frozen again, the daemon's stop thaws and stops it: nothing is left frozen.
        assert wait_for(lambda: _frozen(daemon, "kept") == 1, timeout=20), \
            daemon.log()[-4000:]
        assert daemon.stop() == 0
        assert _state(container) is None


def test_a_directly_thawed_instance_stops_with_its_function_before_docker_caught_up(
    freezing: Lambdad, tmp_path: Path
) -> None:
    """Docker says Paused while it runs (thawed through its freezer, not settled yet):
    deleting the function still stops and removes it."""
    daemon = freezing
    _deploy(daemon, tmp_path, "quick")
    container = _container(daemon, "quick")
    assert wait_for(lambda: _frozen(daemon, "quick") == 1, timeout=10)
    assert _served(daemon, "quick")[1] == "unpaused"
    assert daemon.cli("delete", "quick").code == 0
    assert _state(container) is None
    assert "could not remove an instance of quick" not in daemon.log()


@pytest.mark.slow  # a daemon of its own
def test_killed_between_the_thaw_and_the_settle_the_restart_settles_it(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """lambdad killed -9 right after a direct thaw leaves a running container Docker
    calls paused (and `docker unpause` refuses: runc sees it running). The next run
    adopts it, serves from it, and brings Docker's view back."""
    with running_daemon("--pause-after", "0.5", "--freeze-window", "600") as daemon:
        _deploy(daemon, tmp_path, "torn")
        container = _container(daemon, "torn")
        assert wait_for(lambda: _frozen(daemon, "torn") == 1 and _paused(container),
                        timeout=10)
        assert _served(daemon, "torn")[1] == "unpaused"
        daemon.stop(signal.SIGKILL)
        assert _paused(container) and _freezer_state(container) == "THAWED"
        with pytest.raises(docker.errors.APIError, match="not paused"):
            docker.from_env().api.unpause(container)
        daemon.start()
        host, start = _served(daemon, "torn")
        assert container.startswith(host) and start == "unpaused"
        assert wait_for(lambda: not _paused(container), timeout=10), daemon.log()[-4000:]
        assert _freezer_state(container) == "THAWED"
        assert daemon.stop() == 0
        assert _state(container) is None


# A function that keeps computing once called: a thread spinning in its worker.
SPINNER = '''
import threading

def spin():
    while True:
        pass

def handler(event, context):
    if not any(t.name == "spin" for t in threading.enumerate()):
        threading.Thread(target=spin, name="spin", daemon=True).start()
    return {"ok": True}
'''


def _cpu_ns(container_id: str) -> int:
    return int(Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
               .read_text())


@pytest.mark.slow  # a daemon of its own
def test_adopted_after_a_kill_between_thaw_and_settle_it_does_not_run_while_counted_frozen(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Attack: lambdad killed -9 between a direct thaw and its settle leaves a running
    container Docker calls Paused. The next run adopted it as frozen (the gauge, the
    frozen memory bound) while it went on computing, for the whole freeze window unless
    a request came. Adopted, it is frozen in fact."""
    with running_daemon("--pause-after", "0.5", "--freeze-window", "600") as daemon:
        daemon.deploy(write_function(tmp_path / "spin", SPINNER, _manifest("spin")))
        assert daemon.http("spin", "/").status == 200  # the spinner starts
        container = _container(daemon, "spin")
        assert wait_for(lambda: _frozen(daemon, "spin") == 1 and _paused(container),
                        timeout=10)
        assert daemon.http("spin", "/").headers["lambda-cold-start"] == "unpaused"
        daemon.stop(signal.SIGKILL)  # before the settle (0.5 s idle)
        assert _paused(container) and _freezer_state(container) == "THAWED"
        daemon.start()
        assert _frozen(daemon, "spin") == 1
        before = _cpu_ns(container)
        time.sleep(1)
        spent_ms = (_cpu_ns(container) - before) / 1e6
        assert _freezer_state(container) == "FROZEN" and spent_ms < 50, spent_ms
        assert _paused(container)
        assert daemon.http("spin", "/").headers["lambda-cold-start"] == "unpaused"


@pytest.mark.slow  # a daemon of its own
def test_without_a_cgroup_mount_the_docker_api_thaws(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """lambdad in a mount namespace without the host's cgroup mounts (as in a container
    of its own): no freezer file to write, so the Docker API thaws, as before."""
    daemon = Lambdad(extra_args=["--pause-after", "0.5", "--freeze-window", "600"])
    daemon.command_prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'umount -l /sys/fs/cgroup && exec "$@"', "sh"]
    try:
        daemon.start()
        _deploy(daemon, tmp_path, "plain")
        container = _container(daemon, "plain")
        assert wait_for(lambda: _frozen(daemon, "plain") == 1 and _paused(container),
                        timeout=10)
        since = time.time()
        host, start = _served(daemon, "plain")
        answered = time.time()
        assert container.startswith(host) and start == "unpaused"
        assert not _paused(container)  # Docker unpaused it before the answer
        assert _events(container, since, "unpause")[0] < answered
        assert daemon.cli("delete", "plain").code == 0
        assert _state(container) is None
    finally:
        daemon.close()
