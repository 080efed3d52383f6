"""requirements.txt on the real engine: compiled wheels for the runtime image's platform,
a clear error when none fits, and the build cache a redeploy resolves from."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, running_daemon
from tests.support.wheels import build_wheel, make_readable, public_folder


@pytest.fixture(scope="module")
def daemon() -> Iterator[Lambdad]:
    wheels = public_folder("lt-tagged-")
    arch = os.uname().machine
    # As PyPI tags a compiled package today: for glibc 2.17, not the image's 2.36.
    build_wheel(wheels, "compiledcore", "2.0", "def native():\n    return 'compiled'\n",
                tag=f"cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}")
    build_wheel(wheels, "muslonly", "1.0", "", tag=f"cp311-cp311-musllinux_1_2_{arch}")
    for version in ("1.0", "1.1"):
        build_wheel(wheels, "webframework", version, "", requires=("muslonly>=1",))
    make_readable(wheels)
    with running_daemon("--wheelhouse", str(wheels), "--cell-pool-size", "0",
                        remove=wheels) as started:
        yield started


def _function(tmp_path: Path, requirements: str) -> Path:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import compiledcore\n\ndef handler(event, context):\n"
        "    return {'from': compiledcore.native()}\n")
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_a_compiled_wheel_installs_and_a_redeploy_resolves_from_the_cache(
    daemon: Lambdad, tmp_path: Path,
) -> None:
    folder = _function(tmp_path, "compiledcore>=2\n")
    first = daemon.deploy(folder, "--name", "native")
    assert "wheels for CPython 3.11 on glibc" in first.stderr
    assert "from the build cache" not in first.stderr
    invoked = daemon.cli("invoke", "native")
    assert json.loads(invoked.stdout) == {"from": "compiled"}

    second = daemon.deploy(folder, "--name", "native")
    assert "1 package from the build cache" in second.stderr
    assert json.loads(daemon.cli("invoke", "native").stdout) == {"from": "compiled"}

    fresh = daemon.deploy(folder, "--name", "native", "--no-cache")
    assert "from the build cache" not in fresh.stderr
    assert "wheels for CPython 3.11 on glibc" in fresh.stderr
    # Another requirements.txt is another key.
    (folder / "requirements.txt").write_text("compiledcore==2.0\n")
    changed = daemon.deploy(folder, "--name", "native")
    assert "from the build cache" not in changed.stderr


def test_a_dependency_without_a_wheel_for_the_image_fails_the_deploy_by_name(
    daemon: Lambdad, tmp_path: Path,
) -> None:
    folder = _function(tmp_path, "webframework\n")
    result = daemon.cli("deploy", str(folder), "--name", "nowheel")
    assert result.code != 0
    # pip's own output streams first; the error the deploy ends with follows it.
    error = result.stderr.rsplit("ResolutionImpossible", 1)[-1]
    assert "no version of muslonly>=1 (needed by webframework 1." in error
    assert "has a wheel for CPython 3.11 on glibc 2." in error
    assert "conflicting" not in error
    assert daemon.cli("get", "nowheel").code != 0  # nothing half-deployed
