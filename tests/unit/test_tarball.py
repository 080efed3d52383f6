"""Hostile and broken archives are refused before anything is extracted."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lambdad.build import tarball
from lambdad.build.tarball import TarLimits
from lambdad.errors import InvalidArgument, PayloadTooLarge


def _archive(tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]],
             mode: str = "w:gz") -> Path:
    path = tmp_path / "code.tar.gz"
    with tarfile.open(path, mode) as archive:
        for member in members:
            if isinstance(member, tuple):
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(member)
    return path


def _info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_accepts_a_plain_function_folder(tmp_path: Path) -> None:
    path = _archive(tmp_path, [
        _info("pkg", tarfile.DIRTYPE),
        ("handler.py", b"def handler(e, c): return 1\n"),
        ("pkg/mod.py", b"x = 1\n"),
        ("./lambda.toml", b'name = "greet"\n'),
        _info("pkg/alias.py", tarfile.SYMTYPE, "mod.py"),
        _info("pkg/hard.py", tarfile.LNKTYPE, "pkg/mod.py"),
    ])
    summary = tarball.validate(path)
    assert summary.members == 6
    assert summary.files == {"handler.py", "pkg/mod.py", "lambda.toml"}
    assert summary.unpacked_bytes == len(b"def handler(e, c): return 1\n") + 6 + 15
    assert tarball.read_member(path, "lambda.toml") == 'name = "greet"\n'
    assert tarball.read_member(path, "missing.toml") is None


def test_uncompressed_archives_are_accepted_too(tmp_path: Path) -> None:
    path = _archive(tmp_path, [("handler.py", b"x")], mode="w")
    assert tarball.validate(path).files == {"handler.py"}


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (("/etc/passwd", b"x"), "absolute path"),
        (("../escape.py", b"x"), "'..' in path"),
        (("a/../../escape.py", b"x"), "'..' in path"),
        (_info("dev", tarfile.CHRTYPE), "device files"),
        (_info("blk", tarfile.BLKTYPE), "device files"),
        (_info("fifo", tarfile.FIFOTYPE), "fifos"),
        (_info("link", tarfile.SYMTYPE, "/etc/passwd"), "symlink to absolute path"),
        (_info("link", tarfile.SYMTYPE, "../../etc/passwd"), "points outside"),
        (_info("a/link", tarfile.SYMTYPE, "../../x"), "points outside"),
        (_info("hard", tarfile.LNKTYPE, "/etc/shadow"), "points outside"),
        (_info("hard", tarfile.LNKTYPE, "../x"), "points outside"),
        (_info("hard", tarfile.LNKTYPE, "not-in-archive"), "not an earlier file"),
        (("a/./b.py", b"x"), "not a normalized path"),
        (("a//b.py", b"x"), "not a normalized path"),
        ((".", b"x"), "must be a directory"),
    ],
)
def test_hostile_members_are_refused_by_name(
    tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes], message: str
) -> None:
    path = _archive(tmp_path, [("handler.py", b"ok"), member], mode="w")
    with pytest.raises(InvalidArgument) as caught:
        tarball.validate(path)
    assert message in caught.value.message
    name = member[0] if isinstance(member, tuple) else member.name
    assert repr(name) in caught.value.message


def test_symlink_inside_the_tree_is_fine(tmp_path: Path) -> None:
    path = _archive(tmp_path, [("a/b/x.py", b""), _info("a/b/l", tarfile.SYMTYPE, "../b/x.py")])
    tarball.validate(path)


def test_member_count_cap(tmp_path: Path) -> None:
    path = _archive(tmp_path, [(f"f{i}.py", b"") for i in range(11)])
    with pytest.raises(PayloadTooLarge, match="more than 10 members"):
        tarball.validate(path, TarLimits(max_members=10))


def test_decompression_bomb_is_stopped_by_the_unpacked_cap(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses to about 64 KiB.
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 * 1024 * 1024
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(PayloadTooLarge, match="unpacks to more than"):
        tarball.validate(path, TarLimits(max_unpacked_bytes=8 * 1024 * 1024))


@pytest.mark.parametrize("data", [b"", b"not a tarball at all", b"\x1f\x8b\x08garbage"])
def test_garbage_is_invalid_argument(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(data)
    with pytest.raises(InvalidArgument):
        tarball.validate(path)


def test_truncated_archive_is_invalid_argument(tmp_path: Path) -> None:
    path = _archive(tmp_path, [("big.bin", bytes(range(256)) * 4096)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        tarball.validate(path)


def test_extract_writes_the_tree(tmp_path: Path) -> None:
    path = _archive(tmp_path, [("pkg/mod.py", b"x = 1\n"), ("handler.py", b"h")])
    tarball.extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "x = 1\n"


# The fallback always; the filter where the interpreter has it (not on Debian's 3.11.2).
@pytest.mark.parametrize("use_filter", [False] + ([True] if tarball.HAS_DATA_FILTER else []))
def test_extract_with_and_without_the_data_filter_strips_dangerous_bits(
    tmp_path: Path, use_filter: bool
) -> None:
    """Python < 3.11.4 (Debian 12's 3.11.2) has no extraction filters: the fallback must
    give the same result."""
    suid = tarfile.TarInfo("tool.sh")
    suid.size, suid.mode, suid.uid, suid.gid = 3, 0o6777, 4242, 4242
    folder = _info("pkg", tarfile.DIRTYPE)
    folder.mode = 0o777
    path = tmp_path / "code.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(folder)
        archive.addfile(suid, io.BytesIO(b"#!\n"))
        archive.addfile(_info("link.sh", tarfile.SYMTYPE, "tool.sh"))
        archive.addfile(_info("hard.sh", tarfile.LNKTYPE, "tool.sh"))
    tarball.validate(path)
    out = tmp_path / "out"
    tarball.extract(path, out, use_filter=use_filter)
    tool = (out / "tool.sh").stat()
    assert tool.st_mode & 0o7022 == 0  # no setuid/setgid/sticky, no group/world write
    assert (tool.st_uid, tool.st_gid) != (4242, 4242)
    assert (out / "pkg").stat().st_mode & 0o022 == 0
    assert (out / "link.sh").is_symlink() and (out / "hard.sh").read_text() == "#!\n"


@pytest.mark.parametrize("use_filter", [False] + ([True] if tarball.HAS_DATA_FILTER else []))
def test_a_symlink_chain_that_climbs_out_is_refused_at_extraction(
    tmp_path: Path, use_filter: bool
) -> None:
    """`a -> .` and `b -> a/a/a/../../..` look like `.` on paper but climb out on disk; a
    file written through `b` would land outside the function folder."""
    path = tmp_path / "code.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(_info("a", tarfile.SYMTYPE, "."))
        archive.addfile(_info("b", tarfile.SYMTYPE, "a/a/a/../../.."))
        payload = tarfile.TarInfo("b/escaped.txt")
        payload.size = 3
        archive.addfile(payload, io.BytesIO(b"pwn"))
    tarball.validate(path)  # the paper check cannot see it
    dest = tmp_path / "d1" / "d2" / "d3" / "out"
    with pytest.raises(InvalidArgument, match=r"outside|cannot extract"):
        tarball.extract(path, dest, use_filter=use_filter)
    assert [p for p in tmp_path.rglob("escaped.txt")] == []


# Header bombs: tarfile reads a GNU long name/link or a PAX record whole, in one read of
# the size its header claims. Validation must stay small whatever that size is.

BOMB_BYTES = 200 * 1024 * 1024
MEMORY_CEILING_MIB = 128  # the old validator needed about 430 MiB for BOMB_BYTES


def _header_bomb(path: Path, kind: bytes, size: int = BOMB_BYTES, opener: Any = gzip.open) -> Path:
    """A tar whose first record claims `size` bytes of extended header, then a file."""
    with opener(path, "wb", **({"preset": 0} if opener is lzma.open else {})) as out:
        header = tarfile.TarInfo("././@LongLink" if kind in (b"L", b"K") else "pax")
        header.type = kind
        header.size = size
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT if kind in (b"x", b"g")
                               else tarfile.GNU_FORMAT))
        chunk = b"a" * (1 << 20)
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(tarfile.TarInfo("handler.py").tobuf() + bytes(1024))
    return path


_VALIDATE_UNDER_CEILING = """
import resource, sys
from pathlib import Path
limit = int(sys.argv[2]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from lambdad.build import tarball
from lambdad.errors import LambdaError
try:
    tarball.validate(Path(sys.argv[1]))
except LambdaError as exc:
    print(type(exc).__name__ + ": " + exc.message)
    sys.exit(0)
print("accepted")
sys.exit(3)
"""


@pytest.mark.parametrize(("kind", "opener"), [
    (tarfile.GNUTYPE_LONGNAME, gzip.open), (tarfile.GNUTYPE_LONGLINK, gzip.open),
    (tarfile.XHDTYPE, gzip.open), (tarfile.XGLTYPE, gzip.open),
    (tarfile.GNUTYPE_LONGNAME, bz2.open), (tarfile.XHDTYPE, lzma.open),
], ids=["gnu-longname-gz", "gnu-longlink-gz", "pax-gz", "pax-global-gz", "gnu-longname-bz2",
        "pax-xz"])
def test_header_bomb_is_refused_under_a_memory_ceiling(
    tmp_path: Path, kind: bytes, opener: Any
) -> None:
    path = _header_bomb(tmp_path / "bomb.tar", kind, opener=opener)
    assert path.stat().st_size < 2 * 1024 * 1024
    done = subprocess.run(
        [sys.executable, "-c", _VALIDATE_UNDER_CEILING, str(path), str(MEMORY_CEILING_MIB)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # MemoryError on the old code
    assert done.stdout.startswith("InvalidArgument: archive has an extended header"), done.stdout
    assert "the limit is 64 KiB" in done.stdout


def test_extended_headers_up_to_the_limit_are_fine(tmp_path: Path) -> None:
    # A 900-byte name (a GNU long name record) and a PAX record with a long value.
    path = tmp_path / "ok.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("d/" + "n" * 900)
        archive.addfile(info, io.BytesIO(b""))
    with tarfile.open(tmp_path / "pax.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("handler.py")
        info.pax_headers = {"comment": "c" * 30_000}
        archive.addfile(info, io.BytesIO(b""))
    assert tarball.validate(path).members == 1
    assert tarball.validate(tmp_path / "pax.tar.gz").files == {"handler.py"}


def test_pax_record_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("handler.py")
        info.pax_headers = {"comment": "c" * 70_000}
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="extended header"):
        tarball.validate(path)


def test_decompression_ratio_cap(tmp_path: Path) -> None:
    path = tmp_path / "zeros.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 32 * 1024 * 1024
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(PayloadTooLarge, match="more than 200 times its size"):
        tarball.validate(path)
    # The same bytes in a plain tar are fine: the ratio is 1.
    plain = tmp_path / "zeros.tar"
    with tarfile.open(plain, "w") as archive:
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    assert tarball.validate(plain).unpacked_bytes == info.size


def test_headers_count_towards_the_stream_cap(tmp_path: Path) -> None:
    # Many members, each with a PAX record under the per-record limit, add up.
    path = tmp_path / "many.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for i in range(100):
            info = tarfile.TarInfo(f"f{i}.py")
            info.pax_headers = {"comment": "c" * 60_000}
            archive.addfile(info, io.BytesIO(b""))
    limits = TarLimits(max_members=100, max_unpacked_bytes=1024 * 1024)
    assert limits.max_stream_bytes < path.stat().st_size
    with pytest.raises(PayloadTooLarge, match="decompresses to more than"):
        tarball.validate(path, limits)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_chain_of_extended_headers_is_refused(tmp_path: Path, kind: bytes) -> None:
    # tarfile recurses once per extended header: a thousand in a row held a thousand
    # records in memory and ended in a RecursionError.
    path = tmp_path / "chain.tar"
    size = 60 * 1024
    with path.open("wb") as out:
        for _ in range(1000):
            header = tarfile.TarInfo("././@LongLink")
            header.type = kind
            header.size = size
            out.write(header.tobuf(format=tarfile.GNU_FORMAT) if kind == tarfile.GNUTYPE_LONGNAME
                      else header.tobuf(format=tarfile.USTAR_FORMAT))
            record = b"%d comment=%s\n" % (size, b"c" * (size - 15))
            out.write(record.ljust(size, b"\n")[:size] if kind == tarfile.XHDTYPE
                      else b"n" * (size - 1) + b"\0")
        out.write(tarfile.TarInfo("handler.py").tobuf() + bytes(1024))
    with pytest.raises(InvalidArgument, match="more than 8 extended headers"):
        tarball.validate(path, TarLimits(max_unpacked_bytes=100 * 1024 * 1024))


def test_a_member_with_a_pax_record_a_long_name_and_a_long_link_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(tarfile.TarInfo("d/" + "t" * 300), io.BytesIO(b""))
        link = tarfile.TarInfo("d/" + "l" * 300)
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 300
        archive.addfile(link)
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as archive:
        link = tarfile.TarInfo("d/" + "\u00e9" * 200)
        link.type, link.linkname = tarfile.SYMTYPE, "\u00e8" * 200
        archive.addfile(link)
    assert tarball.validate(path).members == 2
    assert tarball.validate(tmp_path / "pax.tar").members == 1
