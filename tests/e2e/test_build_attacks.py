"""A deployer's requirements against the build side of issue 14, as attacks on the host.

- A wheel's metadata (Requires-Dist, anyone can publish one to PyPI) names a dependency
  that no version satisfies, so pip reports a conflict; lambdad then asks pip about that
  dependency alone. `dep===/../../../code/evil` passes pip's requirement parser, but pip
  takes a requirement with a `/` in it as a path: the check would build the deployer's own
  uploaded folder, running its build backend on the host.
- A wheel's metadata names a dependency by URL (`helper @ https://host/evil.tar.gz`, or a
  `file://` folder: the deployer's own code, kept at a known path for stem cells). pip's
  `--only-binary=:all:` rules only what it finds on an index: it fetched and built those,
  running their build backend on the host, whenever the parent wheel came from anywhere but
  PyPI's own file host (a mirror, a private index, the wheelhouse).
- The build cache is bounded by `build_cache_size`; entries of empty files and folders
  (a wheel of thousands of them) must count for the disk they take.

Real daemon, real CLI, real pip, real Docker engine; the wheels stand for packages on
the operator's index.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad, wait_for
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


PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


def _backend(marker: Path) -> str:
    """An in-tree build backend that needs nothing to be installed: pip imports it to build
    the folder or sdist, and what it runs, runs on the host as pip's user."""
    return f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\n"


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(tempfile.gettempdir()) / f"lt-pwned-{secrets.token_hex(6)}"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def default_daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    """As installed to run as root: pip resolves as uid 65534 (build_user)."""
    started = Lambdad(extra_args=["--wheelhouse", str(wheelhouse), "--cell-pool-size", "0"])
    try:
        started.start()
        yield started
    finally:
        started.close()


class _Sdists(http.server.BaseHTTPRequestHandler):
    """Serves one sdist, as an attacker's web server would, and notes what was asked."""

    body = b""
    asked: list[str] = []

    def do_GET(self) -> None:
        type(self).asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def _sdist(marker: Path) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        for name, text in (("pyproject.toml", PYPROJECT), ("backend.py", _backend(marker))):
            encoded = text.encode()
            info = tarfile.TarInfo(f"evil-1.0/{name}")
            info.size = len(encoded)
            archive.addfile(info, io.BytesIO(encoded))
    return data.getvalue()


def _requiring(wheelhouse: Path, name: str, requirement: str) -> None:
    """A wheel whose metadata needs `requirement`, on the index the daemon resolves from."""
    wheel = build_wheel(wheelhouse, name, "1.0", "", requires=(requirement,))
    wheel.chmod(0o644)


def _function(tmp_path: Path, requirements: str) -> Path:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_a_dependency_on_an_sdist_url_is_neither_fetched_nor_built(
    default_daemon: Lambdad, wheelhouse: Path, tmp_path: Path, marker: Path,
) -> None:
    _Sdists.body, _Sdists.asked = _sdist(marker), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sdists)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/evil-1.0.tar.gz"
        _requiring(wheelhouse, "urlsdist", f"helper @ {url}")
        result = default_daemon.cli("deploy", str(_function(tmp_path, "urlsdist\n")),
                                    "--name", "urlsdist")
    finally:
        server.shutdown()
        server.server_close()
    assert not marker.exists(), f"the sdist's code ran on the host as uid {marker.read_text()}"
    assert _Sdists.asked == []
    assert result.code != 0
    assert f"helper (needed by urlsdist) refers to {url}, not to a wheel" in result.stderr
    assert default_daemon.cli("get", "urlsdist").code != 0


