"""Standard-runtime versions without an image of their own, end to end: a deploy makes no
image, the fallback container runs the shared runtime image with the version's artifact
mounted read-only (the function cannot change its code), a version an earlier lambdad
built an image for is still served after the upgrade (restart, rollback), and a delete
leaves no image, artifact or container behind."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from lambdad.build import BuildSpec, BuiltImage, ImageBuilder, tarball
from tests.support.daemon import FUNCTIONS, Lambdad, running_daemon

pytestmark = pytest.mark.slow

RUNTIME_IMAGE = "lambda-runtime/python:3.11"

# Tries to change its own code and deps every way a process can, from inside the
# container. Each attempt's errno name (or "done") is returned.
ATTACKER = '''
import errno, os

def _try(fn):
    try:
        fn()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def _write(path, data=b"pwned = True\\n"):
    with open(path, "ab") as out:
        out.write(data)

def handler(event, context):
    here = os.path.dirname(os.path.abspath(__file__))
    deps = "/opt/lambda/deps"
    return {
        "task_root": here,
        "append": _try(lambda: _write(os.path.join(here, "handler.py"))),
        "create": _try(lambda: _write(os.path.join(here, "new.py"))),
        "create_deps": _try(lambda: _write(os.path.join(deps, "sitecustomize.py"))),
        "mkdir": _try(lambda: os.mkdir(os.path.join(here, "pkg"))),
        "unlink": _try(lambda: os.unlink(os.path.join(here, "lambda.toml"))),
        "rename": _try(lambda: os.rename(os.path.join(here, "lambda.toml"),
                                         os.path.join(here, "x.toml"))),
        "chmod": _try(lambda: os.chmod(os.path.join(here, "handler.py"), 0o777)),
        "symlink": _try(lambda: os.symlink("/", os.path.join(here, "root"))),
        "utime": _try(lambda: os.utime(os.path.join(here, "handler.py"), (0, 0))),
        "mounts": [line.split()[1:4] for line in open("/proc/self/mounts")
                   if line.split()[1] in ("/var/task", "/opt/lambda/deps")],
    }
'''


def _folder(path: Path, source: str, *, env: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "handler.py").write_text(source)
    (path / "lambda.toml").write_text(
        f'handler = "handler.handler"\n{env}\n')
    return path


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_a_standard_deploy_makes_no_image_and_a_delete_leaves_nothing(
        lambdad: Lambdad, tmp_path: Path) -> None:
    deployed = lambdad.deploy("greet", "--name", "noimage")
    assert "Successfully tagged" not in deployed.stderr
    assert "(code and wheels, no image)" in deployed.stderr
    assert lambdad.images("noimage") == []
    assert lambdad.http("noimage", "/?name=A").json() == {"message": "Hello, A!"}
    configured = lambdad.cli("config", "noimage", "--memory", "192")
    assert configured.code == 0, configured.stderr
    assert lambdad.http("noimage", "/?name=B").json() == {"message": "Hello, B!"}
    listed = lambdad.cli("versions", "noimage", "-o", "json").json()
    assert [(v["version"], v["image"], v["image_id"]) for v in listed] == [
        (1, "", ""), (2, "", "")]
    assert lambdad.images("noimage") == []
    shown = lambdad.cli("get", "noimage")
    assert shown.code == 0 and "(runtime image)" in shown.stdout, shown.stdout
    artifacts = lambdad.state_dir / "artifacts" / "noimage"
    assert sorted(os.listdir(artifacts)) == ["v1", "v2"]

    deleted = lambdad.cli("delete", "noimage", "--yes")
    assert deleted.code == 0, deleted.stderr
    assert not artifacts.exists()
    assert lambdad.containers("noimage") == []
    assert lambdad.images("noimage") == []


def test_the_fallback_container_mounts_the_code_read_only(
        lambdad: Lambdad, tmp_path: Path) -> None:
    """TZ is read at process start, so this function never takes a stem cell: its
    instances are containers of the runtime image with the artifact bound in."""
    folder = _folder(tmp_path / "attacker", ATTACKER, env='[env]\nTZ = "Europe/Paris"')
    deployed = lambdad.deploy(folder, "--name", "attacker")
    assert "Starting instance (container)... Done." in deployed.stderr
    assert lambdad.images("attacker") == []
    [container] = lambdad.containers("attacker")
    runtime_id = lambdad.docker.images.get(RUNTIME_IMAGE).id
    assert container.attrs["Image"] == runtime_id
    artifact = lambdad.state_dir / "artifacts" / "attacker" / "v1"
    binds = {m["Destination"]: (m["Source"], m["RW"]) for m in container.attrs["Mounts"]}
    assert binds["/var/task"] == (str(artifact / "task"), False)
    assert binds["/opt/lambda/deps"] == (str(artifact / "deps"), False)
    before = _tree(artifact)

    response = lambdad.http("attacker")
    assert response.status == 200, response.body
    assert response.headers["lambda-cold-start"] in ("warm", "container")
    found = response.json()
    assert found["task_root"] == "/var/task"
    for attempt in ("append", "create", "create_deps", "mkdir", "unlink", "rename", "chmod",
                    "symlink", "utime"):
        assert found[attempt] in ("EROFS", "EACCES", "EPERM"), (attempt, found)
    assert sorted(m[0] for m in found["mounts"]) == ["/opt/lambda/deps", "/var/task"]
    assert all("ro" in m[2].split(",") for m in found["mounts"]), found["mounts"]
    assert _tree(artifact) == before
    assert lambdad.cli("delete", "attacker", "--yes").code == 0


def _legacy_image(daemon: Lambdad, tmp_path: Path, name: str, source: str) -> tuple[str, str]:
    """The image lambdad built for a standard-runtime version before issue 16 (FROM the
    runtime image, the code COPYed in, lambdad's labels), built by that same code path."""
    folder = _folder(tmp_path / "legacy-image", source)
    archive = tmp_path / "legacy.tar"
    with tarfile.open(archive, "w") as tar:
        for member in ("handler.py", "lambda.toml"):
            data = (folder / member).read_bytes()
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    summary = tarball.validate(archive)
    builder = ImageBuilder(daemon.docker, runtime_image=RUNTIME_IMAGE,
                           spool_dir=tmp_path / "spool", daemon_id=daemon.daemon_id)
    image = f"{daemon.image_prefix}/{name}:v1"
    spec = BuildSpec(function=name, version=1, image=image, archive=archive,
                     runtime="python3.11", archive_format=summary.format)

    async def build() -> BuiltImage:
        async for item in builder.build(spec):
            if isinstance(item, BuiltImage):
                return item
        raise AssertionError("the build made no image")

    built = asyncio.run(build())
    return built.image, built.image_id


def test_an_image_based_version_of_an_earlier_lambdad_keeps_working(tmp_path: Path) -> None:
    """An upgrade finds versions with images of their own (and artifacts recorded against
    an earlier runtime image): they are served from their image after the restart, after
    a rollback to them, and their image goes with the function."""
    source = "def handler(event, context):\n    return {'from': %r}\n"
    with running_daemon() as daemon:
        daemon.deploy(_folder(tmp_path / "legacy", source % "artifact"), "--name", "legacy")
        daemon.stop()
        # What the earlier lambdad left: the row names its image, built with the code
        # that the image (not the artifact) serves, and the artifact was built on an
        # earlier runtime image, so no stem cell may take the version.
        image, image_id = _legacy_image(daemon, tmp_path, "legacy", source % "image")
        with sqlite3.connect(daemon.state_dir / "lambda.db") as db:
            db.execute("UPDATE versions SET image = ?, image_id = ? WHERE function = 'legacy'",
                       (image, image_id))
        artifact = daemon.state_dir / "artifacts" / "legacy" / "v1"
        (artifact / "runtime-image").write_text("sha256:" + "0" * 64 + "\n")
        daemon.start()

        response = daemon.http("legacy")
        assert response.status == 200, response.body
        assert response.json() == {"from": "image"}
        assert response.headers["lambda-cold-start"] == "container"
        [container] = daemon.containers("legacy")
        assert container.attrs["Image"] == image_id
        assert [i.id for i in daemon.images("legacy")] == [image_id]

        daemon.deploy(_folder(tmp_path / "legacy", source % "v2"), "--name", "legacy")
        assert daemon.http("legacy").json() == {"from": "v2"}
        assert daemon.cli("rollback", "legacy", "--to", "1").code == 0
        assert daemon.http("legacy").json() == {"from": "image"}
        daemon.stop()
        daemon.start()  # reconcile and orphan pruning keep what v1 needs
        assert [i.id for i in daemon.images("legacy")] == [image_id]
        assert daemon.http("legacy").json() == {"from": "image"}
        assert daemon.cli("rollback", "legacy", "--to", "2").code == 0
        assert daemon.http("legacy").json() == {"from": "v2"}

        assert daemon.cli("delete", "legacy", "--yes").code == 0
        assert daemon.images("legacy") == []
        assert not (daemon.state_dir / "artifacts" / "legacy").exists()
        assert daemon.containers("legacy") == []


def test_a_function_without_an_image_survives_a_restart(fresh_lambdad: Lambdad) -> None:
    """No image to start from after a restart: the artifact is enough (a cell or a new
    container of the runtime image), and orphan pruning at start keeps it."""
    lambdad = fresh_lambdad
    lambdad.deploy(FUNCTIONS / "greet", "--name", "restarted")
    lambdad.stop()
    lambdad.start()
    response = lambdad.http("restarted", "/?name=C")
    assert response.status == 200 and response.json() == {"message": "Hello, C!"}
    assert (lambdad.state_dir / "artifacts" / "restarted" / "v1" / "task").is_dir()
    assert lambdad.images() == []
    assert json.loads(lambdad.cli("get", "restarted", "-o", "json").stdout)["image"] == ""
    assert lambdad.cli("delete", "restarted", "--yes").code == 0
