"""A version's code and dependencies as plain files: what a standard-runtime version is.

Layout: ROOT/<function>/v<N>/{task,deps}. The folder is the daemon's (0700 at the
root), every file in it is 0644 (0755 if executable) and owned by the daemon, so a
function's user can read its code but never change it. A new container of the version
mounts `task` and `deps` read-only; a cell gets a private copy made of hard links
(`link_into`): no bytes are copied, the cell sees only its own version, and removing one
never touches the other.

A build writes the artifact in place: it extracts the upload into `begin`'s staging
folder, resolves (or links from the build cache) the wheels beside it, and `commit`
renames it into place. Nothing is copied a second time.

One owner: the builder may only `begin`, `commit`, `discard` and `save` (ArtifactSink)
and the runtime manager only `find` (ArtifactSource); cloning, removing and retaining are
decided by `lambdad.control.builds`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

TASK = "task"
DEPS = "deps"
RUNTIME_IMAGE = "runtime-image"  # the id of the runtime image the version was built on
BLOB = "blob-sha256"  # cluster mode: the sha256 of the blob this artifact is (not packed)


class ArtifactSink(Protocol):
    """What a build may do to the store: write its version's artifact."""

    def begin(self, function: str, version: int) -> Path: ...

    def commit(self, function: str, version: int, runtime_image: str = "") -> Path: ...

    def discard(self, function: str, version: int) -> None: ...

    def save(self, function: str, version: int, code: Path, deps: Path | None,
             runtime_image: str = "") -> Path: ...


