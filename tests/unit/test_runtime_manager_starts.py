"""The runtime manager over a fake Docker engine: which way an instance starts (a stem
cell specialized for it, or a container of its own), and what a restart adopts."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lambdad.errors import InstanceFailed, Unavailable
from lambdad.runtime.cells import CellClass
from tests.support.fake_docker import RUNTIME_IMAGE_ID
from tests.support.runtime import Runtime, cell_runtime, run, until, version


def test_a_version_with_an_artifact_starts_in_a_stem_cell() -> None:
    async def scenario(root: Path) -> None:
        v1 = version(timeout_s=7)
        rt = await cell_runtime(root, v1)
        [cell] = rt.docker.cells()
        assert cell.limits == CellClass.of(v1.config, RUNTIME_IMAGE_ID)
        plan = rt.manager.plan_start(v1)
        assert plan.path == "cell" and rt.manager.cells.ready_cells() == []
        instance = await rt.manager.start_instance(v1, plan=plan)
        rt.manager.activate(v1, [instance])
        assert instance.container_id == cell.id and instance.start_path == "cell"
        assert cell.function == "fn" and cell.env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "7"
        code = rt.cells_dir / cell.instance
        assert (code / "task" / "handler.py").is_file()  # the version's code, linked in
        # whose it is, for a restart (and which fn v1: FunctionVersion.stamp)
        assert (code / "owner").read_text() == f"fn\n1\n{v1.stamp}\n"
        await until(lambda: cell.id in rt.docker.renamed)
        assert rt.docker.renamed[cell.id] == f"lambda-fn-v1-{cell.instance}"
        _, body = await rt.call()
        assert body["container"] == cell.id and body["start"] == "warm"
        assert [c.cell for c in rt.docker.containers.values()].count(True) == 2  # refilled

    run(scenario)


def test_a_cold_request_takes_a_ready_cell_and_a_cell_of_another_size_is_resized() -> None:
    async def scenario(root: Path) -> None:
        small, big = version("small"), version("big", memory_mb=512)
        rt = await cell_runtime(root, small, big)
        response, body = await rt.call("small")
        assert response.start == "cell" and response.cold_start and body["cell"] is True
        # The import's share of the start, as the runtime timed it (its POST /init answer).
        assert response.import_ms == rt.docker.import_ms and response.init_ms > 0
        assert body["start"] == "cell" and rt.docker.updated == []
        assert [e for e, _ in rt.events] == ["started", "connected", "ready"]
        await until(lambda: len(rt.manager.cells.ready_cells()) == 1)
        plan = rt.manager.plan_start(big)  # no cell of its class: one of small's will do
        assert plan.path == "cell"
        instance = await rt.manager.start_instance(big, plan=plan)
        assert rt.docker.updated == [(instance.container_id,
                                      CellClass.of(big.config, RUNTIME_IMAGE_ID))]

    run(scenario)


def test_a_cell_of_another_size_is_resized_while_its_code_is_linked_in() -> None:
    """The resize does not wait for the link, nor the link for the resize: the resize
    here lasts until the code is there, which a resize done first would never see."""
    async def scenario(root: Path) -> None:
        small, big = version("small"), version("big", memory_mb=512)
        rt = await cell_runtime(root, small, big)
        resize = rt.docker.update_limits
        saw_code: list[bool] = []

        def slow_resize(container_id: str, limits: CellClass) -> None:
            code = rt.cells_dir / rt.docker.containers[container_id].instance / "task"
            deadline = time.monotonic() + 3
            while not (code / "handler.py").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            saw_code.append((code / "handler.py").exists())
            resize(container_id, limits)

        rt.docker.update_limits = slow_resize  # type: ignore[method-assign]
        plan = rt.manager.plan_start(big)
        assert plan.path == "cell"
        instance = await rt.manager.start_instance(big, plan=plan)
        assert saw_code == [True]
        assert rt.docker.containers[instance.container_id].limits == CellClass.of(
            big.config, RUNTIME_IMAGE_ID)

    run(scenario)


def test_a_cold_start_cancelled_while_its_cell_is_prepared_waits_for_the_threads() -> None:
    """A delete or a stop cancels a start while its cell is resized and its code linked in
    (threads, which go on regardless): the start ends only after them, then its cell and
    its code folder are removed; nothing of it is left behind."""
    async def scenario(root: Path) -> None:
        small, big = version("small"), version("big", memory_mb=512)
        rt = await cell_runtime(root, small, big)
        [cell] = rt.docker.cells()
        resize = rt.docker.update_limits
        entered, release = threading.Event(), threading.Event()

        def slow_resize(container_id: str, limits: CellClass) -> None:
            entered.set()
            release.wait(5)
            resize(container_id, limits)

        rt.docker.update_limits = slow_resize  # type: ignore[method-assign]
        plan = rt.manager.plan_start(big)
        assert plan.path == "cell"
        start = asyncio.create_task(rt.manager.start_instance(big, plan=plan))
        await until(entered.is_set)
        start.cancel()
        await asyncio.sleep(0.1)
        assert not start.done()  # the resize's thread still runs: the start waits for it
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await start
        await rt.manager.drain_background()
        assert cell.id not in rt.docker.containers
        assert not (rt.cells_dir / cell.instance).exists()

    run(scenario)


def test_versions_a_cell_cannot_run_start_in_a_container_of_their_own() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, cells=1)
        cellable = version("cellable")
        rt.save_artifact(cellable)
        no_artifact = version("plain")
        dockerfile = version("box", runtime="docker")
        rt.save_artifact(dockerfile)
        preload = version("preload", env={"LD_PRELOAD": "/x.so"})  # read at process start
        rt.save_artifact(preload)
        old_image = version("old")
        rt.save_artifact(old_image, image_id="sha256:" + "0" * 64)  # built on another image
        for v in (cellable, no_artifact, dockerfile, preload, old_image):
            rt.manager.register(v)
        await rt.cells_ready()
        for v in (no_artifact, dockerfile, preload, old_image):
            plan = rt.manager.plan_start(v)
            assert plan.path == "container", v.function
            instance = await rt.manager.start_instance(v, plan=plan)
            container = rt.docker.containers[instance.container_id]
            assert not container.cell and instance.start_path == "container"
            assert container.function == v.function
            # A standard runtime loads its handler by POST /init; a Dockerfile one does not.
            assert container.standard == (v.config.runtime != "docker")
            assert instance.import_ms == (rt.docker.import_ms if container.standard else 0.0)
            # Its code loaded: the owner file a restart adopts it by, outside its folder.
            owner = rt.cells_dir / instance.id / "owner"
            assert owner.exists() == container.standard
            assert os.listdir(rt.instances_dir / instance.id) == ["invoke.sock"]
            await rt.manager.remove_instance(instance)
            assert not (rt.cells_dir / instance.id).exists()  # gone with the instance
        assert len(rt.manager.cells.ready_cells()) == 1  # none of them took the cell
        assert rt.manager.plan_start(cellable).path == "cell"

    run(scenario)


def test_a_version_without_an_image_runs_the_runtime_image_with_its_artifact_mounted() -> None:
    """No cell free (or an env a cell cannot take): the container runs the runtime image
    as it is now, with the version's artifact, whatever image the wheels were resolved on;
    a version an earlier lambdad built an image for keeps running that image."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root, cells=0)
        shared = replace(version("shared"), image="", image_id="")
        rt.save_artifact(shared, image_id="sha256:" + "1" * 64)  # an earlier runtime image
        preload = replace(version("preload", env={"LD_PRELOAD": "/x.so"}), image="",
                          image_id="")
        rt.save_artifact(preload)
        old = version("old")  # built by an earlier lambdad: lambda-fn/old:v1
        rt.save_artifact(old, image_id="sha256:" + "2" * 64)
        missing = replace(version("missing"), image="", image_id="")
        for v in (shared, preload, old, missing):
            rt.manager.register(v)
        await rt.manager.reconcile()
        for v in (shared, preload):
            instance = await rt.manager.start_instance(v)
            container = rt.docker.containers[instance.container_id]
            assert container.code == rt.artifacts.find(v.function, v.number)
            assert container.image == "lambda-runtime/python:3.11" and container.standard
        instance = await rt.manager.start_instance(old)
        container = rt.docker.containers[instance.container_id]
        assert container.code is None and container.image == "lambda-fn/old:v1"
        with pytest.raises(Unavailable, match="files of missing v1 are missing"):
            await rt.manager.start_instance(missing)
        assert [c.function for c in rt.docker.containers.values()].count("missing") == 0

    run(scenario)


