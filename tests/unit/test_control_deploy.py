"""Deploy, retention, rollback, config-only versions and delete, through the ControlPlane
facade, with the runtime and the builder faked and a real Store and ArtifactStore: each
test checks what the use case leaves in the store, the runtime, the images and on disk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lambdad.control import BuildOutput, DeployResult, Progress
from lambdad.control.builds import Builds
from lambdad.control.deploy import prewarm_count, start_title
from lambdad.control.locks import FunctionLocks
from lambdad.control.versions import Versions
from lambdad.errors import (
    BuildFailed,
    FailedPrecondition,
    InstanceFailed,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from lambdad.functions import Overrides
from lambdad.functions.manifest import parse_manifest
from tests.support.fakes import (
    ControlParts,
    chunked,
    code_archive,
    header_for,
    run_with_parts,
)

run = run_with_parts


def deploys(parts: ControlParts, result: str) -> float:
    return parts.sample("lambdad_deploys_total", kind="deploy", result=result)


def test_deploy_builds_starts_records_and_activates(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        events = await p.deploy("greet")
        assert [e for e in events if isinstance(e, Progress)] == [
            Progress(2, "Building greet v1 (code and wheels, no image)", done=False),
            Progress(2, "Building greet v1 (code and wheels, no image)", done=True),
            Progress(3, "Starting instance (container)", done=False),
            Progress(3, "Starting instance (container)", done=True),
        ]
        assert BuildOutput("Step 1/1 : COPY . /var/task") in events
        assert events[-1] == DeployResult("greet", 1, "lambda-fn/greet:v1",
                                          "http://greet.localhost:8080")
        record = await p.store.get_function("greet")
        assert record.active is not None and record.active.number == 1
        assert record.active.config.handler == "handler.handler"
        assert p.runtime.active["greet"].number == 1
        assert p.runtime.instance_count("greet") == 1
        assert "lambda-fn/greet:v1" in p.builder.images
        assert p.artifacts.find("greet", 1) is not None
        assert list(p.spool.iterdir()) == []  # the upload is gone
        assert deploys(p, "success") == 1
        view = await p.control.get_function("greet")
        assert (view.status, view.url) == ("ready", "http://greet.localhost:8080")
    run(tmp_path, scenario)


@pytest.mark.parametrize("failure", ["build", "start", "record"])
def test_a_failed_deploy_leaves_nothing(tmp_path: Path, failure: str) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")  # v1 stays live throughout
        if failure == "build":
            p.builder.fail_build = "pip: no matching distribution"
            expected: type[Exception] = BuildFailed
        elif failure == "start":
            p.runtime.fail_start = Unavailable("the container did not open its socket")
            expected = Unavailable
        else:
            async def refuse(*args: Any, **kwargs: Any) -> None:
                raise RuntimeError("disk full")
            p.store.add_version = refuse  # type: ignore[method-assign]
            expected = RuntimeError
        with pytest.raises(expected):
            await p.deploy("greet")
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert p.runtime.active["greet"].number == 1
        assert p.runtime.instance_count("greet") == 1  # v2's instance, if any, was removed
        assert "lambda-fn/greet:v2" not in p.builder.images
        assert p.artifacts.find("greet", 2) is None
        assert p.artifacts.find("greet", 1) is not None
        assert list(p.spool.iterdir()) == []
        if failure != "record":
            assert deploys(p, expected.__name__ if failure == "build" else "Unavailable") == 1
    run(tmp_path, scenario)


def test_deploy_refuses_bad_uploads_before_building(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        data = code_archive()
        with pytest.raises(InvalidArgument, match="checksum"):
            header = header_for(data + b"x")
            header = type(header)(header.name, len(data), header.sha256, header.overrides)
            [e async for e in p.control.deploy(header, chunked(data))]
        with pytest.raises(InvalidArgument, match="truncated"):
            [e async for e in p.control.deploy(header_for(data + b"x"), chunked(data))]
        big = header_for(data)
        with pytest.raises(PayloadTooLarge):
            [e async for e in p.control.deploy(type(big)(
                "greet", (1 << 20) + 1, big.sha256, big.overrides), chunked(data))]
        missing = code_archive(handler="app.main")
        with pytest.raises(InvalidArgument, match=r"no app\.py"):
            [e async for e in p.control.deploy(header_for(missing), chunked(missing))]
        assert p.builder.builds == []
        assert list(p.spool.iterdir()) == []
        with pytest.raises(NotFound):
            await p.store.get_function("greet")
    run(tmp_path, scenario)


def test_retention_keeps_the_newest_versions_images(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        for _ in range(4):
            await p.deploy("greet")
        versions = await p.store.versions("greet")
        assert [(v.number, v.pruned) for v in versions] == [
            (1, True), (2, True), (3, False), (4, False)]
        assert sorted(p.runtime.pruned) == [("greet", 1), ("greet", 2)]
        assert set(p.builder.images) == {"lambda-fn/greet:v3", "lambda-fn/greet:v4"}
        assert [p.artifacts.find("greet", n) is not None for n in (1, 2, 3, 4)] == [
            False, False, True, True]
        # A pruned version cannot be rolled back to; the history stays.
        with pytest.raises(FailedPrecondition, match="pruned"):
            await p.control.rollback("greet", 1)
    run(tmp_path, scenario, keep_versions=2)


def test_pruning_a_version_keeps_the_image_a_config_version_shares(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        await p.control.rollback("greet", 1)
        await p.control.update_config("greet", Overrides(memory_mb=256))  # v3, from v1
        versions = {v.number: v for v in await p.store.versions("greet")}
        assert (versions[1].pruned, versions[2].pruned, versions[3].pruned) == (
            True, False, False)
        # v1's tag went; its image lives on under v3's own tag, with v3's own artifact.
        assert versions[3].image_id == versions[1].image_id
        assert set(p.builder.images) == {"lambda-fn/greet:v2", "lambda-fn/greet:v3"}
        assert p.builder.images["lambda-fn/greet:v3"] == versions[1].image_id
        assert p.artifacts.find("greet", 1) is None
        assert p.artifacts.find("greet", 3) is not None
    run(tmp_path, scenario, keep_versions=2)


def test_retention_never_prunes_the_active_version(tmp_path: Path) -> None:
    """keep_versions lowered (a restart with a new setting) after a rollback: the active
    version is older than the newest kept ones and keeps its image all the same."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        await p.control.rollback("greet", 1)
        versions = Versions(store=p.store, runtime=p.runtime,
                            builds=Builds(p.builder, p.artifacts), locks=FunctionLocks(),
                            image_prefix="lambda-fn", url=p.control.url, keep_versions=1)
        await versions.apply_retention("greet")
        assert [v.pruned for v in await p.store.versions("greet")] == [False, False]
        assert p.artifacts.find("greet", 1) is not None
        assert "lambda-fn/greet:v1" in p.builder.images
    run(tmp_path, scenario, keep_versions=2)


