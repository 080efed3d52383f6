"""The rules an uploaded archive's members must meet, judged before a byte is extracted.

Pure logic over `tarfile` headers: every member is checked against the rules
(`check_member`), and the tree the members build together (`Tree`): links only to earlier
files and folders, never chained, nothing written twice or through a link. The first
violation is an error that names the member. Also the caps (`TarLimits`), the formats an
upload may have (told by magic bytes) and what validation reports (`TarSummary`).
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass

from lambdad.errors import InvalidArgument


@dataclass(frozen=True)
class TarLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 250 * 1024 * 1024
    max_name_bytes: int = 1024
    max_header_bytes: int = 64 * 1024  # one GNU long name/link or PAX record
    header_bytes_per_member: int = 4096  # headers' share of the decompressed stream
    max_ratio: int = 200  # decompressed / compressed, once past ratio_floor
    ratio_floor: int = 16 * 1024 * 1024

    @property
    def max_stream_bytes(self) -> int:
        """The most a valid archive can decompress to: its data plus its headers."""
        return (self.max_unpacked_bytes + self.max_members * self.header_bytes_per_member
                + 1024 * 1024)


DEFAULT_LIMITS = TarLimits()


# What an upload may be: a plain tar, or one compressed with gzip, bzip2 or xz, recognised
# by magic bytes. Nothing is guessed (no LZMA-alone, whose header has no magic): what
# `tarball.validate` judged is the format every later pass is handed and decompresses alike.
TAR, GZIP, BZIP2, XZ = "tar", "gzip", "bzip2", "xz"
FORMATS = (TAR, GZIP, BZIP2, XZ)


def detect_format(magic: bytes) -> str:
    """The archive's format from its first bytes (pure); anything else is a plain tar,
    which `tarfile` then accepts or refuses by its header checksums."""
    if magic.startswith(b"\x1f\x8b"):
        return GZIP
    if magic.startswith(b"BZh"):
        return BZIP2
    if magic.startswith(b"\xfd7zXZ\x00"):
        return XZ
    return TAR


@dataclass(frozen=True)
class TarSummary:
    members: int
    unpacked_bytes: int
    files: frozenset[str]  # regular files
    format: str = TAR  # what `extract` and `read_member` must be told
    links: frozenset[str] = frozenset()  # symlinks

    def require_regular(self, *names: str) -> None:
        """lambdad reads these files itself and never through a link: one that is a
        symlink is refused now, with its name, rather than found missing later."""
        for name in names:
            if name in self.links:
                raise InvalidArgument(f"{name} must be a regular file, not a symlink")


def normalize(name: str) -> str:
    """Strips a leading './' and trailing '/' the way tar writers differ on them."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_member(member: tarfile.TarInfo) -> str:
    """The rules one member's own header must meet (its name and type); returns the
    normalized name or raises InvalidArgument. What it may refer to is `Tree`'s business."""
    raw = member.name
    name = normalize(raw)
    if "\x00" in raw or "\x00" in member.linkname:
        raise InvalidArgument(f"archive member {raw!r}: NUL byte in name")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise InvalidArgument(f"archive member {raw!r}: absolute path")
    if ".." in raw.split("/"):
        raise InvalidArgument(f"archive member {raw!r}: '..' in path")
    if name in ("", ".") and not member.isdir():
        raise InvalidArgument(f"archive member {raw!r}: the folder itself must be a directory")
    if name and (name.startswith("/") or posixpath.normpath(name) != name):  # './/x'
        raise InvalidArgument(f"archive member {raw!r}: not a normalized path ('.' or '//')")
    if member.ischr() or member.isblk():
        raise InvalidArgument(f"archive member {raw!r}: device files are not allowed")
    if member.isfifo():
        raise InvalidArgument(f"archive member {raw!r}: fifos are not allowed")
    if member.issym():
        if not member.linkname:
            raise InvalidArgument(f"archive member {raw!r}: symlink with an empty target")
        if member.linkname.startswith("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: symlink to absolute path {member.linkname!r}")
    elif member.islnk():
        target = normalize(member.linkname)
        if member.linkname.startswith("/") or ".." in target.split("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: hardlink {member.linkname!r} points outside "
                "the function folder")
    elif not (member.isfile() or member.isdir()):
        raise InvalidArgument(f"archive member {raw!r}: unsupported member type")
    return "" if name == "." else name


_DIR, _FILE, _LINK = "folder", "file", "symlink"


class Tree:
    """The tree an archive builds, member by member, judged as the kernel will walk it.

    Each symlink was judged alone, and a path that did not exist yet by its spelling, so
    links could chain through names that only later became links (`p -> s/d/../..`
    before `s/d -> ..`) and climb out of the folder. Here a link may only name, step by
    step, folders and files that are already in the archive and are not links; so its
    meaning can never change later, links never chain, and lexical resolution is the
    kernel's. Also refused: a member named twice (a later one would replace, or be written
    through, the earlier), a member below a symlink or a file, a hard link to anything but
    an earlier regular file. Pure and in memory: `tarball.judged` runs it for every pass.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {"": _DIR}  # every path the archive makes, implicit too
        self._members: set[str] = set()

    def add(self, member: tarfile.TarInfo, name: str) -> None:
        """Records a member that `check_member` accepted, or raises InvalidArgument."""
        raw = member.name
        if name in self._members:
            raise InvalidArgument(f"archive member {raw!r}: {name or '.'!r} is in the archive "
                                  "more than once")
        parts = name.split("/") if name else []
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            kind = self._kinds.setdefault(above, _DIR)
            if kind != _DIR:
                raise InvalidArgument(f"archive member {raw!r}: its path goes through "
                                      f"{above!r}, which is a {kind}, not a folder")
        existing = self._kinds.get(name)
        if existing is not None and not (existing == _DIR and member.isdir()):
            raise InvalidArgument(f"archive member {raw!r}: {name!r} is already in the "
                                  f"archive as a {existing}")
        if member.issym():
            self._check_symlink(raw, parts[:-1], member.linkname)
            kind = _LINK
        elif member.islnk():
            target = normalize(member.linkname)
            if self._kinds.get(target) != _FILE or target not in self._members:
                raise InvalidArgument(
                    f"archive member {raw!r}: hardlink to {member.linkname!r}, which is not "
                    "an earlier regular file of the archive")
            kind = _FILE
        else:
            kind = _DIR if member.isdir() else _FILE
        self._kinds[name] = kind
        self._members.add(name)

    def _check_symlink(self, raw: str, folder: list[str], target: str) -> None:
        """Walks `target` from the link's folder as the kernel would: every name on the
        way must be an earlier folder (or, last, file) of the archive, never a link."""
        where = list(folder)
        steps = target.split("/")
        for index, step in enumerate(steps):
            if step in ("", "."):
                continue
            if step == "..":
                if not where:
                    raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} points "
                                          "outside the function folder")
                where.pop()
                continue
            where.append(step)
            here = "/".join(where)
            kind = self._kinds.get(here)
            if kind is None:
                raise InvalidArgument(
                    f"archive member {raw!r}: symlink {target!r}: {here!r} is not an earlier "
                    "file or folder of the archive (a link may only name what precedes it)")
            if kind == _LINK:
                raise InvalidArgument(
                    f"archive member {raw!r}: symlink {target!r} goes through the symlink "
                    f"{here!r}; links may not chain")
            if kind == _FILE and index < len(steps) - 1:
                raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} goes "
                                      f"through {here!r}, which is a file")
        if not where:
            raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} points at the "
                                  "function folder itself")
