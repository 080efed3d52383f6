"""The real pip in its sandbox: as root it resolves as the build uid, which cannot read
root's files; the operator's wheels still work; the deps it leaves are lambdad's."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdad.build import sandbox
from lambdad.build.limits import BuildLimits
from lambdad.build.wheeltags import TargetPlatform
from lambdad.errors import BuildFailed
from tests.support.wheels import build_wheel

AS_ROOT = os.geteuid() == 0
HOST = TargetPlatform(python=(3, 11), machine=os.uname().machine, libc="glibc",
                      libc_version=(2, 36))


@pytest.fixture
def wheel_folders() -> Iterator[tuple[Path, Path]]:
    """The same wheel in a world-readable folder and in a root-only one."""
    root = Path(tempfile.mkdtemp(prefix="lt-pip-", dir="/tmp"))
    root.chmod(0o755)
    public, private = root / "public", root / "private"
    for folder, mode in ((public, 0o755), (private, 0o700)):
        build_wheel(folder, "sandboxprobe", "1.0", "VALUE = 42\n")
        for wheel in folder.iterdir():
            wheel.chmod(0o644 if mode == 0o755 else 0o600)
        folder.chmod(mode)
    yield public, private
    shutil.rmtree(root, ignore_errors=True)


def _install(build_dir: Path, wheelhouse: Path, limits: BuildLimits) -> list[str]:
    lines: list[str] = []
    sandbox.install(["sandboxprobe==1.0"], build_dir, build_dir / "deps", limits,
                    target=HOST, wheelhouse=wheelhouse,
                    deadline=time.monotonic() + 120, emit=lines.append)
    return lines


def test_resolves_from_a_readable_wheelhouse_into_deps_owned_by_lambdad(
    wheel_folders: tuple[Path, Path], tmp_path: Path,
) -> None:
    public, _ = wheel_folders
    before = set(Path(tempfile.gettempdir()).glob("lambdad-pip-*"))
    _install(tmp_path, public, BuildLimits())
    module = tmp_path / "deps" / "sandboxprobe.py"
    assert module.read_text() == "VALUE = 42\n"
    assert module.stat().st_uid == os.geteuid()  # a copy, not the build uid's file
    assert set(Path(tempfile.gettempdir()).glob("lambdad-pip-*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deps"]


def test_as_root_pip_cannot_read_root_only_files(
    wheel_folders: tuple[Path, Path], tmp_path: Path,
) -> None:
    # The wheelhouse stands for any root-only file (an API key, the state folder): as root,
    # pip runs as uid 65534 without groups and does not see it. As lambdad's own user (not
    # root) there is no uid to drop to, and the same folder is readable.
    _, private = wheel_folders
    if not AS_ROOT:
        _install(tmp_path, private, BuildLimits())
        return
    with pytest.raises(BuildFailed, match="could not be resolved"):
        _install(tmp_path, private, BuildLimits())
    assert not (tmp_path / "deps").exists()
    # build_user = 0 is the operator's explicit way back to root (and shows the cause).
    _install(tmp_path, private, BuildLimits(user=0))
    assert (tmp_path / "deps" / "sandboxprobe.py").is_file()


def test_pip_that_outlives_the_deadline_is_stopped(
    wheel_folders: tuple[Path, Path], tmp_path: Path,
) -> None:
    public, _ = wheel_folders
    started = time.monotonic()
    with pytest.raises(BuildFailed, match="did not finish within the build timeout"):
        sandbox.install(["sandboxprobe==1.0"], tmp_path, tmp_path / "deps", BuildLimits(),
                        target=HOST, wheelhouse=public,
                        deadline=time.monotonic() + 0.3, emit=lambda _: None)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "deps").exists()


@pytest.fixture
def platform_wheels() -> Iterator[Path]:
    """Wheels as PyPI tags them: compiled for manylinux2014, for a glibc newer than the
    image's, for musl, and a pure package that needs one with no wheel that fits."""
    folder = Path(tempfile.mkdtemp(prefix="lt-tags-", dir="/tmp"))
    folder.chmod(0o755)
    arch = HOST.machine
    build_wheel(folder, "compiledcore", "2.0", "NATIVE = True\n",
                tag=f"cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}")
    build_wheel(folder, "stableabi", "1.0", "STABLE = True\n",
                tag=f"cp38-abi3-manylinux_2_28_{arch}")
    build_wheel(folder, "toonew", "1.0", "", tag=f"cp311-cp311-manylinux_2_39_{arch}")
    build_wheel(folder, "muslonly", "1.0", "", tag=f"cp311-cp311-musllinux_1_2_{arch}")
    build_wheel(folder, "usesmusl", "1.0", "", requires=("muslonly>=1",))
    for version in ("1.0", "1.1", "1.2"):  # pip backtracks these, then calls it a conflict
        build_wheel(folder, "webframework", version, "", requires=("muslonly>=1",))
    for wheel in folder.iterdir():
        wheel.chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _resolve(tmp_path: Path, wheelhouse: Path, *requirements: str) -> list[str]:
    lines: list[str] = []
    sandbox.install(list(requirements), tmp_path, tmp_path / "deps", BuildLimits(),
                    target=HOST, wheelhouse=wheelhouse, deadline=time.monotonic() + 120,
                    emit=lines.append)
    return lines


