"""Stem-cell pool bookkeeping and the artifact store, without Docker."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lambdad.build.artifacts import ArtifactStore, link_into, link_tree
from lambdad.functions import FunctionConfig
from lambdad.runtime.cells import (
    REFILL_DELAY_S,
    Cell,
    CellClass,
    CellPool,
    needs_own_process,
)

SMALL = CellClass(128, "none", 1.0, 256)
BIG = CellClass(512, "none", 1.0, 256)
NETWORKED = CellClass(128, "bridge", 1.0, 256)


class Harness:
    def __init__(self, size: int = 2, *, max_starting: int = 2, delayed: bool = False) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []  # `later`'s, when delayed
        self.fail = 0
        self.gate: asyncio.Event | None = None
        self.started: list[Cell] = []
        self.destroyed: list[Cell] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids = itertools.count(1)
        self.pool = CellPool(size, start=self.start, destroy=self.destroy, spawn=self.spawn,
                             max_starting=max_starting, clock=lambda: self.now,
                             later=self.later if delayed else None)

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((delay, callback))

    async def start(self, cell_class: CellClass) -> Cell:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("image missing")
        n = next(self.ids)
        cell = Cell(f"cell{n}", cell_class, f"c{n}", None, Path("/y"))  # no folder needed here
        self.started.append(cell)
        return cell

    async def destroy(self, cell: Cell) -> None:
        self.destroyed.append(cell)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    def ready(self, cell_class: CellClass) -> int:
        return next((s.ready for s in self.pool.stats() if s.cell_class == cell_class), 0)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_class_of_a_function_is_its_limits_and_runtime_image() -> None:
    config = FunctionConfig(memory_mb=256, network="bridge", cpu=0.5, pids_limit=64)
    assert CellClass.of(config, "sha256:1") == CellClass(256, "bridge", 0.5, 64, "sha256:1")
    assert CellClass.of(config).label() == "256MiB/0.5cpu/64pids/bridge"


@pytest.mark.parametrize(("env", "own"), [
    ({}, False),
    ({"GREETING": "hi", "DEBUG": "1", "PATH_PREFIX": "/x"}, False),
    ({"LD_LIBRARY_PATH": "/var/task/lib"}, True),
    ({"PYTHONHASHSEED": "0"}, True),
    ({"PYTHONWARNINGS": "ignore"}, True),
    ({"LC_ALL": "C.UTF-8"}, True),
    ({"TZ": "Europe/Paris"}, True),
    ({"MALLOC_ARENA_MAX": "2"}, True),
])
def test_variables_read_at_process_start_need_a_process_of_their_own(
    env: dict[str, str], own: bool
) -> None:
    assert needs_own_process(env) is own


def test_cells_are_never_lent_across_runtime_images() -> None:
    async def scenario() -> None:
        h = Harness(size=1)
        old = CellClass(128, "none", 1.0, 256, "sha256:old")
        h.pool.want([old])
        await h.settle()
        assert h.pool.take(CellClass(256, "none", 1.0, 256, "sha256:new")) is None
        assert h.pool.take(CellClass(256, "none", 1.0, 256, "sha256:old")) is not None

    run(scenario())


def test_pool_fills_each_class_in_use_and_refills_after_a_take() -> None:
    async def scenario() -> None:
        h = Harness(size=2)
        h.pool.want([SMALL, BIG])
        await h.settle()
        assert h.ready(SMALL) == 2 and h.ready(BIG) == 2
        taken = h.pool.take(SMALL)
        assert taken is not None and taken.cell_class == SMALL
        assert h.ready(SMALL) == 1
        await h.settle()
        assert h.ready(SMALL) == 2 and len(h.started) == 5
        assert taken not in h.pool.ready_cells()  # a taken cell never comes back

    run(scenario())


def test_a_take_refills_later_not_while_the_cell_serves_its_cold_request() -> None:
    """A container start right at the take competed with the cold request it was taken for
    (the Docker SDK's thread for the GIL, dockerd for the cores): the refill waits for the
    pool's timer, one timer for a burst of takes."""
    async def scenario() -> None:
        h = Harness(size=2, delayed=True)
        h.pool.want([SMALL])
        await h.settle()
        assert h.ready(SMALL) == 2 and len(h.started) == 2 and not h.timers
        assert h.pool.take(SMALL) is not None
        assert h.pool.take(SMALL) is not None
        await h.settle()
        assert len(h.started) == 2 and h.ready(SMALL) == 0  # nothing started yet
        assert sum(s.starting for s in h.pool.stats()) == 0
        assert [delay for delay, _ in h.timers] == [REFILL_DELAY_S]
        _, refill = h.timers.pop()
        refill()
        await h.settle()
        assert h.ready(SMALL) == 2 and len(h.started) == 4
        assert h.pool.take(SMALL) is not None  # the next take arms a new timer
        assert [delay for delay, _ in h.timers] == [REFILL_DELAY_S]

    run(scenario())


def test_a_delayed_refill_after_close_starts_nothing() -> None:
    async def scenario() -> None:
        h = Harness(size=1, delayed=True)
        h.pool.want([SMALL])
        await h.settle()
        assert h.pool.take(SMALL) is not None
        h.pool.close()
        _, refill = h.timers.pop()
        refill()
        await h.settle()
        assert len(h.started) == 1 and not h.pool.ready_cells()

    run(scenario())


def test_starts_are_capped_so_a_refill_cannot_flood_the_engine() -> None:
    async def scenario() -> None:
        h = Harness(size=3, max_starting=2)
        h.gate = asyncio.Event()
        h.pool.want([SMALL, BIG])
        await h.settle()
        assert sum(s.starting for s in h.pool.stats()) == 2
        h.gate.set()
        await h.settle()
        assert h.ready(SMALL) == 3 and h.ready(BIG) == 3

    run(scenario())


def test_take_lends_a_cell_that_differs_only_in_memory_or_cpu() -> None:
    async def scenario() -> None:
        h = Harness(size=1)
        h.pool.want([BIG])
        await h.settle()
        lent = h.pool.take(SMALL)  # same network and pids: memory is updated by the caller
        assert lent is not None and lent.cell_class == BIG
        h.pool.want([BIG, NETWORKED])
        await h.settle()
        assert h.pool.take(CellClass(128, "none", 1.0, 32)) is None  # other pids limit
        assert h.pool.take(CellClass(256, "host", 1.0, 256)) is None  # other network
        taken = h.pool.take(NETWORKED)
        assert taken is not None and taken.cell_class == NETWORKED

    run(scenario())


def test_classes_out_of_use_lose_their_cells() -> None:
    async def scenario() -> None:
        h = Harness(size=2)
        h.pool.want([SMALL, BIG])
        await h.settle()
        h.pool.want([SMALL])
        await h.settle()
        assert h.ready(BIG) == 0 and len(h.destroyed) == 2
        assert {c.cell_class for c in h.destroyed} == {BIG}

    run(scenario())


def test_a_cell_that_finishes_starting_after_its_class_went_away_is_destroyed() -> None:
    async def scenario() -> None:
        h = Harness(size=1)
        h.gate = asyncio.Event()
        h.pool.want([BIG])
        await h.settle()
        h.pool.want([])
        h.gate.set()
        await h.settle()
        assert h.pool.ready_cells() == [] and len(h.destroyed) == 1

    run(scenario())


def test_failed_starts_back_off_instead_of_spinning() -> None:
    async def scenario() -> None:
        h = Harness(size=1)
        h.fail = 3
        h.pool.want([SMALL])
        await h.settle()
        assert h.pool.failed_total == 1 and h.ready(SMALL) == 0
        h.pool.refill()  # housekeeping a moment later: still backing off
        await h.settle()
        assert h.pool.failed_total == 1
        h.now = 1.0
        h.pool.refill()
        await h.settle()
        assert h.pool.failed_total == 2
        h.now = 2.5  # the second failure waits 2 s
        h.pool.refill()
        await h.settle()
        assert h.pool.failed_total == 2
        h.now = 3.0
        h.pool.refill()
        await h.settle()
        assert h.pool.failed_total == 3
        h.now = 100.0
        h.pool.refill()
        await h.settle()
        assert h.ready(SMALL) == 1 and h.pool.failed_total == 3

    run(scenario())


def test_a_lost_cell_is_forgotten_and_close_hands_back_the_rest() -> None:
    async def scenario() -> None:
        h = Harness(size=2)
        h.pool.want([SMALL])
        await h.settle()
        first = h.pool.ready_cells()[0]
        assert h.pool.lost(first.container_id) is first
        assert h.pool.lost("unknown") is None
        h.pool.refill()  # a cell that died while ready backs the pool off: no restart loop
        await h.settle()
        assert len(h.pool.ready_cells()) == 1
        h.now = 1.0
        h.pool.refill()
        await h.settle()
        left = h.pool.close()
        assert first not in left and len(left) == 2
        assert not h.pool.enabled and h.pool.take(SMALL) is None
        h.pool.want([SMALL])
        await h.settle()
        assert h.pool.ready_cells() == []

    run(scenario())


def test_size_zero_disables_the_pool() -> None:
    async def scenario() -> None:
        h = Harness(size=0)
        h.pool.want([SMALL])
        await h.settle()
        assert h.started == [] and h.pool.take(SMALL) is None

    run(scenario())


# The artifact store


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_artifacts_are_read_only_copies_linked_into_cells(tmp_path: Path) -> None:
    code, deps = tmp_path / "code", tmp_path / "deps"
    (code / "pkg").mkdir(parents=True)
    (code / "app.py").write_text("x = 1\n")
    (code / "pkg" / "__init__.py").write_text("")
    (code / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(code / "run.sh", 0o700)
    os.chmod(code / "app.py", 0o600)
    (code / "link.py").symlink_to("app.py")
    deps.mkdir()
    (deps / "helper.py").write_text("y = 2\n")
    store = ArtifactStore(tmp_path / "artifacts")
    store.prepare()
    saved = store.save("greet", 1, code, deps, runtime_image="sha256:abc")
    assert ArtifactStore.runtime_image(saved) == "sha256:abc"
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((saved / "task" / "app.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((saved / "task" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((saved / "task" / "pkg").stat().st_mode) == 0o755
    assert (saved / "task" / "link.py").is_symlink()
    assert store.find("greet", 1) == saved and store.find("greet", 2) is None

    cell = tmp_path / "cell"
    for sub in ("task", "deps"):
        (cell / sub).mkdir(parents=True)
    link_into(saved, cell)
    assert _tree(cell / "task") == _tree(saved / "task")
    assert _tree(cell / "deps") == _tree(saved / "deps")
    assert not (cell / "runtime-image").exists()  # only code and dependencies go in
    assert (cell / "task" / "app.py").stat().st_ino == (saved / "task" / "app.py").stat().st_ino
    assert os.readlink(cell / "task" / "link.py") == "app.py"


def test_link_tree_recreates_folders_links_files_and_keeps_symlinks(tmp_path: Path) -> None:
    """Nested folders come out 0755 whatever the umask (uid 10001 must traverse them),
    files are the same inodes, symlinks (to files and to folders) stay symlinks and are
    not followed, and a tree on another file system is copied instead."""
    source = tmp_path / "source"
    (source / "pkg" / "sub").mkdir(parents=True)
    (source / "pkg" / "sub" / "deep.py").write_text("z = 3\n")
    (source / "top.py").write_text("t = 1\n")
    (source / "pkg" / "alias.py").symlink_to("sub/deep.py")
    (source / "pkg_link").symlink_to("pkg")
    target = tmp_path / "target"
    old = os.umask(0o077)
    try:
        link_tree(source, target)
    finally:
        os.umask(old)
    assert _tree(target) == _tree(source)
    for folder in (target, target / "pkg", target / "pkg" / "sub"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    deep = target / "pkg" / "sub" / "deep.py"
    assert deep.stat().st_ino == (source / "pkg" / "sub" / "deep.py").stat().st_ino
    assert os.readlink(target / "pkg" / "alias.py") == "sub/deep.py"
    assert os.readlink(target / "pkg_link") == "pkg"
    assert not (target / "pkg_link").resolve().is_relative_to(source)
    shm = Path("/dev/shm")  # a tmpfs: another file system than tmp_path's
    assert shm.stat().st_dev != tmp_path.stat().st_dev
    elsewhere = tmp_path / "copied"
    with tempfile.TemporaryDirectory(dir=shm) as other:
        (Path(other) / "pkg").mkdir()
        (Path(other) / "pkg" / "m.py").write_text("m = 1\n")
        link_tree(Path(other), elsewhere)
        assert (elsewhere / "pkg" / "m.py").read_text() == "m = 1\n"


def test_clone_retain_and_remove(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("x = 1\n")
    store = ArtifactStore(tmp_path / "artifacts")
    store.prepare()
    store.save("a", 1, code, None)
    assert (store.path("a", 1) / "deps").is_dir()  # always there: cells bind it
    assert store.clone("a", 1, 2) == store.path("a", 2)
    assert _tree(store.path("a", 2)) == _tree(store.path("a", 1))
    assert store.clone("a", 9, 10) is None
    store.save("b", 1, code, None)
    assert store.retain([("a", 2), ("b", 1)]) == 1
    assert store.find("a", 1) is None and store.find("a", 2) is not None
    store.remove_function("b")
    assert not (store.root / "b").exists()
    store.remove("a", 2)
    assert store.retain([]) == 0 and list(store.root.iterdir()) == []


def test_a_failed_save_leaves_no_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    store.prepare()
    with pytest.raises(FileNotFoundError):
        store.save("a", 1, tmp_path / "missing", None)
    assert store.find("a", 1) is None
    assert list(store.root.iterdir()) == []


def test_a_build_writes_its_artifact_in_place_and_a_failed_one_leaves_nothing(
        tmp_path: Path) -> None:
    """The builder extracts into `begin`'s folder and `commit` renames it: no copy."""
    store = ArtifactStore(tmp_path / "artifacts")
    store.prepare()
    staging = store.begin("a", 1)
    (staging / "task").mkdir()
    (staging / "task" / "app.py").write_text("x = 1\n")
    os.chmod(staging / "task" / "app.py", 0o600)
    inode = (staging / "task" / "app.py").stat().st_ino
    assert store.find("a", 1) is None  # not before the commit
    saved = store.commit("a", 1, "sha256:abc")
    assert saved == store.find("a", 1) and ArtifactStore.runtime_image(saved) == "sha256:abc"
    assert (saved / "task" / "app.py").stat().st_ino == inode  # moved, not copied
    assert stat.S_IMODE((saved / "task" / "app.py").stat().st_mode) == 0o644
    assert (saved / "deps").is_dir()
    assert sorted(os.listdir(store.root / "a")) == ["v1"]
    (store.begin("a", 2) / "task").mkdir()
    store.discard("a", 2)
    assert sorted(os.listdir(store.root / "a")) == ["v1"]
    (store.begin("b", 1) / "task").mkdir()
    store.discard("b", 1)  # a first deploy that failed: nothing of "b" stays
    assert sorted(os.listdir(store.root)) == ["a"]
    store.remove("a", 1)
    assert list(store.root.iterdir()) == []


def test_a_held_pool_starts_nothing_until_released() -> None:
    """The daemon holds the pool until its restart clean-up is done: a cell started during
    it would lose its folders to that clean-up."""
    async def scenario() -> None:
        h = Harness(size=2)
        h.pool.held = True
        h.pool.want([SMALL])
        await h.settle()
        assert h.started == [] and h.pool.take(SMALL) is None
        h.pool.held = False
        h.pool.refill()
        await h.settle()
        assert h.ready(SMALL) == 2

    run(scenario())


def test_a_cancelled_start_does_not_leave_a_phantom_starting_cell() -> None:
    async def scenario() -> None:
        h = Harness(size=1, max_starting=1)
        h.gate = asyncio.Event()
        h.pool.want([SMALL])
        await h.settle()
        for task in list(h.tasks):
            task.cancel()
        await h.settle()
        assert all(s.starting == 0 for s in h.pool.stats())
        h.gate.set()
        h.pool.refill()
        await h.settle()
        assert h.ready(SMALL) == 1

    run(scenario())
