"""State survives restarts and kill -9; nothing is orphaned; one daemon per state folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemon import FUNCTIONS, ROOT, Lambdad, wait_for

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


def test_kill_9_then_restart_adopts_healthy_instances_and_removes_the_rest(
    fresh_lambdad: Lambdad,
) -> None:
    daemon = fresh_lambdad
    daemon.deploy("greet", "--name", "greet")  # no class in use yet: a new container
    assert wait_for(lambda: len(_generic_cells(daemon)) == 2)
    daemon.deploy("calculator")  # specializes a stem cell
    # Owned once its code loaded; renamed for `docker ps` a moment after (RENAME_DELAY_S).
    assert wait_for(lambda: [c for c in daemon.containers("calculator")
                             if c.name.startswith("lambda-calc")])
    greet = daemon.containers("greet")[0]
    calculator = daemon.containers("calculator")[0]
    assert "lambda.cell" in calculator.labels
    daemon.stop(signal.SIGKILL)
    greet.stop(timeout=1)  # died while the daemon was away: not adoptable
    stray = daemon.state_dir / "i" / "0123456789ab"
    stray.mkdir()
    daemon.start()
    # Adopted: the specialized cell. Removed: greet's dead container and the 2 generic cells.
    assert "reconciled: adopted 1 instance(s), removed 3 container(s)" in daemon.log()
    assert not stray.exists()
    listed = daemon.cli("list", "-o", "json").json()
    assert [(f["name"], f["version"]) for f in listed] == [("calculator", 1), ("greet", 1)]
    served = daemon.http("calculator", "/?op=add&a=1&b=1")
    assert served.status == 200 and served.headers["lambda-cold-start"] == "warm"
    assert served.json()["result"] == 2
    assert [c.id for c in daemon.containers("calculator")] == [calculator.id]  # adopted
    assert daemon.http("greet", "/?name=x").json() == {"message": "Hello, x!"}
    assert len(daemon.containers("greet")) == 1
    assert daemon.containers("greet")[0].id != greet.id
    # One folder per container, nothing stale (compared once the pool's refill settled:
    # a starting cell has its folder a moment before its container).
    assert wait_for(lambda: sorted(p.name for p in (daemon.state_dir / "i").iterdir()) == sorted(
        c.labels["lambda.instance"] for c in daemon.containers()
    ))


def test_kill_9_adopts_a_container_only_by_the_owner_file_written_once_its_code_loaded(
    fresh_lambdad: Lambdad,
) -> None:
    """A standard runtime's own container whose lambdad died before its POST /init ended
    answers on its socket but never loaded its code (NotInitialized to every request).
    Such a container has no owner file: the next lambdad replaces it. The gap itself
    cannot be hit from outside, so the file of a loaded one is deleted by hand."""
    daemon = fresh_lambdad
    daemon.deploy("greet", "--name", "greet")  # no class in use yet: a new container
    [greet] = daemon.containers("greet")
    assert "lambda.cell" not in greet.labels
    owner = daemon.state_dir / "c" / greet.labels["lambda.instance"] / "owner"
    assert owner.read_text().startswith("greet\n1\n")  # then the version's stamp
    daemon.stop(signal.SIGKILL)
    daemon.start()  # with its owner file: adopted, serves at once
    last = [line for line in daemon.log().splitlines() if "reconciled: adopted" in line][-1]
    assert "reconciled: adopted 1 instance(s)" in last
    served = daemon.http("greet", "/?name=a")
    assert served.status == 200 and served.headers["lambda-cold-start"] == "warm"
    assert [c.id for c in daemon.containers("greet")] == [greet.id]
    daemon.stop(signal.SIGKILL)
    owner.unlink()  # as if killed between its socket opening and its code loading
    daemon.start()
    last = [line for line in daemon.log().splitlines() if "reconciled: adopted" in line][-1]
    assert "reconciled: adopted 0 instance(s)" in last
    assert not owner.parent.exists()
    served = daemon.http("greet", "/?name=b")
    assert served.status == 200 and served.json() == {"message": "Hello, b!"}
    [replaced] = daemon.containers("greet")
    assert replaced.id != greet.id


def _generic_cells(daemon: Lambdad) -> list[object]:
    return [c for c in daemon.containers()
            if "lambda.cell" in c.labels and daemon.owner(c)[0] is None
            and c.status == "running"]




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
        assert (daemon.state_dir / "artifacts" / "half" / "v1" / "task").is_dir()
    else:
        assert get.code == 4
        assert not (daemon.state_dir / "artifacts" / "half").exists()
        assert daemon.containers("half") == []
    assert daemon.images("half") == []  # a standard runtime's version has no image
    # The daemon is healthy either way: a fresh deploy of the same name works.
    daemon.deploy("greet", "--name", "half")
    assert daemon.http("half", "/?name=y").json() == {"message": "Hello, y!"}


def test_sigterm_drains_in_flight_requests_then_exits_0(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    folder = tmp_path / "slowpoke"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import time\n\ndef handler(event, context):\n    time.sleep(1.5)\n    return 'finished'\n"
    )
    daemon.deploy(folder, "--name", "slowpoke")
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(daemon.http, "slowpoke")
        time.sleep(0.5)
        assert daemon.stop(signal.SIGTERM) == 0
        response = in_flight.result()
    assert response.status == 200 and response.json() == "finished"
    assert daemon.containers() == []


@pytest.mark.parametrize("point", ["received", "built", "started", "recorded"])
def test_a_deploy_killed_at_any_step_leaves_all_or_nothing(
    fresh_lambdad: Lambdad, point: str
) -> None:
    """LAMBDAD_FAULT makes the daemon die like kill -9 at a named step of a deploy."""
    daemon = fresh_lambdad
    daemon.deploy("greet", "--name", "steps")  # version 1 is live before the crash
    daemon.stop()
    daemon.start_env = {"LAMBDAD_FAULT": point}
    daemon.start()
    crashed = daemon.cli("deploy", str(FUNCTIONS / "calculator"), "--name", "steps")
    assert crashed.code != 0
    assert daemon.process is not None and daemon.process.wait(timeout=30) == 137
    daemon.start_env = {}
    daemon.start()
    versions = daemon.cli("versions", "steps", "-o", "json").json()
    numbers = [v["version"] for v in versions]
    if point == "recorded":  # the row was committed: version 2 exists completely
        assert numbers == [1, 2]
        assert daemon.http("steps", "/?op=add&a=1&b=2").json()["result"] == 3
    else:  # nothing of version 2 may remain
        assert numbers == [1]
        assert daemon.http("steps", "/?name=x").json() == {"message": "Hello, x!"}
    artifacts = daemon.state_dir / "artifacts" / "steps"
    assert sorted(p.name for p in artifacts.iterdir()) == [f"v{n}" for n in numbers]
    assert daemon.images("steps") == []
    live = {str(daemon.owner(c)[1]) for c in daemon.containers("steps")}
    assert live <= {str(numbers[-1])}
    assert list((daemon.state_dir / "spool").iterdir()) == []
    # and the next deploy gets the next number
    daemon.deploy("greet", "--name", "steps")
    assert daemon.cli("versions", "steps", "-o", "json").json()[-1]["version"] == numbers[-1] + 1
