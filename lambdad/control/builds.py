"""The one owner of what a build leaves on disk: a version's image and its artifact.

A standard-runtime version built by this lambdad has an artifact and no image (its
`image` is ""); a Dockerfile function's has an image; one built by an earlier lambdad has
both, and keeps both until it goes.

The builder writes an artifact while it builds (through `ArtifactSink.save`) and the
runtime manager reads one to specialize a stem cell (`ArtifactSource.find`); every other
change, cloning one for a config-only version, removing one with its image, dropping a
function's, and clearing what a killed deploy left, is decided here and only here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from lambdad.build import ArtifactStore
from lambdad.control.ports import Builder

log = logging.getLogger("lambdad.control")


class Builds:
    def __init__(self, builder: Builder, artifacts: ArtifactStore | None,
                 local_prefix: str = "") -> None:
        self._builder = builder
        self._artifacts = artifacts
        # Cluster mode: this node's image prefix. A Dockerfile version deployed through
        # another node is built here at first use under this node's own tag
        # (build/localize.py), which no row names but which is referenced all the same.
        self._local_prefix = local_prefix

    async def tag(self, name: str, base: int, image_id: str, number: int, image: str) -> None:
        """Version `number` shares version `base`'s image (a new tag, when it has one: a
        standard-runtime version of this lambdad has none) and files (links)."""
        if image and image_id:
            await asyncio.to_thread(self._builder.tag_image, image_id, image)
        if self._artifacts is not None:
            await asyncio.to_thread(self._artifacts.clone, name, base, number)

    async def remove(self, name: str, number: int, image: str) -> None:
        """Undoes a version's build: its image (if it has one) and its artifact."""
        if image:
            await asyncio.to_thread(self._builder.remove_image, image)
        if self._artifacts is not None:
            await asyncio.to_thread(self._artifacts.remove, name, number)

    async def remove_function(self, name: str, images: Iterable[str]) -> None:
        for image in images:
            if image:  # "" is a version on the shared runtime image: nothing to remove
                await asyncio.to_thread(self._builder.remove_image, image)
        if self._artifacts is not None:
            await asyncio.to_thread(self._artifacts.remove_function, name)

    async def prune_orphans(self, live: list[tuple[str, int]], referenced: set[str]) -> int:
        """Removes artifacts not in `live` (function, version) and owned images none of
        whose tags is `referenced`: a deploy killed between its build and its row leaves
        them behind. Returns the number of images removed."""
        if self._artifacts is not None:
            await asyncio.to_thread(self._artifacts.retain, live)
        if self._local_prefix:
            referenced = referenced | {f"{self._local_prefix}/{function}:v{number}"
                                       for function, number in live}
        owned = await asyncio.to_thread(self._builder.owned_images)
        removed = 0
        for image_id, tags in owned:
            if not referenced.intersection(tags):
                await asyncio.to_thread(self._builder.remove_image, image_id)
                removed += 1
        if removed:
            log.info("reconciled: removed %d image(s) without a version", removed)
        return removed
