"""Artifacts linked ahead of a cold start (runtime/staging.py): the move into a cell's code
folder gives what `link_into` gives, and the bookkeeping hands a staged copy out once,
never one of an artifact that changed since, and keeps at most MAX_STAGED."""

from __future__ import annotations

import os
from pathlib import Path

from lambdad.build.artifacts import link_into
from lambdad.runtime import staging
from lambdad.runtime.staging import Stages, move_into, prepare, stamp


def _artifact(root: Path) -> Path:
    artifact = root / "artifact"
    (artifact / "task" / "pkg").mkdir(parents=True)
    (artifact / "task" / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (artifact / "task" / "pkg" / "__init__.py").write_text("")
    (artifact / "deps" / "lib" / "sub").mkdir(parents=True)
    (artifact / "deps" / "lib" / "sub" / "m.py").write_text("X = 1\n")
    (artifact / "deps" / "lib-1.0.dist-info").mkdir()
    (artifact / "deps" / "link").symlink_to("lib")
    return artifact


def _cell(root: Path, name: str) -> Path:
    code = root / name
    for part in (code / "task", code / "deps"):
        part.mkdir(parents=True)
    return code


def _tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under root: its kind, mode and (files) inode."""
    found: dict[str, tuple[str, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            found[os.path.relpath(path, root)] = (kind, st.st_mode,
                                                  st.st_ino if kind == "file" else 0)
    return found


def test_a_staged_copy_moved_into_a_cell_is_what_linking_gives(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    linked, moved = _cell(tmp_path, "linked"), _cell(tmp_path, "moved")
    link_into(artifact, linked)
    staged = tmp_path / "stage-1"
    prepare(artifact, staged)
    move_into(staged, moved)
    assert _tree(moved) == _tree(linked)  # the same files: hard links to the artifact's
    assert _tree(moved)["task/app.py"][2] == os.stat(artifact / "task" / "app.py").st_ino
    assert not staged.exists()


def test_an_artifact_without_deps_moves_its_task_only(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    (artifact / "task").mkdir(parents=True)
    (artifact / "task" / "app.py").write_text("")
    staged, cell = tmp_path / "stage-1", _cell(tmp_path, "cell")
    prepare(artifact, staged)
    move_into(staged, cell)
    assert os.listdir(cell / "task") == ["app.py"] and os.listdir(cell / "deps") == []
    assert not staged.exists()


def test_a_staged_copy_is_handed_out_once(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    discarded: list[Path] = []
    stages = Stages(tmp_path, discarded.append)
    assert stages.take(artifact) is None
    path = stages.wanted(artifact)
    assert path is not None and path.parent == tmp_path
    assert path.name.startswith(staging.STAGE_PREFIX)
    assert stages.wanted(artifact) is None  # being staged: not twice
    stages.staged(artifact, path, stamp(artifact))
    assert stages.wanted(artifact) is None  # staged already
    assert stages.take(artifact) == path
    assert stages.take(artifact) is None and discarded == []


def test_a_copy_of_an_artifact_that_changed_since_is_not_used(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    discarded: list[Path] = []
    stages = Stages(tmp_path, discarded.append)
    path = stages.wanted(artifact)
    assert path is not None
    stages.staged(artifact, path, stamp(artifact))
    os.utime(artifact, ns=(1, 1))  # rebuilt in the same folder
    assert stages.take(artifact) is None and discarded == [path]
    path = stages.wanted(artifact)
    assert path is not None
    stages.staged(artifact, path, stamp(artifact))
    (artifact / "task" / "broken.txt").write_text("")  # a file added to its task/
    assert stages.take(artifact) is None and discarded[-1] == path


def test_a_failed_staging_is_discarded_and_may_be_tried_again(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    discarded: list[Path] = []
    stages = Stages(tmp_path, discarded.append)
    path = stages.wanted(artifact)
    assert path is not None
    stages.staged(artifact, path, None)
    assert discarded == [path] and stages.take(artifact) is None
    assert stages.wanted(artifact) is not None


def test_at_most_max_staged_copies_the_oldest_go_first(tmp_path: Path) -> None:
    discarded: list[Path] = []
    stages = Stages(tmp_path, discarded.append)
    artifacts = []
    for index in range(staging.MAX_STAGED + 2):
        artifact = tmp_path / f"a{index}"
        artifact.mkdir()
        artifacts.append(artifact)
        path = stages.wanted(artifact)
        assert path is not None
        stages.staged(artifact, path, stamp(artifact))
    assert len(stages) == staging.MAX_STAGED and len(discarded) == 2
    assert stages.take(artifacts[0]) is None and stages.take(artifacts[1]) is None
    assert stages.take(artifacts[-1]) is not None


def test_the_copy_of_a_deleted_artifact_is_swept(tmp_path: Path) -> None:
    kept, deleted = _artifact(tmp_path / "k"), _artifact(tmp_path / "d")
    discarded: list[Path] = []
    stages = Stages(tmp_path, discarded.append)
    paths = {}
    for artifact in (kept, deleted):
        path = stages.wanted(artifact)
        assert path is not None
        stages.staged(artifact, path, stamp(artifact))
        paths[artifact] = path
    import shutil
    shutil.rmtree(deleted)
    stages.sweep()
    assert discarded == [paths[deleted]] and stages.take(kept) == paths[kept]