class ArtifactSource(Protocol):
    """What the runtime manager may do: find a version's artifact to link into a cell."""

    def find(self, function: str, version: int) -> Path | None: ...


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def path(self, function: str, version: int) -> Path:
        return self.root / function / f"v{version}"

    def find(self, function: str, version: int) -> Path | None:
        """The artifact's folder, or None (a Dockerfile function, or built before artifacts)."""
        path = self.path(function, version)
        return path if (path / TASK).is_dir() else None

    def _staging(self, function: str, version: int) -> Path:
        final = self.path(function, version)
        return final.with_name(final.name + ".partial")

    def begin(self, function: str, version: int) -> Path:
        """An empty staging folder for the version's artifact: the build extracts the code
        into its `task/` and puts the wheels in its `deps/`; `commit` makes it the artifact.
        On the artifacts' file system, so the build cache's hard links reach it."""
        staging = self._staging(function, version)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit(self, function: str, version: int, runtime_image: str = "") -> Path:
        """The staged artifact, its modes normalized and the runtime image it was built for
        noted, put in place by one rename."""
        final = self.path(function, version)
        staging = self._staging(function, version)
        (staging / DEPS).mkdir(exist_ok=True)
        (staging / RUNTIME_IMAGE).write_text(runtime_image + "\n")
        normalize_modes(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        return final

    def discard(self, function: str, version: int) -> None:
        """A build that failed: its staging folder goes, and the function's folder if that
        leaves it empty (a first deploy that failed leaves nothing)."""
        staging = self._staging(function, version)
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: the function has versions
            staging.parent.rmdir()

    def save(self, function: str, version: int, code: Path, deps: Path | None,
             runtime_image: str = "") -> Path:
        """Copies a build's code (and resolved dependencies) in; atomic by rename."""
        staging = self.begin(function, version)
        try:
            shutil.copytree(code, staging / TASK, symlinks=True)
            if deps is not None and deps.is_dir():
                shutil.copytree(deps, staging / DEPS, symlinks=True)
            return self.commit(function, version, runtime_image)
        except BaseException:
            self.discard(function, version)
            raise

    @staticmethod
    def blob(artifact: Path) -> str:
        """The sha256 of the shared blob the artifact is (cluster mode), "" if unknown. A
        function deleted and deployed again restarts at v1: a node that missed the delete
        must see that its `v1` is another blob's, not the version's."""
        try:
            return (artifact / BLOB).read_text().strip()
        except OSError:
            return ""

    @staticmethod
    def mark_blob(artifact: Path, sha256: str) -> None:
        (artifact / BLOB).write_text(sha256 + "\n")

    @staticmethod
    def runtime_image(artifact: Path) -> str:
        """The runtime image id an artifact was built for ("" if unknown)."""
        try:
            return (artifact / RUNTIME_IMAGE).read_text().strip()
        except OSError:
            return ""

    def clone(self, function: str, source: int, version: int) -> Path | None:
        """A config-only version shares its source's files (hard links, no copy)."""
        origin = self.find(function, source)
        if origin is None:
            return None
        final = self.path(function, version)
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        link_tree(origin, staging)
        os.rename(staging, final)
        return final

    def remove(self, function: str, version: int) -> None:
        """The version's artifact, and the function's folder if it was the last."""
        path = self.path(function, version)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: other versions
            path.parent.rmdir()

    def remove_function(self, function: str) -> None:
        shutil.rmtree(self.root / function, ignore_errors=True)

    def retain(self, keep: Iterable[tuple[str, int]]) -> int:
        """Removes every artifact not in `keep` (left by a daemon killed mid-deploy)."""
        wanted = {self.path(f, v) for f, v in keep}
        removed = 0
        if not self.root.is_dir():
            return 0
        for function in self.root.iterdir():
            for version in function.iterdir():
                if version not in wanted:
                    if version.is_dir() and not version.is_symlink():
                        shutil.rmtree(version, ignore_errors=True)
                    else:  # a cluster fetch's vN.blob.partial (build/localize.py)
                        version.unlink(missing_ok=True)
                    removed += 1
            if not any(function.iterdir()):
                function.rmdir()
        return removed


def link_into(artifact: Path, target: Path) -> None:
    """Fills `target`'s task/ and deps/ folders with hard links to `artifact`'s."""
    for part in (TASK, DEPS):
        if (artifact / part).is_dir():
            link_tree(artifact / part, target / part)


def link_tree(source: Path, target: Path) -> None:
    """Recreates `source`'s folders under `target` and hard-links its files into them.

    On a cold start through a stem cell this runs before the import can begin, so it is
    quick: each folder is read once (scandir's types, no stat per file) and linked by
    folder descriptors (linkat), not by full paths; 3000 files of wheels took 850 ms
    with os.walk and path joins, about 170 ms this way. Falls back to copying when the
    two are on different file systems.
    """
    target.mkdir(mode=0o755, exist_ok=True)
    os.chmod(target, 0o755)  # whatever lambdad's umask: uid 10001 must traverse it
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    src_fd = os.open(source, flags)
    try:
        dst_fd = os.open(target, flags)
        try:
            _link_folder(src_fd, dst_fd, os.fspath(source), os.fspath(target))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _link_folder(src_fd: int, dst_fd: int, source: str, target: str) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(src_fd) as entries:
        listed = list(entries)
    for entry in listed:
        name = entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
        elif entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=dst_fd)
            sub_dst = os.open(name, flags, dir_fd=dst_fd)
            try:
                os.chmod(sub_dst, 0o755)
                sub_src = os.open(name, flags, dir_fd=src_fd)
                try:
                    _link_folder(sub_src, sub_dst, os.path.join(source, name),
                                 os.path.join(target, name))
                finally:
                    os.close(sub_src)
            finally:
                os.close(sub_dst)
        else:
            try:
                os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd,
                        follow_symlinks=False)
            except OSError:
                shutil.copy2(os.path.join(source, name), os.path.join(target, name))


def normalize_modes(root: Path) -> None:
    """Readable by everyone, writable by nobody but the daemon (whatever its umask).

    Only what differs is changed: wheels linked from the build cache were normalized when
    their first artifact was, so a warm deploy's walk is lstat calls alone."""
    for folder, dirs, files in os.walk(root):
        _chmod(folder, os.lstat(folder).st_mode, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                _chmod(path, mode, 0o755 if mode & 0o111 else 0o644)
        for name in dirs:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):  # not a link to one
                _chmod(path, mode, 0o755)


def _chmod(path: str, mode: int, wanted: int) -> None:
    if stat.S_IMODE(mode) != wanted:
        os.chmod(path, wanted)
