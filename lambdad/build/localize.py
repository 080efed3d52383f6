"""Cluster mode: making a version runnable on a node that never built it.

Every node serves every function (DESIGN "Many nodes"), but a version is built on the node
it was deployed through. The deploy stores what the version needs in the shared database
before its row (build/blobs.py); a node that lacks it gets it at the version's first cold
start here:

- a standard-runtime version: its artifact blob, fetched into `vN.blob.partial`, verified,
  unpacked into `vN.partial` and renamed to `vN` (a fetch cut short leaves only the
  `.partial` files, which the next one removes first);
- a Dockerfile function's version: its stored build context, built here by the same
  `ImageBuilder` (same limits, labelled with this daemon's id) into this node's own tag
  `<image_prefix>/<name>:v<N>`, which the node then runs instead of the deploying node's.

Concurrent starts of one version share one fetch or build (a future per version). The
time spent is the start's `fetch_ms` (Server-Timing `fetch;dur=`) and goes into the
`lambdad_artifact_fetch_seconds` histogram.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from lambdad.build import tarball
from lambdad.build.artifacts import ArtifactStore
from lambdad.build.blobs import BlobStore, remove_quietly, unpack
from lambdad.build.builder import BuildSpec, BuiltImage, ImageBuilder
from lambdad.build.tarrules import TarLimits
from lambdad.errors import Unavailable
from lambdad.functions import FunctionVersion

log = logging.getLogger("lambdad.build.localize")

Observe = Callable[[str, float], None]  # (kind, seconds)


@dataclass(frozen=True)
class Localized:
    """What a start of the version runs here: `image` for a Dockerfile function ("" for
    the version's recorded image, or a standard runtime), and how long it took to get."""

    image: str = ""
    fetch_ms: float = 0.0


class Localizer:
    def __init__(
        self, blobs: BlobStore, artifacts: ArtifactStore, *, image_prefix: str,
        spool_dir: Path, tar_limits: TarLimits, builder: ImageBuilder | None = None,
        image_id: Callable[[str], str] | None = None, observe: Observe | None = None,
        image_stamp: Callable[[str], str] | None = None,
    ) -> None:
        self._blobs = blobs
        self._artifacts = artifacts
        self._image_prefix = image_prefix
        self._spool = spool_dir
        self._tar_limits = tar_limits
        self._builder = builder
        self._image_id = image_id
        self._image_stamp = image_stamp  # (tag) -> the version stamp it was built for
        self._observe = observe
        self._pending: dict[tuple[str, int], asyncio.Future[str]] = {}
        self.fetches = 0  # artifacts fetched and images built by this node (tests read it)

    def local_image(self, version: FunctionVersion) -> str:
        """This node's own tag for a Dockerfile function's version."""
        return f"{self._image_prefix}/{version.function}:v{version.number}"

    async def ensure(self, version: FunctionVersion) -> Localized:
        """Makes `version` runnable here, fetching or building it at most once at a time."""
        if version.config.runtime == "docker":
            if not version.context_sha256:
                return Localized()
            local = self.local_image(version)
            if version.image == local:  # deployed (or reconfigured) through this node
                return Localized()
            if self._image_id is not None:
                found: str = await asyncio.to_thread(self._image_id, local)
                if found and await self._same_version(local, version):
                    return Localized(local)  # built here at an earlier first use
            return await self._once(version, "image", self._build_image)
        if not version.artifact_sha256 or self._current(version.function, version.number,
                                                        version.artifact_sha256):
            return Localized()
        return await self._once(version, "artifact", self._fetch_artifact)

    async def _same_version(self, local: str, version: FunctionVersion) -> bool:
        """Whether this node's image under `local` was built for this version, not for a
        deleted one of the same name and number (see `_current`)."""
        if self._image_stamp is None:
            return True
        return bool(await asyncio.to_thread(self._image_stamp, local) == version.stamp)

    def _current(self, function: str, number: int, sha256: str) -> bool:
        """Whether this node's copy of the version is the blob its row names. A node
        that missed a delete and a new deploy of the same name (versions restart at 1)
        holds another blob's `vN`: that one is stale and is fetched again."""
        found = self._artifacts.find(function, number)
        return found is not None and ArtifactStore.blob(found) == sha256

    async def _once(self, version: FunctionVersion, kind: str,
                    work: Callable[[FunctionVersion], Awaitable[str]]) -> Localized:
        key = (version.function, version.number)
        started = time.monotonic()
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(work(version))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: one start given up (a cancelled request) does not cancel the others'.
        image = await asyncio.shield(pending)
        seconds = time.monotonic() - started
        if self._observe is not None:
            self._observe(kind, seconds)
        return Localized(image, seconds * 1000)

    async def _fetch_artifact(self, version: FunctionVersion) -> str:
        started = time.monotonic()
        await asyncio.to_thread(self.fetch_artifact, version)
        self.fetches += 1
        log.info("artifact fetched function=%s version=%d blob=%s fetch_ms=%.0f",
                 version.function, version.number, version.artifact_sha256[:12],
                 (time.monotonic() - started) * 1000)
        return ""

    def fetch_artifact(self, version: FunctionVersion) -> Path:
        """Blocking: the version's artifact from its blob, put in place by one rename."""
        final = self._artifacts.path(version.function, version.number)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        blob = final.with_name(final.name + ".blob.partial")
        staging = final.with_name(final.name + ".partial")
        remove_quietly(blob, staging, final)  # what a fetch cut short left; a stale copy
        source = version.source_version
        if source is not None and self._current(version.function, source,
                                                version.artifact_sha256):
            # A config-only version's files are its source's (the same blob): linked from
            # the copy this node already has, nothing fetched.
            cloned = self._artifacts.clone(version.function, source, version.number)
            if cloned is not None:
                return cloned
        try:
            self._blobs.fetch(version.artifact_sha256, blob)
            unpack(blob, staging)
            ArtifactStore.mark_blob(staging, version.artifact_sha256)
            os.rename(staging, final)
        except BaseException:
            remove_quietly(staging)
            raise
        finally:
            remove_quietly(blob)
        return final

    async def _build_image(self, version: FunctionVersion) -> str:
        if self._builder is None:
            raise Unavailable(f"{version.function} v{version.number} was built on another "
                              "node and this one cannot build images")
        started = time.monotonic()
        self._spool.mkdir(parents=True, exist_ok=True)
        archive = self._spool / f"context-{secrets.token_hex(8)}.tar.partial"
        local = self.local_image(version)
        try:
            await asyncio.to_thread(self._blobs.fetch, version.context_sha256, archive)
            summary = await asyncio.to_thread(tarball.validate, archive, self._tar_limits)
            spec = BuildSpec(function=version.function, version=version.number, image=local,
                             archive=archive, runtime="docker", archive_format=summary.format,
                             tar_limits=self._tar_limits, stamp=version.stamp)
            built: BuiltImage | None = None
            async for item in self._builder.build(spec):
                if isinstance(item, BuiltImage):
                    built = item
            assert built is not None
        finally:
            remove_quietly(archive)
        self.fetches += 1
        log.info("image built from the stored context function=%s version=%d image=%s "
                 "build_ms=%.0f", version.function, version.number, local,
                 (time.monotonic() - started) * 1000)
        return local
