"""Builds a tiny pure-Python wheel so dependency tests need no package index."""

from __future__ import annotations

import base64
import hashlib
import tempfile
import zipfile
from pathlib import Path


def public_folder(prefix: str = "lt-wheels-") -> Path:
    """A new folder under /tmp that uid 65534 can read: a daemon running as root resolves
    requirements as that uid (build_user), whatever the modes of pytest's own folders."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


def make_readable(folder: Path) -> None:
    for wheel in folder.glob("*.whl"):
        wheel.chmod(0o644)


def build_wheel(folder: Path, name: str, version: str, module_source: str, *,
                tag: str = "py3-none-any", requires: tuple[str, ...] = (),
                extra_files: dict[str, str] | None = None) -> Path:
    """A wheel of one module (and `extra_files`, path -> text); `tag` may be a compressed
    set (cp311-cp311-a.b_x86_64)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires)
    python, abi, platforms = tag.split("-")
    files = {
        f"{name}.py": module_source,
        **(extra_files or {}),
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\n"
                         f"Root-Is-Purelib: {'true' if platforms == 'any' else 'false'}\n"
                         + "".join(f"Tag: {python}-{abi}-{p}\n" for p in platforms.split(".")),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel
