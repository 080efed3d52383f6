"""A deployer's Dockerfile is an attack on the host's disk, memory and time: an image
VOLUME must not become unbounded host disk that outlives the function, and a build that
never ends, eats memory, leaves an image over build_max_image_size or fills the Docker data
root below build_min_free_disk is stopped, failing the deploy and leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

BUILD_TIMEOUT = 12
BUILD_MEMORY_MIB = 160
MAX_IMAGE_MIB = 250  # the runtime image is about 112 MiB

VOLUME_HANDLER = '''
import os

def handler(event, context):
    written = 0
    try:
        with open("/data/fill", "wb") as out:
            while written < 200 * 1024 * 1024:
                out.write(b"x" * (1 << 20))
                out.flush()
                written += 1 << 20
    except OSError as exc:
        stopped = exc.strerror
    else:
        stopped = "no limit"
    os.remove("/data/fill")
    mounts = [line.split()[2] for line in open("/proc/mounts") if line.split()[1] == "/data"]
    return {"mib": written >> 20, "stopped": stopped, "fs": mounts}
'''


@pytest.fixture(scope="module")
def limited(wheelhouse: Path) -> Iterator[Lambdad]:
    daemon = Lambdad(extra_args=["--wheelhouse", str(wheelhouse),
                                 "--build-timeout", str(BUILD_TIMEOUT),
                                 "--build-memory", str(BUILD_MEMORY_MIB),
                                 "--build-max-image-size", str(MAX_IMAGE_MIB)])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def _dockerfile_function(folder: Path, dockerfile: str, handler: str | None = None) -> Path:
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "handler.py").write_text(handler or "def handler(e, c):\n    return 1\n")
    return folder


def _volumes(client: docker.DockerClient) -> set[str]:
    return {str(v.name) for v in client.volumes.list()}


def test_an_image_volume_is_a_bounded_tmpfs_and_leaves_no_volume(
    limited: Lambdad, tmp_path: Path,
) -> None:
    daemon = limited
    folder = _dockerfile_function(tmp_path / "vol", (
        "FROM lambda-runtime/python:3.11\n"
        "USER root\n"
        "RUN mkdir /data && chown 10001:10001 /data\n"
        "USER 10001\n"
        "VOLUME /data\n"
        "COPY handler.py /var/task/handler.py\n"), VOLUME_HANDLER)
    before = _volumes(daemon.docker)
    daemon.deploy(folder, "--name", "vol", "--timeout", "60")
    result = daemon.cli("invoke", "vol")
    assert result.code == 0, result.stderr
    filled = json.loads(result.stdout)
    # 64 MiB of tmpfs (memory, charged to the instance), not 200 MiB of host disk.
    assert filled["fs"] == ["tmpfs"] and filled["mib"] <= 64, filled
    assert filled["stopped"] == "No space left on device"
    (container,) = daemon.containers("vol")
    assert [m for m in container.attrs["Mounts"] if m["Type"] == "volume"] == []
    assert daemon.cli("delete", "vol", "--yes").code == 0
    assert wait_for(lambda: daemon.containers("vol") == [], 20)
    assert _volumes(daemon.docker) - before == set()


def _build_leftovers(client: docker.DockerClient, token: str) -> list[str]:
    """Containers (running or not) of a build step whose command holds `token`."""
    found = []
    for container in client.containers.list(all=True, ignore_removed=True):
        command = " ".join(container.attrs.get("Config", {}).get("Cmd") or [])
        if token in command:
            found.append(container.short_id)
    return found


def _layers(output: str) -> list[str]:
    return re.findall(r"^\s*---> ([0-9a-f]{12})\s*$", output, re.MULTILINE)


def _assert_nothing_left(daemon: Lambdad, name: str, token: str, output: str) -> None:
    assert daemon.images(name) == []
    assert daemon.cli("get", name).code == 4
    assert wait_for(lambda: _build_leftovers(daemon.docker, token) == [], 20), \
        _build_leftovers(daemon.docker, token)
    made = _layers(output)[1:]  # the first is the runtime image itself
    assert made, output
    for layer in made:
        with pytest.raises(docker.errors.ImageNotFound):
            daemon.docker.images.get(layer)
    assert list((daemon.state_dir / "spool").iterdir()) == []


def test_a_build_that_never_ends_is_stopped_at_the_build_timeout(
    limited: Lambdad, tmp_path: Path,
) -> None:
    token = secrets.token_hex(6)
    folder = _dockerfile_function(tmp_path / "forever", (
        "FROM lambda-runtime/python:3.11\n"
        f"RUN echo {token} > /tmp/layer-one\n"
        f"RUN echo {token} && sleep 100000\n"))
    started = time.monotonic()
    result = limited.cli("deploy", str(folder), "--name", "forever", timeout=BUILD_TIMEOUT + 60)
    assert result.code == 6, result.stderr
    assert f"did not finish within the build timeout of {BUILD_TIMEOUT} s" in result.stderr
    assert time.monotonic() - started < BUILD_TIMEOUT + 30
    _assert_nothing_left(limited, "forever", token, result.stderr)


def test_a_build_that_floods_its_output_is_stopped_and_its_output_capped(
    limited: Lambdad, tmp_path: Path,
) -> None:
    token = secrets.token_hex(6)
    folder = _dockerfile_function(tmp_path / "chatty", (
        "FROM lambda-runtime/python:3.11\n"
        f"RUN echo {token} > /tmp/layer-one\n"
        f"RUN while true; do echo {token} spam spam spam; done\n"))
    result = limited.cli("deploy", str(folder), "--name", "chatty", timeout=BUILD_TIMEOUT + 60)
    assert result.code == 6, result.stderr[-2000:]
    assert "did not finish within the build timeout" in result.stderr
    assert result.stderr.count("spam spam spam") < 2100
    assert "(further output is not shown)" in result.stderr
    _assert_nothing_left(limited, "chatty", token, result.stderr)


def test_a_build_step_over_the_build_memory_is_killed(limited: Lambdad, tmp_path: Path) -> None:
    token = secrets.token_hex(6)
    folder = _dockerfile_function(tmp_path / "hungry", (
        "FROM lambda-runtime/python:3.11\n"
        f"RUN echo {token} > /tmp/layer-one\n"
        f"RUN python3 -c \"x = b'{token[:1]}' * (640 * 1024 * 1024); print(len(x))\"\n"))
    result = limited.cli("deploy", str(folder), "--name", "hungry", timeout=BUILD_TIMEOUT + 60)
    assert result.code == 6, result.stderr
    assert "non-zero code: 137" in result.stderr
    assert f"more than the build memory of {BUILD_MEMORY_MIB} MiB" in result.stderr
    _assert_nothing_left(limited, "hungry", token, result.stderr)


def test_an_image_over_the_size_limit_is_refused_and_removed(
    limited: Lambdad, tmp_path: Path,
) -> None:
    token = secrets.token_hex(6)
    folder = _dockerfile_function(tmp_path / "big", (
        "FROM lambda-runtime/python:3.11\n"
        f"RUN echo {token} > /tmp/layer-one\n"
        "USER root\n"
        f"RUN echo {token} && head -c 200M /dev/zero > /big\n"
        "USER 10001\n"))
    result = limited.cli("deploy", str(folder), "--name", "big", timeout=BUILD_TIMEOUT + 60)
    assert result.code == 6, result.stderr
    assert f"more than the {MAX_IMAGE_MIB} MiB a build may produce (build_max_image_size); " \
        "it was removed" in result.stderr, result.stderr
    _assert_nothing_left(limited, "big", token, result.stderr)


def _docker_root_free(client: docker.DockerClient) -> tuple[str, int]:
    root = str(client.info()["DockerRootDir"])
    info = os.statvfs(root)
    return root, info.f_bavail * info.f_frsize


@pytest.fixture
def disk_floor(wheelhouse: Path) -> Iterator[tuple[Lambdad, int]]:
    """A daemon whose free-disk floor is 400 MiB below the Docker data root's free space
    now: a build that writes 1.5 GiB crosses it (other tests on the engine meanwhile only
    make that sooner)."""
    _, free = _docker_root_free(docker.from_env())
    floor_mib = (free >> 20) - 400
    daemon = Lambdad(extra_args=["--wheelhouse", str(wheelhouse), "--build-timeout", "90",
                                 "--build-min-free-disk", str(floor_mib)])
    try:
        daemon.start()
        yield daemon, floor_mib
    finally:
        daemon.close()


def test_a_build_that_fills_the_docker_disk_is_stopped_at_the_floor(
    disk_floor: tuple[Lambdad, int], tmp_path: Path,
) -> None:
    daemon, floor_mib = disk_floor
    token = secrets.token_hex(6)
    folder = _dockerfile_function(tmp_path / "filler", (
        "FROM lambda-runtime/python:3.11\n"
        f"RUN echo {token} > /tmp/layer-one\n"
        "USER root\n"
        # The sleep keeps the step running: it is the watchdog, not the end of the step,
        # that must stop it.
        f"RUN echo {token} && head -c 1536M /dev/zero > /big && sleep 120\n"))
    result = daemon.cli("deploy", str(folder), "--name", "filler", timeout=180)
    assert result.code == 6, result.stderr
    assert "image build stopped: the Docker data root" in result.stderr, result.stderr
    assert f"less than the {floor_mib} MiB builds must leave (build_min_free_disk)" \
        in result.stderr, result.stderr
    _assert_nothing_left(daemon, "filler", token, result.stderr)
    # The step's container and its 1.5 GiB went with the build.
    assert wait_for(lambda: _docker_root_free(daemon.docker)[1] >> 20 > floor_mib, 30)
