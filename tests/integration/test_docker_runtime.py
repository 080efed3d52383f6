"""The builder and the runtime manager against the real Docker engine, without the daemon."""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from lambdad import labels
from lambdad.build import BuildSpec, BuiltImage, ImageBuilder
from lambdad.errors import BuildFailed, InstanceFailed
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.runtime.docker_backend import DockerBackend
from lambdad.runtime.invocation import InvocationRequest
from lambdad.runtime.manager import RuntimeManager

pytestmark = pytest.mark.docker

RUNTIME_IMAGE = "lambda-runtime/python:3.11"


@pytest.fixture
def socket_root() -> Iterator[Path]:
    """Instance socket folders; short, because Unix socket paths are limited to 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="it-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon_id() -> Iterator[str]:
    ident = f"it-{secrets.token_hex(4)}"
    yield ident
    client = docker.from_env()
    for container in _owned(client, ident):
        container.remove(force=True)
    for image in client.images.list(filters={"label": f"{labels.DAEMON}={ident}"}):
        client.images.remove(image.id, force=True)


def _owned(client: docker.DockerClient, daemon_id: str) -> list[object]:
    return list(client.containers.list(all=True, filters={"label": f"{labels.DAEMON}={daemon_id}"}))


def _archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


async def _build(builder: ImageBuilder, spec: BuildSpec) -> tuple[BuiltImage, list[str]]:
    lines: list[str] = []
    built = None
    async for item in builder.build(spec):
        if isinstance(item, BuiltImage):
            built = item
        else:
            lines.append(item)
    assert built is not None
    return built, lines


def _version(name: str, image: str, image_id: str, **config: object) -> FunctionVersion:
    return FunctionVersion(
        function=name, number=1, image=image, image_id=image_id,
        config=FunctionConfig(**config),  # type: ignore[arg-type]
        code_sha256="0" * 64, code_size=1, created_at=datetime.now(UTC),
    )


def test_instances_run_hardened_and_answer_over_their_socket(
    tmp_path: Path, daemon_id: str, socket_root: Path
) -> None:
    client = docker.from_env()

    async def scenario() -> None:
        builder = ImageBuilder(client, runtime_image=RUNTIME_IMAGE, spool_dir=tmp_path / "spool",
                               daemon_id=daemon_id)
        archive = _archive(tmp_path / "code.tgz", {
            "handler.py": "import os\n\ndef handler(event, context):\n"
                          "    return {'uid': os.getuid(), 'env': os.environ.get('COLOUR')}\n",
        })
        image = f"lambda-it-{daemon_id}/hard:v1"
        built, lines = await _build(builder,
                                    BuildSpec("hard", 1, image, archive, "python3.11", "gzip"))
        assert any("Successfully tagged" in line for line in lines)
        version = _version("hard", image, built.image_id, memory_mb=96, env={"COLOUR": "blue"})
        backend = DockerBackend(client, daemon_id=daemon_id)
        runtime = RuntimeManager(backend, instances_dir=socket_root)
        instance = await runtime.start_instance(version)
        runtime.activate(version, [instance])
        try:
            attrs = client.containers.get(instance.container_id).attrs
            host = attrs["HostConfig"]
            assert attrs["Config"]["User"] == "10001:10001"
            assert host["CapDrop"] == ["ALL"]
            assert host["SecurityOpt"] == ["no-new-privileges"]
            assert host["ReadonlyRootfs"] is True
            assert host["Memory"] == 96 * 1024 * 1024
            assert host["MemorySwap"] == 96 * 1024 * 1024
            assert host["PidsLimit"] == 256
            assert host["NetworkMode"] == "none"
            assert (host["CpuQuota"], host["CpuPeriod"]) == (100_000, 100_000)  # 1 CPU
            assert "/tmp" in host["Tmpfs"]
            assert not host.get("PortBindings")
            assert not attrs["NetworkSettings"]["Ports"]
            assert attrs["Config"]["Labels"][labels.FUNCTION] == "hard"
            assert attrs["Config"]["Labels"][labels.DAEMON] == daemon_id

            response = await runtime.invoke(InvocationRequest(
                function="hard", method=b"POST", target=b"/", headers=[],
                body=b"{}", invocation_type="direct", request_id="r-1",
            ))
            assert response.status == 200
            assert await response.read() == b'{"uid": 10001, "env": "blue"}'
            assert response.cold_start is False and response.start == "warm"
        finally:
            await runtime.shutdown()
        assert _owned(client, daemon_id) == []

    asyncio.run(scenario())


def test_failed_build_leaves_no_tag(tmp_path: Path, daemon_id: str) -> None:
    client = docker.from_env()

    async def scenario() -> None:
        builder = ImageBuilder(client, runtime_image=RUNTIME_IMAGE, spool_dir=tmp_path,
                               daemon_id=daemon_id)
        dockerfile = f"FROM {RUNTIME_IMAGE}\nRUN exit 3\n"
        archive = _archive(tmp_path / "code.tgz", {"Dockerfile": dockerfile})
        image = f"lambda-it-{daemon_id}/broken:v1"
        with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
            await _build(builder, BuildSpec("broken", 1, image, archive, "docker", "gzip"))
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(image)

    asyncio.run(scenario())


def test_instance_that_exits_at_start_is_reported_with_its_logs(
    tmp_path: Path, daemon_id: str, socket_root: Path
) -> None:
    client = docker.from_env()

    async def scenario() -> None:
        builder = ImageBuilder(client, runtime_image=RUNTIME_IMAGE, spool_dir=tmp_path,
                               daemon_id=daemon_id)
        archive = _archive(tmp_path / "code.tgz", {"handler.py": "raise SystemExit('no')\n"})
        image = f"lambda-it-{daemon_id}/dies:v1"
        built, _ = await _build(builder, BuildSpec("dies", 1, image, archive, "python3.11", "gzip"))
        runtime = RuntimeManager(DockerBackend(client, daemon_id=daemon_id),
                                 instances_dir=socket_root)
        # The runtime opens its socket first; its zygote imports the handler at POST /init
        # and a SystemExit there is an init error the supervisor reports with its message.
        with pytest.raises(InstanceFailed, match=r"dies v1 failed to initialize: "
                           r"Runtime\.ImportModuleError: Unable to import module 'handler': no"):
            await runtime.start_instance(_version("dies", image, built.image_id))
        assert _owned(client, daemon_id) == []

    asyncio.run(scenario())


def test_cell_limits_update_and_pause(socket_root: Path, daemon_id: str) -> None:
    """The backend's stem-cell calls on the real engine: a generic cell, a class change
    by docker update, and the freezer."""
    from lambdad.runtime.cells import CellClass

    client = docker.from_env()
    backend = DockerBackend(client, daemon_id=daemon_id)
    socket_dir, code_dir = socket_root / "s", socket_root / "c"
    socket_dir.mkdir(mode=0o777)
    socket_dir.chmod(0o777)
    for sub in ("task", "deps"):
        (code_dir / sub).mkdir(parents=True)
    small = CellClass(128, "none", 1.0, 256)
    container_id = backend.start_cell(small, "0123456789ab", socket_dir, code_dir,
                                      RUNTIME_IMAGE)
    attrs = client.api.inspect_container(container_id)
    assert attrs["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
    assert mounts == {"/run/lambda": True, "/var/task": False, "/opt/lambda/deps": False}
    assert attrs["Config"]["Labels"][labels.CELL] == small.label()
    assert "lambda.function" not in attrs["Config"]["Labels"]
    backend.update_limits(container_id, CellClass(256, "none", 0.5, 256))
    host = client.api.inspect_container(container_id)["HostConfig"]
    assert host["Memory"] == 256 * 1024 * 1024 and host["CpuQuota"] == 50_000
    backend.pause(container_id)
    assert client.api.inspect_container(container_id)["State"]["Paused"] is True
    backend.unpause(container_id)
    assert client.api.inspect_container(container_id)["State"]["Paused"] is False
    backend.rename(container_id, "lambda-greet-v3-0123456789ab")
    assert client.containers.get(container_id).name == "lambda-greet-v3-0123456789ab"
    (managed,) = [m for m in backend.managed() if m.id == container_id]
    # Whose it is comes from the cell's owner file (the runtime manager's), not from Docker.
    assert (managed.function, managed.instance, managed.cell) == ("", "0123456789ab", True)
    assert (backend.memory_bytes(container_id) or 0) > 0
    backend.remove(container_id, grace=0)