def test_a_linked_artifact_folder_is_never_mounted() -> None:
    """dockerd resolves a bind's source on the host: an artifact whose task/ is a link is
    refused, not followed."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root, cells=0)
        shared = replace(version("shared"), image="", image_id="")
        rt.save_artifact(shared)
        task = rt.artifacts.find("shared", 1)
        assert task is not None
        (root / "elsewhere").mkdir()
        shutil.rmtree(task / "task")
        os.symlink(root / "elsewhere", task / "task")
        rt.manager.register(shared)
        await rt.manager.reconcile()
        with pytest.raises(Unavailable, match="missing"):
            await rt.manager.start_instance(shared)
        assert rt.docker.containers == {}

    run(scenario)


def test_after_a_runtime_image_change_a_version_without_an_image_uses_the_new_cells() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root, cells=1)
        shared = replace(version("shared"), image="", image_id="")
        rt.save_artifact(shared)  # resolved on the runtime image of now
        old = version("old")
        rt.save_artifact(old)
        rt.manager.register(shared)
        rt.manager.register(old)
        await rt.cells_ready()
        new_id = "sha256:" + "9" * 64
        rt.docker.image_ids["lambda-runtime/python:3.11"] = new_id
        await rt.manager._check_runtime_image()
        await until(lambda: [c.cell_class.image for c in rt.manager.cells.ready_cells()]
                    == [new_id])
        plan = rt.manager.plan_start(shared)
        assert plan.path == "cell"  # it moves to the new image
        assert plan.cell is not None and plan.cell.cell_class.image == new_id
        assert rt.manager.plan_start(old).path == "container"  # it keeps its own image
        rt.manager.abandon(plan)
        instance = await rt.manager.start_instance(
            shared, plan=replace(plan, cell=None))  # no cell: a container of the tag
        assert rt.docker.containers[instance.container_id].image == "lambda-runtime/python:3.11"

    run(scenario)


def test_an_abandoned_plan_stops_its_cell() -> None:
    async def scenario(root: Path) -> None:
        v1 = version()
        rt = await cell_runtime(root, v1)
        [cell] = rt.docker.cells()
        rt.manager.abandon(rt.manager.plan_start(v1))
        await until(lambda: cell.id not in rt.docker.containers)
        await rt.manager.drain_background()  # its folders go after the container
        assert not (rt.cells_dir / cell.instance).exists()
        assert not (rt.instances_dir / cell.instance).exists()

    run(scenario)


def test_reconcile_adopts_answering_instances_of_active_versions_and_removes_the_rest() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v2 = version(number=2)
        rt.manager.register(v2)
        leftover = rt.docker.leftover
        kept = await rt.loaded_leftover("fn", 2, "a00000000001")
        cell_kept = await rt.loaded_leftover("fn", 2, "a00000000002", cell=True)
        old = await leftover("fn", 1, "b00000000001", rt.instances_dir)
        stopped = await leftover("fn", 2, "b00000000002", rt.instances_dir, running=False)
        gone = await leftover("deleted", 1, "b00000000003", rt.instances_dir)
        generic = await leftover("", 0, "b00000000004", rt.instances_dir, cell=True)
        (rt.cells_dir / "b00000000004").mkdir()
        (rt.instances_dir / "b00000000005").mkdir()  # a folder whose container is gone
        removed = {old.id, stopped.id, gone.id, generic.id}

        assert await rt.manager.reconcile() == (2, 4)
        assert set(rt.docker.removed) == removed
        assert set(rt.docker.containers) == {kept.id, cell_kept.id}
        assert rt.folders() == ["a00000000001", "a00000000002"]
        assert sorted(os.listdir(rt.cells_dir)) == ["a00000000001", "a00000000002"]
        assert sorted(rt.events) == [("adopted", "a00000000001"), ("adopted", "a00000000002")]
        assert rt.manager.counts("fn").running == 2
        rt.docker.hold.clear()  # two requests at once: both adopted instances serve
        calls = [asyncio.create_task(rt.call(request_id=str(n))) for n in range(2)]
        await until(lambda: rt.manager.counts("fn").busy == 2)
        rt.docker.hold.set()
        results = await asyncio.gather(*calls)
        assert all(response.start == "warm" for response, _ in results)
        assert {body["container"] for _, body in results} == {kept.id, cell_kept.id}
        assert len(rt.docker.containers) == 2  # and nothing started

    run(scenario)


def test_reconcile_does_not_adopt_a_deleted_versions_instance_of_the_same_number() -> None:
    """Cluster mode: fn was deleted and deployed again (back at v1) through another node
    while this one was down. Its leftover fn v1 runs the deleted code: replaced."""
    async def scenario(root: Path) -> None:
        from datetime import timedelta

        rt = Runtime(root)
        v1 = version(number=1)
        rt.manager.register(v1)
        deleted = replace(v1, created_at=v1.created_at - timedelta(minutes=5))
        same = await rt.loaded_leftover("fn", 1, "a00000000001")
        stale = await rt.loaded_leftover("fn", 1, "a00000000002", cell=True)
        for instance_id, owner in (("a00000000001", v1), ("a00000000002", deleted)):
            (rt.cells_dir / instance_id / "owner").write_text(
                f"fn\n1\n{owner.stamp}\n")
        assert await rt.manager.reconcile() == (1, 1)
        assert rt.docker.removed == [stale.id]
        assert set(rt.docker.containers) == {same.id}

    run(scenario)


def test_a_paused_leftover_is_adopted_paused_and_thawed_by_its_first_request() -> None:
    """Docker lists a paused container as `paused`, not `running`: it used to be removed."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        frozen = await rt.loaded_leftover("fn", 1, "a00000000001")
        rt.docker.pause(frozen.id)
        await until(lambda: frozen.paused)
        assert await rt.manager.reconcile() == (1, 0)
        assert rt.docker.removed == [] and frozen.paused  # adopted as it was
        # A standard runtime is paused only to be frozen: adopted frozen (the gauge says
        # so, the frozen memory bound counts it), not a live instance's idle pause.
        counts = rt.manager.counts("fn")
        assert (counts.frozen, counts.paused) == (1, 0)
        response, body = await rt.call()
        assert response.start == "unpaused" and body["container"] == frozen.id
        counts = rt.manager.counts("fn")
        assert rt.docker.unpaused == [frozen.id] and (counts.frozen, counts.paused) == (0, 0)

    run(scenario)


