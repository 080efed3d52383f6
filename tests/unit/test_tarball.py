"""Hostile and broken archives are refused before anything is extracted."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lambdad.build import extraction, tarball, tarrules
from lambdad.build.tarrules import TarLimits
from lambdad.errors import InvalidArgument, PayloadTooLarge
from tests.support.archives import Member, order_trick, write
from tests.support.archives import folder as _dir
from tests.support.archives import hardlink as _hard
from tests.support.archives import symlink as _sym


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
    assert summary.format == tarrules.GZIP
    assert tarball.read_member(path, "lambda.toml", summary.format) == 'name = "greet"\n'
    assert tarball.read_member(path, "missing.toml", summary.format) is None


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
        (_info("link", tarfile.SYMTYPE, "../handler.py"), "points outside"),
        (_info("link", tarfile.SYMTYPE, ""), "empty target"),
        (_info("hard", tarfile.LNKTYPE, "/etc/shadow"), "points outside"),
        (_info("hard", tarfile.LNKTYPE, "../x"), "points outside"),
        (_info("hard", tarfile.LNKTYPE, "not-in-archive"), "not an earlier regular file"),
        (("a/./b.py", b"x"), "not a normalized path"),
        (("a//b.py", b"x"), "not a normalized path"),
        ((".//b.py", b"x"), "not a normalized path"),  # found by hypothesis: "/b.py" once "./" went
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
    extraction.extract(path, tmp_path / "out", tarball.validate(path).format)
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "x = 1\n"


def test_extract_strips_dangerous_bits(tmp_path: Path) -> None:
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
    out = tmp_path / "out"
    extraction.extract(path, out, tarball.validate(path).format)
    tool = (out / "tool.sh").stat()
    assert tool.st_mode & 0o7022 == 0  # no setuid/setgid/sticky, no group/world write
    assert (tool.st_uid, tool.st_gid) != (4242, 4242)
    assert (out / "pkg").stat().st_mode & 0o777 == 0o755
    assert (out / "link.sh").is_symlink() and (out / "hard.sh").read_text() == "#!\n"
    assert os.readlink(out / "link.sh") == "tool.sh"


# The tree rules, in memory: a link may only name, step by step, earlier files and folders
# that are not links; nothing may be named twice or be reached through a link.

def _tree(*members: Member) -> None:
    """Runs `check_member` and `Tree` over headers alone (a str is a regular file)."""
    tree = tarrules.Tree()
    for member in members:
        assert not isinstance(member, tuple)
        info = tarfile.TarInfo(member) if isinstance(member, str) else member
        tree.add(info, tarrules.check_member(info))


ALLOWED: dict[str, list[Member]] = {
    "link to an earlier file": ["a.py", _sym("b.py", "a.py")],
    "link to an earlier file in a sub-folder": ["pkg/mod.py", _sym("alias.py", "pkg/mod.py")],
    "link up and down through folders": ["a/b/x.py", "a/c/y.py", _sym("a/b/l", "../c/y.py")],
    "link to an earlier folder": [_dir("lib"), "lib/x.py", _sym("vendor", "lib")],
    "link to an implicit folder": ["lib/x.py", _sym("vendor", "lib/")],
    "link with ./ steps": ["a/x.py", _sym("l", "./a/./x.py")],
    "link up to an ancestor": ["a/b/x.py", _sym("a/b/up", "..")],
    "hardlink to an earlier file": ["a.py", _hard("b.py", "a.py")],
    "hardlink to an earlier hardlink": ["a.py", _hard("b.py", "a.py"), _hard("c.py", "./b.py")],
    "folder after its contents": ["a/x.py", _dir("a")],
    "the folder itself, once": [_dir("."), "a.py"],
}

REFUSED: dict[str, tuple[list[Member], str, str]] = {
    "the reported order trick (requirements.txt)": (
        order_trick("requirements.txt", "/etc/shadow"), "requirements.txt",
        "'p' is not an earlier file or folder"),
    "the reported order trick (Dockerfile)": (
        ["Dockerfile", *order_trick("Dockerfile", "/etc/cron.d/x")], "Dockerfile",
        "more than once"),
    "link to a later file": ([_sym("b.py", "a.py"), "a.py"], "b.py", "'a.py' is not an earlier"),
    "link to nothing": ([_sym("b.py", "missing.py")], "b.py", "not an earlier"),
    "link through a future link": (
        [_dir("s"), _sym("p", "s/d/.."), _sym("s/d", "..")], "p", "'s/d' is not an earlier"),
    "link to a link": (["a.py", _sym("b.py", "a.py"), _sym("c.py", "b.py")], "c.py",
                       "goes through the symlink 'b.py'"),
    "link through a link to a folder": (
        ["lib/x.py", _sym("v", "lib"), _sym("y.py", "v/x.py")], "y.py",
        "goes through the symlink 'v'"),
    "link that climbs through a link with ..": (
        ["a/b/x.py", _sym("a/b/up", ".."), _sym("esc", "a/b/up/../..")], "esc",
        "goes through the symlink 'a/b/up'"),
    "link through a file": (["a.py", _sym("l", "a.py/../a.py")], "l", "which is a file"),
    "link to a file as a folder": (["a.py", _sym("l", "a.py/")], "l", "which is a file"),
    "link to the folder itself": (["a/x.py", _sym("a/l", "..")], "a/l", "folder itself"),
    "link to the folder itself, lexically": ([_sym("l", ".")], "l", "folder itself"),
    "link climbing out": (["a/x.py", _sym("a/l", "../..")], "a/l", "points outside"),
    "member below a symlink": ([_dir("lib"), _sym("v", "lib"), "v/x.py"], "v/x.py",
                               "goes through 'v', which is a symlink"),
    "member below a file": (["a", "a/x.py"], "a/x.py", "goes through 'a', which is a file"),
    "duplicate file": (["a.py", "a.py"], "a.py", "more than once"),
    "duplicate, spelled with ./": (["a.py", "./a.py"], "./a.py", "more than once"),
    "file, then a symlink of that name": (["a.py", "b.py", _sym("a.py", "b.py")], "a.py",
                                          "more than once"),
    "symlink, then a file of that name": (["b.py", _sym("a.py", "b.py"), "a.py"], "a.py",
                                          "more than once"),
    "duplicate folder": ([_dir("a"), _dir("a/")], "a/", "more than once"),
    "file over an implicit folder": (["a/x.py", "a"], "a", "already in the archive as a folder"),
    "symlink over an implicit folder": (["a/x.py", "b.py", _sym("a", "b.py")], "a",
                                        "already in the archive as a folder"),
    "hardlink to a later file": ([_hard("b.py", "a.py"), "a.py"], "b.py",
                                 "not an earlier regular file"),
    "hardlink to a symlink": (["a.py", _sym("l", "a.py"), _hard("h", "l")], "h",
                              "not an earlier regular file"),
    "hardlink to a folder": ([_dir("d"), _hard("h", "d")], "h", "not an earlier regular file"),
    "hardlink to an implicit folder": (["d/x.py", _hard("h", "d")], "h",
                                       "not an earlier regular file"),
}


@pytest.mark.parametrize("members", ALLOWED.values(), ids=list(ALLOWED))
def test_tree_rules_accept_what_function_folders_hold(members: list[Member]) -> None:
    _tree(*members)


@pytest.mark.parametrize(("members", "member", "message"), REFUSED.values(), ids=list(REFUSED))
def test_tree_rules_refuse_links_that_chain_dangle_or_hide(
    members: list[Member], member: str, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _tree(*members)
    assert caught.value.message.startswith(f"archive member {member!r}:"), caught.value.message
    assert message in caught.value.message, caught.value.message


@pytest.mark.parametrize("name", ["requirements.txt", "Dockerfile"])
def test_the_symlink_order_trick_is_refused_before_and_during_extraction(
    tmp_path: Path, name: str
) -> None:
    """On the old code `validate` accepted this and both extraction paths (the `data`
    filter, and the fallback used on Python < 3.11.4) made `name` resolve to the host's
    file. Now validation refuses it, and so does extraction on its own."""
    victim = tmp_path / "victim.txt"
    victim.write_text("secret\n")
    depth = len(tmp_path.parts) + 4
    path = write(tmp_path / "code.tar.gz", order_trick(name, str(victim), depth))
    with pytest.raises(InvalidArgument, match=rf"archive member '{name}'"):
        tarball.validate(path)
    dest = tmp_path / "build" / "code"
    with pytest.raises(InvalidArgument, match=rf"archive member '{name}'"):
        extraction.extract(path, dest, tarrules.GZIP)
    assert not (dest / name).exists()
    assert victim.read_text() == "secret\n"


class _NoRules(tarrules.Tree):
    """The tree rules switched off, to show extraction on its own never follows a link."""

    def add(self, member: tarfile.TarInfo, name: str) -> None:
        return None


@pytest.mark.parametrize("case", ["file below a link", "file over a link", "folder over a link",
                                  "hardlink to a link"])
def test_extraction_itself_never_writes_through_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("unchanged")
    up = "../" * 2  # from dest/ (tmp/out/code) to tmp/
    members: list[Member] = {
        "file below a link": [_sym("d", up + "victim"), "d/file", "d/new"],
        "file over a link": [_sym("file", up + "victim/file"), "file"],
        "folder over a link": [_sym("d", up + "victim"), _dir("d")],
        "hardlink to a link": [_sym("l", up + "victim/file"), _hard("h", "l")],
    }[case]
    path = write(tmp_path / "code.tar.gz", members)
    monkeypatch.setattr(tarball, "Tree", _NoRules)
    with pytest.raises(InvalidArgument, match=r"cannot extract|not a regular file"):
        extraction.extract(path, tmp_path / "out" / "code", tarrules.GZIP)
    assert (victim / "file").read_text() == "unchanged"
    assert sorted(p.name for p in victim.iterdir()) == ["file"]
    assert not (tmp_path / "out" / "code" / "h").exists()


def test_duplicate_members_are_refused_before_one_replaces_another(tmp_path: Path) -> None:
    path = write(tmp_path / "code.tar.gz", ["Dockerfile", "handler.py",
                                              _sym("Dockerfile", "handler.py")])
    with pytest.raises(InvalidArgument, match="'Dockerfile' is in the archive more than once"):
        tarball.validate(path)


@pytest.mark.parametrize("name", ["lambda.toml", "Dockerfile", "requirements.txt"])
def test_files_lambdad_reads_must_not_be_links(tmp_path: Path, name: str) -> None:
    """A link inside the folder passes the tree rules; these files it refuses all the same,
    naming them, before a build begins."""
    path = write(tmp_path / "code.tar.gz", ["real", _sym(name, "real")])
    summary = tarball.validate(path)
    assert summary.links == {name}
    summary.require_regular("handler.py")
    with pytest.raises(InvalidArgument, match=rf"^{name} must be a regular file, not a symlink"):
        summary.require_regular("lambda.toml", "Dockerfile", "requirements.txt")


def test_read_member_refuses_a_manifest_that_is_a_link(tmp_path: Path) -> None:
    path = write(tmp_path / "code.tar.gz", ["real.toml", _sym("lambda.toml", "real.toml")])
    fmt = tarball.validate(path).format
    with pytest.raises(InvalidArgument,
                       match=r"lambda\.toml must be a regular file, not a symlink"):
        tarball.read_member(path, "lambda.toml", fmt)


# Reading files of an extracted tree: never through a link, only regular files.

def test_open_regular_reads_plain_files_and_refuses_the_rest(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("root:secret")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "plain.txt").write_text("ok")
    (tree / "sub" / "x.txt").write_text("deep")
    os.symlink(outside, tree / "link.txt")
    os.symlink("plain.txt", tree / "inside-link.txt")
    os.symlink(tmp_path, tree / "up")
    os.mkfifo(tree / "fifo")
    assert extraction.open_regular(tree, "plain.txt", 10) == b"ok"
    assert extraction.open_regular(tree, "sub/x.txt", 10) == b"deep"
    assert extraction.open_regular(tree, "missing.txt", 10) is None
    for name in ("link.txt", "inside-link.txt"):
        with pytest.raises(InvalidArgument, match=f"{name} must be a regular file, not a symlink"):
            extraction.open_regular(tree, name, 100)
    with pytest.raises(InvalidArgument, match="a folder on its path is a link"):
        extraction.open_regular(tree, "up/secret", 100)
    with pytest.raises(InvalidArgument, match="fifo must be a regular file"):
        extraction.open_regular(tree, "fifo", 100)
    with pytest.raises(InvalidArgument, match="sub must be a regular file"):
        extraction.open_regular(tree, "sub", 100)
    with pytest.raises(PayloadTooLarge, match=r"plain\.txt is larger than 1 bytes"):
        extraction.open_regular(tree, "plain.txt", 1)


def test_create_new_never_writes_an_existing_file_or_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("unchanged")
    os.symlink(victim, tmp_path / "Dockerfile")
    with pytest.raises(FileExistsError):
        extraction.create_new(tmp_path / "Dockerfile", b"LABEL x=1\n")
    with pytest.raises(FileExistsError):
        extraction.create_new(victim, b"LABEL x=1\n")
    assert victim.read_text() == "unchanged"
    extraction.create_new(tmp_path / "new", b"FROM scratch\n")
    assert (tmp_path / "new").read_bytes() == b"FROM scratch\n"


# The format: what the validator judged is what extraction reads.

@pytest.mark.parametrize(("magic", "fmt"), [
    (b"\x1f\x8b\x08\x00", tarrules.GZIP), (b"BZh91AY", tarrules.BZIP2),
    (b"\xfd7zXZ\x00\x00", tarrules.XZ), (b"\x5d\x00\x00\x80\x00", tarrules.TAR),
    (b"\x5e\x00\x10\x00\x00", tarrules.TAR), (b"handler.py\x00", tarrules.TAR), (b"", tarrules.TAR),
])
def test_format_is_told_by_magic_bytes_only(magic: bytes, fmt: str) -> None:
    assert tarrules.detect_format(magic) == fmt


def _lzma_alone(tmp_path: Path, **filters: int) -> Path:
    """attacks/tar_format_differential.py: an LZMA-alone stream, which `tarfile.open("r:*")`
    (the old extract and read_member) decompressed and the validator did not."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        data = b'name = "x"\nhandler = "h.h"\n'
        info = tarfile.TarInfo("lambda.toml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    path = tmp_path / "code.tar"
    path.write_bytes(lzma.compress(buf.getvalue(), format=lzma.FORMAT_ALONE,
                                   filters=[{"id": lzma.FILTER_LZMA1, **filters}]))
    return path


@pytest.mark.parametrize("filters", [{"dict_size": 1 << 12, "lc": 4}, {"dict_size": 1 << 23}],
                         ids=["unrecognised-props", "the-5d-00-00-header"])
def test_validator_and_extractor_read_the_same_format(
    tmp_path: Path, filters: dict[str, int]
) -> None:
    path = _lzma_alone(tmp_path, **filters)
    fmt = tarrules.detect_format(path.read_bytes()[:6])
    assert fmt == tarrules.TAR
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        tarball.validate(path)
    # Handed what the validator judged, neither reads another archive out of the bytes.
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        tarball.read_member(path, "lambda.toml", fmt)
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        extraction.extract(path, tmp_path / "out", fmt)
    assert not (tmp_path / "out" / "lambda.toml").exists()


def test_the_format_given_is_the_format_read(tmp_path: Path) -> None:
    path = write(tmp_path / "code.tar.gz", ["lambda.toml"])
    assert tarball.read_member(path, "lambda.toml", tarrules.GZIP) == "data of lambda.toml"
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        tarball.read_member(path, "lambda.toml", tarrules.TAR)
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        extraction.extract(path, tmp_path / "out", tarrules.XZ)
    with pytest.raises(InvalidArgument, match="unknown archive format 'lzma'"):
        extraction.extract(path, tmp_path / "out", "lzma")


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_accepted_format_round_trips(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path / "code.tar", ["handler.py", "pkg/mod.py"], mode)
    summary = tarball.validate(path)
    extraction.extract(path, tmp_path / "out", summary.format)
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "data of pkg/mod.py"
    assert tarball.read_member(path, "handler.py", summary.format) == "data of handler.py"


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
        archive.addfile(tarfile.TarInfo("d/" + "\u00e8" * 200), io.BytesIO(b""))
        link = tarfile.TarInfo("d/" + "\u00e9" * 200)
        link.type, link.linkname = tarfile.SYMTYPE, "\u00e8" * 200
        archive.addfile(link)
    assert tarball.validate(path).members == 2
    assert tarball.validate(tmp_path / "pax.tar").members == 2