def test_a_dependency_on_a_folder_url_cannot_build_the_deployers_earlier_upload(
    daemon: Lambdad, wheelhouse: Path, tmp_path: Path, marker: Path,
) -> None:
    # A deploy keeps its files at <state_dir>/artifacts/<name>/v<N>/task for stem cells:
    # a path the deployer can name, readable by pip when pip runs as lambdad's user.
    stash = tmp_path / "stash"
    (stash / "evil").mkdir(parents=True)
    (stash / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (stash / "evil" / "pyproject.toml").write_text(PYPROJECT)
    (stash / "evil" / "backend.py").write_text(_backend(marker))
    daemon.deploy(stash, "--name", "stash")
    kept = daemon.state_dir / "artifacts" / "stash" / "v1" / "task" / "evil"
    assert (kept / "backend.py").is_file()
    _requiring(wheelhouse, "urlfolder", f"helper @ file://{kept}")

    result = daemon.cli("deploy", str(_function(tmp_path, "urlfolder\n")),
                        "--name", "urlfolder")
    assert not marker.exists(), f"the deployer's code ran on the host as uid {marker.read_text()}"
    assert result.code != 0
    assert "helper (needed by urlfolder) refers to file://" in result.stderr
    assert daemon.cli("get", "urlfolder").code != 0


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


BOMB_FILES = 2  # of 1 GiB of zeros each: a few MiB of wheel


def _zip_bomb(folder: Path) -> None:
    """A wheel of BOMB_FILES files of 1 GiB of zeros (deflated to ~1 MiB each), written
    in chunks so the test itself stays small."""
    name, dist = "bomb", "bomb-1.0.dist-info"
    record = []
    wheel = folder / "bomb-1.0-py3-none-any.whl"
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=1) as archive:
        for i in range(BOMB_FILES):
            digest = hashlib.sha256()
            with archive.open(f"{name}/blob{i}", "w", force_zip64=True) as out:
                for _ in range(1024):
                    out.write(chunk)
                    digest.update(chunk)
            encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            record.append(f"{name}/blob{i},sha256={encoded},{1 << 30}")
        texts = {f"{name}/__init__.py": "",
                 f"{dist}/METADATA": "Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n",
                 f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\n"
                                  "Root-Is-Purelib: true\nTag: py3-none-any\n"}
        for path, text in texts.items():
            archive.writestr(path, text)
            encoded = base64.urlsafe_b64encode(
                hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={encoded},{len(text)}")
        archive.writestr(f"{dist}/RECORD", "\n".join([*record, f"{dist}/RECORD,,"]) + "\n")
    wheel.chmod(0o644)


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


@pytest.fixture
def disk_floor(wheelhouse: Path) -> Iterator[tuple[Lambdad, int]]:
    """A daemon whose free-disk floor is 400 MiB below the free space now (pip's work
    folder, the state folder and the Docker data root share one file system here)."""
    _zip_bomb(wheelhouse)
    floor_mib = (_free(Path(tempfile.gettempdir())) >> 20) - 400
    started = Lambdad(extra_args=["--wheelhouse", str(wheelhouse), "--cell-pool-size", "0",
                                  "--build-min-free-disk", str(floor_mib)])
    try:
        started.start()
        yield started, floor_mib
    finally:
        started.close()


def test_a_wheel_that_fills_the_disk_stops_pip_at_the_floor(
    disk_floor: tuple[Lambdad, int], tmp_path: Path,
) -> None:
    # build_min_free_disk guarded the Docker build only: pip unpacked what a wheel held
    # (2 GiB here; a 100 MB wheel on an index can hold 100 GiB), and lambdad copied it
    # once more into the build folder, before any check looked at the disk.
    daemon, floor_mib = disk_floor
    before = set(Path(tempfile.gettempdir()).glob("lambdad-pip-*"))
    lowest = [_free(Path(tempfile.gettempdir()))]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            lowest.append(_free(Path(tempfile.gettempdir())))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = daemon.cli("deploy", str(_function(tmp_path, "bomb\n")), "--name", "bomb")
    finally:
        done.set()
        watcher.join()
    assert result.code != 0
    assert f"less than the {floor_mib} MiB builds must leave (build_min_free_disk)" \
        in result.stderr, result.stderr
    assert "requirements.txt: resolving stopped" in result.stderr, result.stderr
    # Stopped within a poll of crossing the floor, not gigabytes later.
    assert (min(lowest) >> 20) > floor_mib - 1024, (min(lowest) >> 20, floor_mib)
    assert list((daemon.state_dir / "spool").iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("lambdad-pip-*")) <= before


def _pip_processes(work: Path) -> list[int]:
    """Processes whose command line names `work` (pip's work folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(work).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def test_a_killed_daemon_leaves_neither_pip_running_nor_its_work_folder(
    tmp_path: Path,
) -> None:
    # An index that accepts connections and never answers: pip waits on it (for minutes,
    # with PIP_DEFAULT_TIMEOUT and retries), as it would on a slow mirror.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    started = Lambdad(extra_args=["--cell-pool-size", "0"])
    started.start_env = {
        "PIP_INDEX_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/simple",
        "PIP_FIND_LINKS": "", "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "120"}
    before = set(Path(tempfile.gettempdir()).glob("lambdad-pip-*"))
    output = tmp_path / "deploy.out"
    deploy = None
    work: Path | None = None
    try:
        started.start()
        with output.open("wb") as sink:
            deploy = subprocess.Popen(
                [sys.executable, "-m", "lambdactl", "deploy",
                 str(_function(tmp_path, "six\n")), "--name", "hangs"],
                env=started.env(), cwd=ROOT, stdout=sink, stderr=sink)
        assert wait_for(lambda: set(Path(tempfile.gettempdir()).glob("lambdad-pip-*"))
                        - before, 60)
        work = next(iter(set(Path(tempfile.gettempdir()).glob("lambdad-pip-*")) - before))
        assert wait_for(lambda: _pip_processes(work), 30)
        # pip has written what it writes first and now waits, silent: a pip that writes
        # after lambdad died would die of the broken pipe, one that waits would not.
        assert wait_for(lambda: b"Looking in indexes" in output.read_bytes(), 30)

        assert started.process is not None
        started.process.kill()
        started.process.wait()
        assert wait_for(lambda: not _pip_processes(work), 10), (
            f"pip outlived lambdad: {_pip_processes(work)}")

        started.start()  # the same state folder: the restart removes what was left
        assert not work.exists()
    finally:
        for pid in _pip_processes(work) if work is not None else []:  # this test's only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if deploy is not None:
            deploy.kill()
            deploy.wait()
        started.close()
        silent.close()