def test_a_leftover_thawed_directly_before_its_settle_is_adopted_frozen_in_fact() -> None:
    """The earlier run was killed between a direct thaw and its settle: Docker says
    Paused, the container runs. Adopted, it is frozen again (not left computing while
    counted frozen); one that would not freeze is adopted running, to be settled."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        torn = await rt.loaded_leftover("fn", 1, "a00000000001")
        stuck = await rt.loaded_leftover("fn", 1, "a00000000002")
        for leftover in (torn, stuck):
            rt.docker.pause(leftover.id)
            await until(lambda leftover=leftover: leftover.paused)  # type: ignore[misc]
            leftover.paused = False  # thawed through its freezer file; Docker not told
        real_refreeze = rt.docker.refreeze
        rt.docker.refreeze = lambda cid: (  # type: ignore[method-assign]
            False if cid == stuck.id else real_refreeze(cid))
        assert await rt.manager.reconcile() == (2, 0)
        assert torn.paused and torn.docker_paused
        counts = rt.manager.counts("fn")
        assert (counts.frozen, counts.running) == (1, 2)
        assert not stuck.paused and stuck.docker_paused

    run(scenario)


def test_a_leftover_whose_folder_holds_more_than_its_socket_is_removed() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        # Loaded: refused for its folder alone.
        hostile = await rt.loaded_leftover("fn", 1, "c00000000001")
        (rt.instances_dir / "c00000000001" / "link").symlink_to("/var/run/docker.sock")
        assert await rt.manager.reconcile() == (0, 1)
        assert rt.docker.removed == [hostile.id] and rt.folders() == []
        assert rt.events == [] and os.listdir(rt.cells_dir) == []

    run(scenario)


def test_a_container_whose_code_fails_to_load_leaves_no_owner_file() -> None:
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        v = rt.manager.register(version()).version
        await rt.manager.reconcile()
        rt.docker.init_errors["fn"] = "No module named 'handler'"
        with pytest.raises(InstanceFailed, match="handler"):
            await rt.manager.start_instance(v)
        assert rt.docker.containers == {} and rt.folders() == []
        assert os.listdir(rt.cells_dir) == []

    run(scenario)


def test_a_standard_container_killed_before_its_code_loaded_is_replaced_not_adopted() -> None:
    """lambdad killed (-9) between the container's socket opening and its POST /init's end:
    the socket answers but the runtime never imported the code, so every request would get
    NotInitialized (a 5xx). Only an owner file, written once the load succeeded, adopts it."""
    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager.register(version())
        rt.manager.register(version("box", runtime="docker"))
        leftover = rt.docker.leftover
        unloaded = await leftover("fn", 1, "a00000000001", rt.instances_dir)
        unloaded.initialized = False  # its runtime answers, NotInitialized
        loaded = await rt.loaded_leftover("fn", 1, "a00000000002")
        other = await leftover("fn", 1, "a00000000003", rt.instances_dir)
        rt.mark_loaded("a00000000003", "fn", 2)  # another version's file: not its own
        # A Dockerfile function has no POST /init: adopted by its socket as before.
        box = await leftover("box", 1, "a00000000004", rt.instances_dir)

        assert await rt.manager.reconcile() == (2, 2)
        assert sorted(rt.docker.removed) == sorted([unloaded.id, other.id])
        assert set(rt.docker.containers) == {loaded.id, box.id}
        assert rt.folders() == ["a00000000002", "a00000000004"]
        assert os.listdir(rt.cells_dir) == ["a00000000002"]
        for _ in range(3):  # every request served by the loaded one, none NotInitialized
            response, body = await rt.call()
            assert response.start == "warm" and body["container"] == loaded.id
        response, body = await rt.call("box")
        assert body["container"] == box.id
        # Its owner file goes with it when it stops.
        assert await rt.manager.remove_function("fn") == 1
        assert os.listdir(rt.cells_dir) == []

    run(scenario)