def test_rollback(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        started = len(p.runtime.instances) + len(p.runtime.removed)
        assert await p.control.rollback("greet", None) == (1, 2)
        assert (await p.store.get_function("greet")).active.number == 1  # type: ignore
        assert p.runtime.active["greet"].number == 1
        assert len(p.runtime.instances) + len(p.runtime.removed) == started + 1
        versions, history, active = await p.control.versions("greet")
        assert [v.number for v in versions] == [1, 2]
        assert active == 1 and [h.reason for h in history][-1] == "rollback"
        with pytest.raises(FailedPrecondition, match="already active"):
            await p.control.rollback("greet", 1)
        with pytest.raises(FailedPrecondition, match="no kept version before 1"):
            await p.control.rollback("greet", None)
        with pytest.raises(NotFound):
            await p.control.rollback("greet", 9)
        # Back to v2, which has a warm pinned instance: none is started for it.
        p.runtime.warm_pinned.add(("greet", 2))
        before = len(p.runtime.instances) + len(p.runtime.removed)
        assert await p.control.rollback("greet", 2) == (2, 1)
        assert len(p.runtime.instances) + len(p.runtime.removed) == before
        assert p.sample("lambdad_deploys_total", kind="rollback", result="success") == 2
        assert p.sample("lambdad_deploys_total", kind="rollback",
                        result="FailedPrecondition") == 2
    run(tmp_path, scenario)


def test_a_rollback_whose_instance_fails_changes_nothing(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        p.runtime.fail_start = Unavailable("no room")
        with pytest.raises(Unavailable):
            await p.control.rollback("greet", 1)
        assert (await p.store.get_function("greet")).active.number == 2  # type: ignore
        assert p.runtime.active["greet"].number == 2
    run(tmp_path, scenario)


def test_update_config_reuses_the_image_and_the_artifact(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        result = await p.control.update_config("greet", Overrides(memory_mb=512, env={"A": "1"}))
        assert (result.version, result.image) == (2, "lambda-fn/greet:v2")
        v1, v2 = await p.store.versions("greet")
        assert v2.image_id == v1.image_id and v2.source_version == 1
        assert (v2.config.memory_mb, dict(v2.config.env)) == (512, {"A": "1"})
        assert v2.config.handler == v1.config.handler
        assert p.builder.images["lambda-fn/greet:v2"] == v1.image_id
        assert p.builder.builds[-1].version == 1  # no build for v2
        clone = p.artifacts.find("greet", 2)
        assert clone is not None and (clone / "task" / "handler.py").is_file()
        assert p.runtime.active["greet"].number == 2
        # A config change of a config-only version still names the built one.
        await p.control.update_config("greet", Overrides(timeout_s=9))
        assert (await p.store.versions("greet"))[-1].source_version == 1
    run(tmp_path, scenario)


def test_a_failed_config_change_removes_its_tag_and_artifact(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        p.runtime.fail_start = Unavailable("no room")
        with pytest.raises(Unavailable):
            await p.control.update_config("greet", Overrides(memory_mb=512))
        assert "lambda-fn/greet:v2" not in p.builder.images
        assert p.artifacts.find("greet", 2) is None
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert p.runtime.active["greet"].number == 1
        assert p.sample("lambdad_deploys_total", kind="config", result="Unavailable") == 1
        with pytest.raises(NotFound):
            await p.control.update_config("other", Overrides())
    run(tmp_path, scenario)


def test_delete_removes_everything_the_function_owns(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        await p.deploy("calc")
        schedule = await p.control.create_schedule("greet", "* * * * *", "UTC", b"{}", "")
        assert await p.control.delete("greet") == (2, 1)
        with pytest.raises(NotFound):
            await p.store.get_function("greet")
        assert "greet" not in p.runtime.active
        assert set(p.builder.images) == {"lambda-fn/calc:v1"}
        assert not (p.artifacts.root / "greet").exists()
        assert p.artifacts.find("calc", 1) is not None
        assert p.cron.next_run(schedule.id) is None
        assert [f.record.name for f in await p.control.list_functions()] == ["calc"]
    run(tmp_path, scenario)


def test_delete_is_refused_while_a_change_is_under_way(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        gate = asyncio.Event()
        real_build = p.builder.build

        async def slow_build(spec: Any) -> AsyncIterator[Any]:
            await gate.wait()
            async for item in real_build(spec):
                yield item

        p.builder.build = slow_build  # type: ignore[method-assign]
        deploying = asyncio.create_task(p.deploy("greet"))
        for _ in range(100):
            if (await p.control.get_function("greet")).status == "deploying":
                break
            await asyncio.sleep(0)
        assert (await p.control.get_function("greet")).status == "deploying"
        with pytest.raises(FailedPrecondition, match="being deployed"):
            await asyncio.wait_for(p.control.delete("greet"), 10)  # refused, never waits
        gate.set()
        await deploying
        assert (await p.control.get_function("greet")).status == "ready"
        assert await p.control.delete("greet") == (2, 1)
    run(tmp_path, scenario)


def test_start_up_routes_stored_versions_and_prunes_orphans(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.deploy("greet")
        # What a deploy killed between its build and its row leaves behind:
        p.builder.images["lambda-fn/greet:v3"] = "sha256:orphan"
        (p.artifacts.root / "greet" / "v3" / "task").mkdir(parents=True)
        p.runtime.active.clear()
        p.runtime.known.clear()
        assert await p.control.load() == 1
        assert p.runtime.active["greet"].number == 2
        assert set(p.runtime.known) == {("greet", 1), ("greet", 2)}
        assert await p.control.prune_orphan_images() == 1
        assert "sha256:orphan" in p.builder.removed
        assert p.artifacts.find("greet", 3) is None
        assert p.artifacts.find("greet", 2) is not None
    run(tmp_path, scenario)


def test_info_and_urls(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        assert p.control.url("greet") == "http://greet.localhost:8080"
        assert p.control.info.api_version == "v1"
        assert p.control.info.url_template == "http://{name}.localhost:8080"
        with contextlib.suppress(NotFound):
            await p.control.get_function("greet")
            raise AssertionError("no such function")
    run(tmp_path, scenario)


def test_a_standard_runtime_version_is_its_artifact_alone(tmp_path: Path) -> None:
    """A deploy, a config-only version, retention and delete of versions without an image
    of their own: no image is made, tagged or removed, and the artifacts follow the rows;
    a version an earlier lambdad built an image for keeps it until it is pruned."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")  # v1: by an earlier lambdad, with an image
        p.builder.images_for_standard = False
        events = await p.deploy("greet")  # v2
        assert events[-1] == DeployResult("greet", 2, "", "http://greet.localhost:8080")
        v2 = (await p.store.get_function("greet")).active
        assert v2 is not None and (v2.image, v2.image_id) == ("", "") and v2.shared_image
        assert p.runtime.active["greet"] == v2
        await p.control.update_config("greet", Overrides(memory_mb=256))  # v3, from v2
        v3 = (await p.store.get_function("greet")).active
        assert v3 is not None and (v3.image, v3.source_version) == ("", 2)
        assert (p.artifacts.path("greet", 3) / "task" / "handler.py").stat().st_ino == (
            p.artifacts.path("greet", 2) / "task" / "handler.py").stat().st_ino  # linked
        await p.deploy("greet")  # v4: retention (keep 2) prunes v1 and v2
        assert set(p.builder.images) == set()  # v1's image went with it
        assert "" not in p.builder.removed
        assert [p.artifacts.find("greet", n) is not None for n in (1, 2, 3, 4)] == [
            False, False, True, True]
        await p.control.rollback("greet", 3)
        assert p.runtime.active["greet"].number == 3
        await p.control.delete("greet")
        assert not p.artifacts.path("greet", 3).parent.exists()
        assert set(p.builder.removed) == {"lambda-fn/greet:v1"}  # never a "" image
    run(tmp_path, scenario, keep_versions=2)


def test_prewarm_starts_every_instance_before_traffic_moves(tmp_path: Path) -> None:
    """`--prewarm 3`: three instances of v2 are started (loaded) before v2 is activated,
    and activation hands all three to it at once."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        handed: list[int] = []
        activate = p.runtime.activate

        def recording(version: Any, instances: Any = ()) -> None:
            handed.append(len(instances))
            activate(version, instances)
        p.runtime.activate = recording  # type: ignore[method-assign]
        events = await p.deploy("greet", prewarm=3)
        assert [e for e in events if isinstance(e, Progress) and e.step == 3] == [
            Progress(3, "Pre-warming 3 instances (3 containers)", done=False),
            Progress(3, "Pre-warming 3 instances (3 containers)", done=True),
        ]
        assert handed == [3]
        assert p.runtime.active["greet"].number == 2
        assert [i.version.number for i in p.runtime.instances] == [2, 2, 2]
    run(tmp_path, scenario)


def test_prewarm_above_max_instances_is_refused_before_building(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        with pytest.raises(InvalidArgument, match=r"--prewarm 3 is more than the function's "
                                                  r"max_instances \(2\)"):
            await p.deploy("greet", prewarm=3, overrides=Overrides(max_instances=2))
        assert len(p.builder.builds) == 1  # v1's only
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert deploys(p, "InvalidArgument") == 1
    run(tmp_path, scenario)


def test_a_failed_prewarm_removes_the_instances_that_did_start(tmp_path: Path) -> None:
    """One of three pre-warmed instances fails to load: the two that did are removed,
    nothing of v2 is recorded and v1 keeps serving."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        v1_instances = list(p.runtime.instances)
        p.runtime.fail_start = InstanceFailed(
            "greet v2 failed to initialize: Runtime.ImportModuleError: boom")
        with pytest.raises(InstanceFailed, match="ImportModuleError: boom"):
            await p.deploy("greet", prewarm=3)
        assert p.runtime.instances == v1_instances
        assert sorted(i.version.number for i in p.runtime.removed) == [2, 2]
        assert p.runtime.active["greet"].number == 1
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert p.artifacts.find("greet", 2) is None
    run(tmp_path, scenario)


@pytest.mark.parametrize(("paths", "prewarm", "title"), [
    (["cell"], 0, "Starting instance (stem cell)"),
    (["container"], 0, "Starting instance (container)"),
    (["cell"], 1, "Pre-warming 1 instance (stem cell)"),
    (["cell", "cell", "container"], 3, "Pre-warming 3 instances (2 stem cells, 1 container)"),
    (["container", "container"], 2, "Pre-warming 2 instances (2 containers)"),
])
def test_start_title_names_each_path(paths: list[str], prewarm: int, title: str) -> None:
    assert start_title(paths, prewarm) == title


def test_prewarm_count_is_one_by_default_and_at_most_max_instances() -> None:
    config = parse_manifest('handler = "h.h"\n[scaling]\nmax_instances = 4\n',
                            has_dockerfile=False).config
    assert [prewarm_count(n, config) for n in (0, 1, 4)] == [1, 1, 4]
    with pytest.raises(InvalidArgument, match="max_instances"):
        prewarm_count(5, config)


def test_a_deploy_cancelled_while_prewarming_removes_what_started(tmp_path: Path) -> None:
    """The client goes away while one of two instances has loaded and the other is still
    importing: the loaded one is removed, the other's start cancelled, nothing recorded,
    and v1 keeps serving."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        v1_instances = list(p.runtime.instances)
        start = p.runtime.start_instance
        importing = asyncio.Event()
        calls = 0

        async def second_never_loads(version: Any, *, plan: Any = None) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                importing.set()
                await asyncio.Event().wait()
            return await start(version, plan=plan)
        p.runtime.start_instance = second_never_loads  # type: ignore[method-assign]
        task = asyncio.ensure_future(p.deploy("greet", prewarm=2))
        await importing.wait()
        await asyncio.sleep(0.01)  # the first start ends
        assert len(p.runtime.instances) == len(v1_instances) + 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert p.runtime.instances == v1_instances
        assert [i.version.number for i in p.runtime.removed] == [2]
        assert p.runtime.active["greet"].number == 1
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert p.artifacts.find("greet", 2) is None
    run(tmp_path, scenario)


def test_a_deploy_cancelled_while_removing_a_failed_prewarm_still_removes_it(
    tmp_path: Path
) -> None:
    """A pre-warm fails (one import raised) and the deploy removes the instance that did
    load; the client goes away (or the daemon's drain grace ends) during that removal, a
    stop's grace of up to a second: the removal still ends. Cut short, it left a running
    container that no pool knows of, so nothing stopped it until lambdad restarted."""
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        v1_instances = list(p.runtime.instances)
        remove = p.runtime.remove_instance
        removing = asyncio.Event()
        stopped = asyncio.Event()

        async def slow_remove(instance: Any) -> None:
            removing.set()
            await stopped.wait()  # its grace: the container has not exited yet
            await remove(instance)
        p.runtime.remove_instance = slow_remove  # type: ignore[method-assign]
        p.runtime.fail_start = InstanceFailed(
            "greet v2 failed to initialize: Runtime.ImportModuleError: boom")
        task = asyncio.ensure_future(p.deploy("greet", prewarm=2))
        await removing.wait()
        task.cancel()
        await asyncio.sleep(0.01)
        stopped.set()
        with contextlib.suppress(asyncio.CancelledError, InstanceFailed):
            await task
        assert task.done()  # ended (cancelled, or with the pre-warm's failure) once removed
        assert p.runtime.instances == v1_instances
        assert [i.version.number for i in p.runtime.removed] == [2]
        assert p.runtime.active["greet"].number == 1
        assert [v.number for v in await p.store.versions("greet")] == [1]
        assert p.artifacts.find("greet", 2) is None  # and its build with them
    run(tmp_path, scenario)
