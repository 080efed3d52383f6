"""A deployer's requirements against the build side of issue 14, as attacks on the host.

- A wheel's metadata (Requires-Dist, anyone can publish one to PyPI) names a dependency
  that no version satisfies, so pip reports a conflict; lambdad then asks pip about that
  dependency alone. `dep===/../../../code/evil` passes pip's requirement parser, but pip
  takes a requirement with a `/` in it as a path: the check would build the deployer's own
  uploaded folder, running its build backend on the host.
- The build cache is bounded by `build_cache_size`; entries of empty files and folders
  (a wheel of thousands of them) must count for the disk they take.

Real daemon, real CLI, real pip, real Docker engine; the wheels stand for packages on
the operator's index.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad
from tests.support.wheels import build_wheel

pytestmark = pytest.mark.docker

CACHE_MIB = 1
# Empty modules, each in its own package folder: ~4 KiB of disk each, 0 bytes of content.
EMPTY_PACKAGES = 100


@pytest.fixture(scope="module")
def wheelhouse() -> Iterator[Path]:
    # World-readable, as a wheelhouse must be for uid 65534 (build_user).
    folder = Path(tempfile.mkdtemp(prefix="lt-evil-wheels-", dir="/tmp"))
    folder.chmod(0o755)
    for version in ("1.0", "1.1"):  # pip tries both, then calls it a conflict
        build_wheel(folder, "pathdep", version, "",
                    requires=("helper===/../../../code/evil",))
    build_wheel(folder, "hollow", "1.0", "", extra_files={
        f"hollow_{i:04d}/__init__.py": "" for i in range(EMPTY_PACKAGES)})
    for wheel in folder.iterdir():
        wheel.chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    # build_user 0: pip resolves as lambdad's own user, as it does whenever lambdad does
    # not run as root (a user in the docker group: root-equivalent all the same).
    started = Lambdad(extra_args=["--wheelhouse", str(wheelhouse), "--build-user", "0",
                                  "--build-cache-size", str(CACHE_MIB),
                                  "--cell-pool-size", "0"])
    try:
        started.start()
        yield started
    finally:
        started.close()


def test_a_dependency_named_like_a_path_cannot_make_pip_build_the_uploaded_folder(
    daemon: Lambdad, tmp_path: Path,
) -> None:
    marker = Path(tempfile.gettempdir()) / f"lt-pwned-{secrets.token_hex(6)}"
    folder = tmp_path / "fn"
    (folder / "evil").mkdir(parents=True)
    (folder / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (folder / "requirements.txt").write_text("pathdep\n")
    # An in-tree build backend with no build requirements: pip imports it to build the
    # folder, and whatever it runs, runs on the host as pip's user.
    (folder / "evil" / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    (folder / "evil" / "backend.py").write_text(
        f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    try:
        result = daemon.cli("deploy", str(folder), "--name", "pathdep")
        assert not marker.exists(), (
            f"the deployer's code ran on the host as uid {marker.read_text()}")
        assert result.code != 0
        # pip's own account of the conflict, naming the dependency no version satisfies.
        assert "pathdep 1.1 depends on helper===/../../../code/evil" in result.stderr
        assert daemon.cli("get", "pathdep").code != 0
    finally:
        marker.unlink(missing_ok=True)


def _disk_use(folder: Path) -> int:
    """What a folder takes on disk: every file's and folder's blocks, each inode once."""
    seen: set[int] = set()
    total = 0
    for top, dirs, files in os.walk(folder):
        for path in [top, *(os.path.join(top, n) for n in (*dirs, *files))]:
            info = os.lstat(path)
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def test_the_build_cache_stays_within_its_size_on_disk(
    daemon: Lambdad, tmp_path: Path,
) -> None:
    # Each requirements.txt is another key: without counting folders and empty files,
    # every deploy keeps another entry that weighs nothing in the cache's accounts.
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    for variant in range(3):
        (folder / "requirements.txt").write_text(f"hollow!=0.{variant}\n")
        daemon.deploy(folder, "--name", "hollow")
    cache = daemon.state_dir / "build-cache"
    assert _disk_use(cache) <= CACHE_MIB * 1024 * 1024, sorted(
        p.name for p in cache.iterdir())
    # Still a cache: the last resolution, which fits, is kept and served.
    again = daemon.deploy(folder, "--name", "hollow")
    assert "from the build cache" in again.stderr
