"""Runtime hooks with the API of AWS Lambda SnapStart's `snapshot_restore_py`, so code written
for SnapStart runs here unchanged.

    from snapshot_restore_py import register_before_snapshot, register_after_restore

    @register_before_snapshot
    def warm_up(): ...                      # once per instance, in the zygote

    register_after_restore(reconnect, db)   # in each worker, right after its fork

Here the "snapshot" is the zygote (see lambda_runtime/worker.py): before-snapshot hooks run
once per instance in the zygote, after the handler's import and before the first worker is
forked, so every worker inherits what they did (copy-on-write); after-restore hooks run in
each new worker right after its fork, before its first request. As on Lambda,
before-snapshot hooks run in the reverse order of registration and after-restore hooks in
the order of registration, each called with the arguments given at registration.

A before-snapshot hook that raises fails the init (Runtime.BeforeSnapshotError); an
after-restore hook that raises fails that worker's first request
(Runtime.AfterRestoreError) and the worker exits. Function code may vendor the PyPI package
of the same name instead: the runtime reads the registry through `get_before_snapshot()` and
`get_after_restore()` of whichever module was imported.

Stdlib only, and nothing happens at import: the registries are two lists.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])
    Entry = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

__all__ = ["get_after_restore", "get_before_snapshot", "register_after_restore",
           "register_before_snapshot"]

_before_snapshot: list[Entry] = []
_after_restore: list[Entry] = []


def register_before_snapshot(func: F, *args: Any, **kwargs: Any) -> F:
    """Runs `func(*args, **kwargs)` once in the zygote before any worker is forked; returns
    `func` unchanged, so it also works as a decorator."""
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(func: F, *args: Any, **kwargs: Any) -> F:
    """Runs `func(*args, **kwargs)` in each worker right after its fork, before its first
    request; returns `func` unchanged, so it also works as a decorator."""
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot() -> list[Entry]:
    """The before-snapshot hooks in the order of registration (they run in reverse)."""
    return _before_snapshot


def get_after_restore() -> list[Entry]:
    """The after-restore hooks in the order of registration (they run in that order)."""
    return _after_restore