def test_compiled_wheels_for_an_older_glibc_and_the_stable_abi_install(
    platform_wheels: Path, tmp_path: Path,
) -> None:
    # Only `manylinux_2_36` was asked for before: neither of these was ever chosen.
    _resolve(tmp_path, platform_wheels, "compiledcore>=2", "stableabi")
    assert (tmp_path / "deps" / "compiledcore.py").read_text() == "NATIVE = True\n"
    assert (tmp_path / "deps" / "stableabi.py").is_file()


@pytest.mark.parametrize("package", ["toonew", "muslonly"])
def test_a_requirement_without_a_fitting_wheel_names_itself_and_the_platform(
    platform_wheels: Path, tmp_path: Path, package: str,
) -> None:
    with pytest.raises(BuildFailed) as failed:
        _resolve(tmp_path, platform_wheels, package)
    message = str(failed.value)
    assert message.startswith(f"requirements.txt: no version of {package} has a wheel for "
                              f"CPython 3.11 on glibc 2.36 ({HOST.machine})")
    assert "conflicting" not in message
    assert not (tmp_path / "deps").exists()


def test_a_dependency_without_a_fitting_wheel_is_named_not_called_a_conflict(
    platform_wheels: Path, tmp_path: Path,
) -> None:
    with pytest.raises(BuildFailed) as failed:
        _resolve(tmp_path, platform_wheels, "usesmusl")
    message = str(failed.value)
    assert "no version of muslonly>=1 (needed by usesmusl) has a wheel" in message
    assert "conflicting" not in message


def test_a_dependency_pip_calls_a_conflict_is_checked_and_named(
    platform_wheels: Path, tmp_path: Path,
) -> None:
    with pytest.raises(BuildFailed) as failed:
        _resolve(tmp_path, platform_wheels, "webframework")
    message = str(failed.value)
    assert "no version of muslonly>=1 (needed by webframework 1." in message
    assert "conflicting" not in message


def test_pip_prepares_only_wheels_found_on_the_index(tmp_path: Path) -> None:
    # A dependency named by URL is refused before pip fetches it, even a wheel: pip would
    # fetch any URL, build any sdist or folder, and clone any VCS URL a wheel names.
    folder = Path(tempfile.mkdtemp(prefix="lt-urls-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        elsewhere = build_wheel(folder / "elsewhere", "helper", "1.0", "HELPER = 1\n")
        (folder / "elsewhere").chmod(0o755)
        elsewhere.chmod(0o644)
        build_wheel(folder, "byurl", "1.0", "", requires=(f"helper @ {elsewhere.as_uri()}",))
        build_wheel(folder, "plain", "1.0", "PLAIN = 1\n")
        for wheel in folder.glob("*.whl"):
            wheel.chmod(0o644)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with pytest.raises(BuildFailed) as failed:
            _resolve(tmp_path / "a", folder, "byurl")
        assert (f"helper (needed by byurl) refers to {elsewhere.as_uri()}, not to a wheel on "
                "the package index") in str(failed.value)
        _resolve(tmp_path / "b", folder, "plain")  # what pip finds itself still installs
        assert (tmp_path / "b" / "deps" / "plain.py").is_file()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
