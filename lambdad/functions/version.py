"""The immutable unit of deployment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lambdad.functions.manifest import FunctionConfig


@dataclass(frozen=True)
class FunctionVersion:
    function: str
    number: int
    image: str
    image_id: str
    config: FunctionConfig
    code_sha256: str
    code_size: int
    created_at: datetime
    deployed_by: str = "local"
    pruned: bool = False  # its image was removed by retention; the row stays as history
    source_version: int | None = None  # a config-only version reuses this version's image
    # Cluster mode (build/blobs.py): the shared blob of the version's artifact (a standard
    # runtime) or build context (a Dockerfile function); "" when none was stored.
    artifact_sha256: str = ""
    context_sha256: str = ""

    @property
    def shared_image(self) -> bool:
        """Runs on the shared runtime image with its artifact mounted: a standard-runtime
        version has no image of its own (`image` is ""), unless an earlier lambdad built
        one for it."""
        return not self.image

    @property
    def stamp(self) -> str:
        """Which version, beyond its name and number: its creation in microseconds. A
        function deleted and deployed again restarts at v1; in cluster mode a node that
        was down meanwhile must not take its instances or image of the deleted v1 for the
        new one (written in instances' owner files and labels, images' labels)."""
        created = self.created_at
        if created.tzinfo is None:  # stored in UTC (the store hands back aware ones)
            created = created.replace(tzinfo=UTC)
        return str((created - _EPOCH) // timedelta(microseconds=1))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Activation:
    """One switch of the live version: by a deploy, a config change or a rollback."""

    version: int
    activated_at: datetime
    reason: str  # "deploy" | "config" | "rollback"
