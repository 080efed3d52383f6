"""Writing an archive that `tarball.validate` accepted, and reading files of the tree it
made, never through a link: with directory fds, so no path lambdad writes or reads there
is ever resolved through a link, whatever the rules might have missed."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from pathlib import Path

from lambdad.build.tarball import judged, opened
from lambdad.build.tarrules import DEFAULT_LIMITS, TarLimits, normalize
from lambdad.errors import InvalidArgument, PayloadTooLarge

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 32 * 1024  # below `tarball._Guard`'s largest read


def extract(path: Path, dest: Path, fmt: str, limits: TarLimits = DEFAULT_LIMITS) -> None:
    """Extracts the archive `validate` accepted, read as the `fmt` it reported and judged
    again by the same rules on the way.

    Nothing is opened by a path that could hold a link: every folder is entered with
    `O_DIRECTORY | O_NOFOLLOW` from the one above, files are created with
    `O_CREAT | O_EXCL | O_NOFOLLOW`, links are made with `symlinkat`/`linkat` and never
    followed. Files get the mode's owner and read/execute bits (0644 or 0755 as packed,
    no setuid/setgid/sticky, no group or world write), folders 0755, and lambdad as owner.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.open(dest, _DIR_FLAGS)
    folders: list[tuple[str, float]] = []
    try:
        with opened(path, fmt, limits) as archive:
            for member, name in judged(archive, limits):
                try:
                    _place(root, archive, member, name)
                except OSError as exc:
                    raise InvalidArgument(f"archive member {member.name!r}: cannot extract: "
                                          f"{exc.strerror or exc}") from None
                if member.isdir():
                    folders.append((name, member.mtime))
        for name, mtime in reversed(folders):  # after their contents changed them
            with contextlib.suppress(OSError, ValueError, OverflowError):
                fd = _descend(root, name.split("/") if name else [], create=False)
                try:
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
    finally:
        os.close(root)


def _descend(root: int, parts: list[str], *, create: bool) -> int:
    """A new fd of the folder `parts` below `root`, made (0755) where missing if
    `create`; a link on the way is an error (ELOOP or ENOTDIR), never followed."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                below = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.fchmod(below, 0o755)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _place(root: int, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
    if not name:  # the folder itself
        os.fchmod(root, 0o755)
        return
    *above, base = name.split("/")
    parent = _descend(root, above, create=True)
    try:
        if member.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
            try:
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            *target_above, target = normalize(member.linkname).split("/")
            source = _descend(root, target_above, create=False)
            try:
                if not stat.S_ISREG(os.stat(target, dir_fd=source, follow_symlinks=False).st_mode):
                    raise InvalidArgument(f"archive member {member.name!r}: hardlink to "
                                          f"{member.linkname!r}, which is not a regular file")
                os.link(target, base, src_dir_fd=source, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(source)
        else:
            handle = archive.extractfile(member)
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                left = member.size
                while handle is not None and left > 0 and (chunk := handle.read(min(_CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
                if left > 0:
                    raise InvalidArgument(f"archive member {member.name!r}: truncated")
                os.fchmod(fd, (member.mode & 0o755) | 0o600)
                with contextlib.suppress(OSError, ValueError, OverflowError):
                    os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(parent)


def open_regular(folder: Path, name: str, max_bytes: int) -> bytes | None:
    """The bytes of `folder/name`, a file of an extracted tree, opened without following a
    link anywhere below `folder`; None if it is missing. A link, folder or anything but a
    regular file is refused (InvalidArgument naming it), as is one over `max_bytes`."""
    root = os.open(folder, _DIR_FLAGS)
    try:
        *above, base = name.split("/")
        try:
            parent = _descend(root, above, create=False)
        except FileNotFoundError:
            return None
        except OSError:
            raise InvalidArgument(f"{name}: a folder on its path is a link") from None
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            kind = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise InvalidArgument(f"{name} must be a regular file, not {kind}") from None
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidArgument(f"{name} must be a regular file")
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{name} is larger than {max_bytes} bytes")
        return data
    finally:
        os.close(root)


def create_new(path: Path, data: bytes) -> None:
    """Writes `data` to a file that this call creates (O_CREAT | O_EXCL | O_NOFOLLOW):
    never into one that exists, nor through a link."""
    fd = os.open(path, _NEW_FILE, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
