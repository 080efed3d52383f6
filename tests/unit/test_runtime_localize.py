"""Cluster mode's first use of a version on a node that never ran it (build/localize.py):
the runtime manager awaits the localizer before it starts the instance, runs the node's
own image of a Dockerfile version, and reports the wait as the start's `fetch_ms`."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from lambdad.build.localize import Localized
from lambdad.errors import BlobRefused, Unavailable
from lambdad.functions import FunctionVersion
from tests.support.runtime import Runtime, run, version


def test_a_standard_version_is_fetched_before_its_start_and_the_wait_reported() -> None:
    async def scenario(root: Path) -> None:
        v1 = replace(version(), image="", artifact_sha256="ab" * 32)
        asked: list[FunctionVersion] = []
        rt: Runtime

        async def localize(v: FunctionVersion) -> Localized:
            asked.append(v)
            if rt.artifacts.find(v.function, v.number) is not None:
                return Localized()
            await asyncio.sleep(0.05)
            rt.save_artifact(v)  # what a fetch leaves
            return Localized(fetch_ms=50.0)

        rt = Runtime(root, localize=localize)
        await rt.manager.reconcile()
        rt.manager.register(v1)
        response, _ = await rt.call()
        assert response.cold_start and response.fetch_ms == 50.0
        assert response.init_ms >= 50.0  # the fetch is part of the start
        (container,) = rt.docker.containers.values()
        assert container.code == rt.artifacts.find("fn", 1)  # the fetched files, mounted
        warm, _ = await rt.call(request_id="req-2")
        assert warm.fetch_ms == 0 and not warm.cold_start
        assert asked == [v1]

    run(scenario)


def test_a_dockerfile_version_runs_this_nodes_own_image() -> None:
    async def scenario(root: Path) -> None:
        v1 = replace(version(runtime="docker"), image="lt-a/fn:v1", context_sha256="cd" * 32)

        async def localize(v: FunctionVersion) -> Localized:
            return Localized(image="lt-b/fn:v1", fetch_ms=900.0)

        rt = Runtime(root, localize=localize)
        await rt.manager.reconcile()
        rt.manager.register(v1)
        response, _ = await rt.call()
        assert response.fetch_ms == 900.0
        (container,) = rt.docker.containers.values()
        assert container.image == "lt-b/fn:v1"  # built here, not node A's tag
        assert response.version == 1 and rt.manager.active_version("fn") == v1  # as recorded

    run(scenario)


def test_a_refused_blob_fails_the_start_and_starts_nothing() -> None:
    async def scenario(root: Path) -> None:
        v1 = replace(version(), image="", artifact_sha256="ab" * 32)

        async def localize(v: FunctionVersion) -> Localized:
            raise BlobRefused("blob abababababab does not match its sha256")

        rt = Runtime(root, localize=localize)
        await rt.manager.reconcile()
        rt.manager.register(v1)
        with pytest.raises(Unavailable, match="sha256"):
            await rt.call()
        assert rt.docker.containers == {}
        assert rt.folders() == []

    run(scenario)
