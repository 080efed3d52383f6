"""Downloads the wheels of the example functions (functions/*/requirements.txt) from PyPI
into a local folder, so the end-to-end tests resolve them offline (`--wheelhouse`).

A set-up step, not a test: `make example-wheels` runs it (and `make test` depends on it),
because tests send traffic only to loopback. It downloads the way AWS documents for Lambda:
`pip download --only-binary=:all: --platform manylinux2014_<arch> --python-version 3.11
--implementation cp`, one run per function, into a fresh folder that replaces the old one.
A stamp keyed by the requirements files, the platform and this file makes a second run
instant. The folder and its wheels are world-readable: a daemon running as root resolves
wheels as uid 65534 (`build_user`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
CACHE = ROOT / ".cache" / "example-wheels"
STAMP = ".stamp"
PYTHON_VERSION = "3.11"  # the Python of the runtime image, lambda-runtime/python:3.11


def requirement_files() -> list[Path]:
    return sorted(FUNCTIONS.glob("*/requirements.txt"))


def platform_tag() -> str:
    return f"manylinux2014_{os.uname().machine}"


def stamp_value() -> str:
    """What the folder was made from: every requirements file, the platform and this
    script, so a change to any of them downloads again."""
    digest = hashlib.sha256()
    digest.update(f"{platform_tag()} cp{PYTHON_VERSION}\n".encode())
    digest.update(Path(__file__).read_bytes())
    for path in requirement_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_fresh(folder: Path = CACHE) -> bool:
    try:
        return (folder / STAMP).read_text().strip() == stamp_value()
    except OSError:
        return False


def public_copy() -> Path:
    """A world-readable copy of the wheels under /tmp, for `--wheelhouse`: a daemon running
    as root resolves as uid 65534, which must reach the folder whatever the modes of the
    checkout's parents. The caller removes it."""
    if not is_fresh():
        raise RuntimeError("the example functions' wheels are missing or stale: run "
                           "`make example-wheels` (it downloads them from PyPI)")
    folder = Path(tempfile.mkdtemp(prefix="lt-example-wheels-", dir="/tmp"))
    folder.chmod(0o755)
    for wheel in CACHE.glob("*.whl"):
        shutil.copy(wheel, folder / wheel.name)
        (folder / wheel.name).chmod(0o644)
    return folder


def download_command(requirements: Path, dest: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--platform", platform_tag(),
        "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "-r", str(requirements), "-d", str(dest),
    ]


def fetch(folder: Path = CACHE) -> bool:
    """Fills `folder` unless its stamp is current; True when it downloaded."""
    if is_fresh(folder):
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".example-wheels-", dir=folder.parent))
    try:
        for requirements in requirement_files():
            print(f"downloading wheels for {requirements.relative_to(ROOT)}", flush=True)
            subprocess.run(download_command(requirements, staging), check=True)
        for wheel in staging.iterdir():
            wheel.chmod(0o644)
        staging.chmod(0o755)
        (staging / STAMP).write_text(stamp_value() + "\n")
        (staging / STAMP).chmod(0o644)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=CACHE, help=f"folder (default: {CACHE})")
    args = parser.parse_args(argv)
    try:
        downloaded = fetch(args.dest)
    except subprocess.CalledProcessError as exc:
        print(f"pip download failed ({exc.returncode}); PyPI must be reachable", file=sys.stderr)
        return 1
    wheels = sum(1 for p in args.dest.iterdir() if p.suffix == ".whl")
    print(f"{'downloaded' if downloaded else 'up to date:'} {wheels} wheels in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
