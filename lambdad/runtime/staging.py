"""Artifacts linked ahead of the cold start that needs them.

Specializing a stem cell hard-links the version's files into the cell's code folder
(`link_into`) before the import can begin: 15-90 ms for the FastAPI example (its deps)
on this host, nearly all of issue 17's from-zero overhead (init minus import). Linked
ahead, into a folder of lambdad's own beside the cells' (STATE/c/stage-<token>, never
mounted into a container, so no function can change it), the cold start only renames
the top entries of task/ and deps/ into the cell's folders (`move_into`, tens of renames).

One staged copy per artifact, made a moment after a specialization of that artifact (the
next cold start of the version is the likely one), at most MAX_STAGED of them (the
oldest go first); one whose artifact changed since (a rebuild of the same folder) is not
used, one whose artifact is gone (its version deleted) is removed by the runtime's
housekeeping. A restart's reconcile removes what is left in STATE/c that it did not adopt.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambdad.build.artifacts import DEPS, TASK, link_into

MAX_STAGED = 32
STAGE_PREFIX = "stage-"


@dataclass(frozen=True)
class Staged:
    path: Path
    stamp: tuple[int, ...]  # the artifact's `stamp` when linked


def stamp(artifact: Path) -> tuple[int, ...]:
    """What changes when the artifact's folder or its task/ or deps/ entries change (a
    file's content is shared anyway: the copy's files are hard links to the artifact's)."""
    found: list[int] = []
    for folder in (artifact, artifact / TASK, artifact / DEPS):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            found += (0, 0, 0)
            continue
        found += (st.st_dev, st.st_ino, st.st_mtime_ns)
    return tuple(found)


def prepare(artifact: Path, path: Path) -> None:
    """Links `artifact` into the new folder `path`, as `link_into` links a cell's."""
    path.mkdir(mode=0o700)
    link_into(artifact, path)


def move_into(staged: Path, target: Path) -> None:
    """Moves the staged task/ and deps/ entries into `target`'s (a cell's code folder,
    whose task/ and deps/ are bind-mounted into its container, so the folders themselves
    stay; their entries are renamed in), then removes the emptied staging folder."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for part in (TASK, DEPS):
        try:
            src_fd = os.open(staged / part, flags)
        except FileNotFoundError:  # the artifact has no such part
            continue
        try:
            dst_fd = os.open(target / part, flags)
            try:
                for name in os.listdir(src_fd):
                    os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        os.rmdir(staged / part)
    os.rmdir(staged)


class Stages:
    """The staged copies, by artifact folder; `discard` is told which folders to remove
    (in the background, as any tree lambdad removes)."""

    def __init__(self, folder: Path, discard: Callable[[Path], None]) -> None:
        self._folder = folder
        self._discard = discard
        self._staged: OrderedDict[Path, Staged] = OrderedDict()
        self._staging: set[Path] = set()

    def take(self, artifact: Path) -> Path | None:
        """The staged copy of `artifact`, now the caller's; None when there is none or it
        was linked from an earlier artifact in the same folder."""
        staged = self._staged.pop(artifact, None)
        if staged is None:
            return None
        try:
            current = stamp(artifact)
        except OSError:
            current = None
        if current != staged.stamp:
            self._discard(staged.path)
            return None
        return staged.path

    def wanted(self, artifact: Path) -> Path | None:
        """A new folder to stage `artifact` in, unless it is staged or being staged."""
        if artifact in self._staged or artifact in self._staging:
            return None
        self._staging.add(artifact)
        return self._folder / f"{STAGE_PREFIX}{os.urandom(6).hex()}"

    def staged(self, artifact: Path, path: Path, linked: tuple[int, ...] | None) -> None:
        """Staging `artifact` at `path` ended (`linked`: its stamp; None: it failed)."""
        self._staging.discard(artifact)
        if linked is None:
            self._discard(path)
            return
        self._staged[artifact] = Staged(path, linked)
        while len(self._staged) > MAX_STAGED:
            _, oldest = self._staged.popitem(last=False)
            self._discard(oldest.path)

    def sweep(self) -> None:
        """Discards the copies of artifacts that are gone (their version deleted): their
        hard links would keep the files' data on disk."""
        for artifact in [a for a in self._staged if not os.path.isdir(a)]:
            self._discard(self._staged.pop(artifact).path)

    def __len__(self) -> int:
        return len(self._staged)
