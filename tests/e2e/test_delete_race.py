"""Delete and deploy at once, through the real CLI: never a version without its build.

A delete that does not hold the function's lock lets a concurrent deploy number its
version after the deleted rows (v1 again); the delete's clean-up then removes that
new version's artifact, and the function is live without its code.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.daemon import FUNCTIONS, ROOT, Lambdad, wait_for

NAME = "racer"


def _start(daemon: Lambdad, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lambdactl", *args], env=daemon.env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_consistent(daemon: Lambdad) -> str:
    """Either the function is gone with everything it had, or its active version has its
    artifact and answers; returns which."""
    got = daemon.cli("get", NAME, "-o", "json")
    if got.code == 4:
        assert wait_for(lambda: not daemon.containers(NAME), 30), "instances left behind"
        assert not daemon.images(NAME), "images left behind"
        assert not (daemon.state_dir / "artifacts" / NAME).exists(), "artifacts left behind"
        return "deleted"
    assert got.code == 0, got.stderr
    version = got.json()["version"]
    artifact = daemon.state_dir / "artifacts" / NAME / f"v{version}" / "task"
    assert (artifact / "handler.py").is_file(), f"v{version} is live without its artifact"
    assert not daemon.images(NAME), "a standard runtime's version has no image"
    invoked = daemon.cli("invoke", NAME, "--data", '{"name": "race"}', "-o", "json")
    assert invoked.code == 0, invoked.stderr
    return f"v{version}"


@pytest.mark.slow
def test_delete_racing_a_deploy_leaves_a_whole_function_or_none(lambdad: Lambdad) -> None:
    outcomes = []
    # Offsets of the delete after the deploy's start (negative: before). The CLI starts
    # in about the same time for both; the deploy then packs and uploads, so the
    # dangerous interleaving (delete first, deploy taking the lock while the delete
    # cleans up) is around 0.
    for offset in (-0.3, -0.15, 0.0, 0.1, 0.2, 0.3):
        if lambdad.cli("get", NAME).code == 4:
            lambdad.deploy("greet", "--name", NAME)
        assert lambdad.cli("invoke", NAME).code == 0  # a warm instance for delete to stop
        first, second = (("delete", NAME), ("deploy", str(FUNCTIONS / "greet"), "--name", NAME))
        if offset >= 0:
            first, second = second, first
        started = [_start(lambdad, *first)]
        time.sleep(abs(offset))
        started.append(_start(lambdad, *second))
        delete, deploy = started if offset < 0 else reversed(started)
        _, deleted_err = delete.communicate(timeout=180)
        _, deployed_err = deploy.communicate(timeout=180)
        assert deploy.returncode == 0, deployed_err
        # Refused while a deploy holds the function (8), else done (0).
        assert delete.returncode in (0, 8), deleted_err
        outcomes.append((offset, delete.returncode, _check_consistent(lambdad)))
    print(outcomes)
