"""The Docker host configurations lambdad asks for (pure: limits in, options out).

`DockerBackend` hands these to `create_host_config`; kept apart so what a container may
do is read, and tested, in one place without an engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambdad.runtime.cells import CellClass
from lambdad.runtime.folder import CONTAINER_UID


def instance_options(limits: CellClass, binds: dict[str, dict[str, str]], *, init: bool,
                     volumes: tuple[str, ...] = (), tmp_size_mb: int = 64) -> dict[str, Any]:
    """A function instance's or stem cell's container. `init`: Docker's tini as PID 1, for
    Dockerfile functions. The standard runtime is its container's PID 1 itself: its
    supervisor reaps, and alone holds the log stream."""
    memory = f"{limits.memory_mb}m"
    tmpfs = f"rw,nosuid,nodev,size={tmp_size_mb}m"
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        # An image's VOLUME would get an anonymous Docker volume: host disk without a
        # bound, kept after the container. A tmpfs like /tmp takes its place.
        "tmpfs": {**{path: f"{tmpfs},uid={CONTAINER_UID},gid={CONTAINER_UID},mode=0700"
                     for path in volumes}, "/tmp": tmpfs},
        "mem_limit": memory,
        "memswap_limit": memory,
        # Quota and period rather than NanoCpus: only these can be updated later.
        "cpu_period": 100_000,
        "cpu_quota": int(limits.cpu * 100_000),
        "pids_limit": limits.pids_limit,
        "network_mode": limits.network,
        "binds": binds,
        "init": init,
        "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
    }


def cleanup_options(folder: Path) -> dict[str, Any]:
    """The short-lived container that empties an instance folder: only CAP_DAC_OVERRIDE
    and CAP_FOWNER, no network, the folder its only writable mount."""
    return {
        "cap_drop": ["ALL"], "cap_add": ["DAC_OVERRIDE", "FOWNER"],
        "security_opt": ["no-new-privileges"], "read_only": True, "network_mode": "none",
        "mem_limit": "64m", "memswap_limit": "64m", "pids_limit": 16,
        "binds": {str(folder): {"bind": "/folder", "mode": "rw"}},
        "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
    }


def memory_in_use(stats: dict[str, Any]) -> int | None:
    """Memory in use from the engine's stats, as `docker stats` shows it (the page cache
    it can drop excluded); None if the stats hold none."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, int(usage) - int(cache))
