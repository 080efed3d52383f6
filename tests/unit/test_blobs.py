"""Shared blobs' tar packing and unpacking (build/blobs.py): the same tree and modes come
back, and a tampered blob (as a hostile database row would hold) is refused before
anything is written."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lambdad.build.blobs import file_digest, pack, unpack, verify
from lambdad.errors import BlobRefused


def make_artifact(root: Path) -> None:
    (root / "task" / "pkg").mkdir(parents=True)
    (root / "deps" / "lib").mkdir(parents=True)
    (root / "task" / "handler.py").write_text("def handler(e, c):\n    return 1\n")
    (root / "task" / "pkg" / "__init__.py").write_text("")
    tool = root / "deps" / "lib" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    os.link(root / "task" / "handler.py", root / "deps" / "lib" / "same.py")  # a hard link
    (root / "runtime-image").write_text("sha256:abc\n")


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    found: dict[str, tuple[str, int, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            kind = "d" if stat.S_ISDIR(info.st_mode) else "f"
            found[str(path.relative_to(root))] = (
                kind, stat.S_IMODE(info.st_mode), b"" if kind == "d" else path.read_bytes())
    return found


def packed(root: Path, out: Path) -> tuple[str, int]:
    with out.open("wb") as f:
        return pack(root, f)


def test_pack_then_unpack_gives_the_same_tree_and_modes(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a")
    sha, size = packed(tmp_path / "a", tmp_path / "blob")
    assert (sha, size) == file_digest(tmp_path / "blob")
    unpack(tmp_path / "blob", tmp_path / "b")
    assert tree(tmp_path / "b") == tree(tmp_path / "a")
    assert os.lstat(tmp_path / "b" / "deps" / "lib" / "same.py").st_nlink == 1  # a copy


def test_packing_is_deterministic(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a")
    make_artifact(tmp_path / "b")
    os.utime(tmp_path / "b" / "task" / "handler.py", (1, 1))
    assert packed(tmp_path / "a", tmp_path / "1") == packed(tmp_path / "b", tmp_path / "2")


def test_a_link_in_an_artifact_is_not_packed(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a")
    os.symlink("/etc/passwd", tmp_path / "a" / "task" / "evil")
    with pytest.raises(BlobRefused, match="only regular files"):
        packed(tmp_path / "a", tmp_path / "blob")


def hostile(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A blob holding a good file and then `member` (its sha256 would match: whoever can
    write the database row can compute it)."""
    blob = tmp_path / "blob"
    with tarfile.open(blob, "w", format=tarfile.PAX_FORMAT) as tar:
        good = tarfile.TarInfo("task/handler.py")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"abc"))
        tar.addfile(member, io.BytesIO(data) if data else None)
    return blob


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "",
           size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = size
    return info


@pytest.mark.parametrize("bad", [
    member("task/../../escape.py", size=1),
    member("../escape.py", size=1),
    member("/tmp/escape.py", size=1),
    member("task/link", tarfile.SYMTYPE, linkname="/etc/passwd"),
    member("task/hard", tarfile.LNKTYPE, linkname="/etc/passwd"),
    member("task/dev", tarfile.CHRTYPE),
    member("task/fifo", tarfile.FIFOTYPE),
    member("elsewhere/x.py", size=1),
    member("task/handler.py", size=1),  # twice: the second would replace the first
], ids=["dotdot-inside", "dotdot", "absolute", "symlink", "hardlink", "device", "fifo",
        "outside-parts", "duplicate"])
def test_a_tampered_blob_is_refused_before_anything_is_written(
        tmp_path: Path, bad: tarfile.TarInfo) -> None:
    blob = hostile(tmp_path, bad, b"x" if bad.size else b"")
    dest = tmp_path / "out" / "v1"
    dest.parent.mkdir()
    with pytest.raises(BlobRefused):
        unpack(blob, dest)
    assert not dest.exists()
    assert os.listdir(tmp_path / "out") == []
    assert not (tmp_path / "escape.py").exists()
    assert not Path("/tmp/escape.py").exists()


def test_a_size_or_sha_mismatch_is_refused(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a")
    sha, size = packed(tmp_path / "a", tmp_path / "blob")
    verify(tmp_path / "blob", sha, size)
    with pytest.raises(BlobRefused, match="bytes, not"):
        verify(tmp_path / "blob", sha, size + 1)
    data = bytearray((tmp_path / "blob").read_bytes())
    data[600] ^= 1
    (tmp_path / "blob").write_bytes(bytes(data))
    with pytest.raises(BlobRefused, match="sha256"):
        verify(tmp_path / "blob", sha, size)


def test_a_truncated_blob_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a")
    sha, size = packed(tmp_path / "a", tmp_path / "blob")
    data = (tmp_path / "blob").read_bytes()
    (tmp_path / "blob").write_bytes(data[:1100])  # inside the first file's data
    with pytest.raises(BlobRefused):
        verify(tmp_path / "blob", sha, size)
    # Even one whose sha256 the row was forged to match is refused when unpacked.
    dest = tmp_path / "v1"
    with pytest.raises(BlobRefused):
        unpack(tmp_path / "blob", dest)
    assert not dest.exists()
