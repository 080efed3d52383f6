"""Hand-made code archives for attack tests: what a deployer who does not use lambdactl's
packer can upload."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

Member = tarfile.TarInfo | str | tuple[str, bytes]


def info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return member


def folder(name: str) -> tarfile.TarInfo:
    return info(name, tarfile.DIRTYPE)


def symlink(name: str, target: str) -> tarfile.TarInfo:
    return info(name, tarfile.SYMTYPE, target)


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    return info(name, tarfile.LNKTYPE, target)


def order_trick(name: str, target: str, depth: int = 24) -> list[Member]:
    """The reported escape (attack/attacks/tar_symlink_order.py). Judged one at a time, and
    a path that does not exist yet by its spelling, every link stays inside:

        NAME -> p/TARGET                 (p missing: lexically inside)
        s, s/s, ... (depth folders)
        p -> s/.../s/d/../../..          (s/.../s/d missing: lexically ".")
        s/.../s/d -> ../../..            (the destination itself)

    Afterwards p is `depth + 1` levels above the destination (/ for any shallower one),
    and NAME is the host's TARGET."""
    chain = "/".join(["s"] * depth)
    return [
        symlink(name, "p/" + target.lstrip("/")),
        *[folder("/".join(["s"] * level)) for level in range(1, depth + 1)],
        symlink("p", chain + "/d/" + "/".join([".."] * (depth + 1))),
        symlink(chain + "/d", "/".join([".."] * depth)),
    ]


def write(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    """A str member is a regular file holding "data of NAME"; a (name, bytes) pair one
    holding those bytes."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
                continue
            name, data = member if isinstance(member, tuple) else (
                member, b"data of " + member.encode())
            header = tarfile.TarInfo(name)
            header.size = len(data)
            header.mode = 0o644
            archive.addfile(header, io.BytesIO(data))
    return path
