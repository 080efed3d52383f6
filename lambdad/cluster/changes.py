"""Changes other nodes announce (NOTIFY lambda_changes), applied to this node.

An announcement says what changed, never the data: `{"o": origin node, "k": kind,
"n": name}`. This node then reads the rows itself (`Versions.sync`, the key table), so a
repeated, reordered or forged announcement can at worst make it re-read the truth. Its
own announcements are skipped (it applied the change as it made it). After a reconnect
every function and the keys are reloaded: an announcement missed meanwhile is harmless.

Anyone with access to the database can NOTIFY; the payload is parsed strictly, bounded
(PostgreSQL's own limit is 8000 bytes) and a bad one is dropped with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from lambdad.functions.names import is_valid_name

log = logging.getLogger("lambdad.cluster")

MAX_PAYLOAD = 8000
# Every kind any node may announce (later packages handle more of them); a node without
# a handler for one ignores it.
KINDS = frozenset({"fn", "keys", "schedules", "node", "cancel", "slots"})
RELOAD = ("*", "")  # the pending entry of a full reload
RETRIES = 30  # a change that fails (the store reconnecting) is tried again, 1 s apart
RETRY_AFTER = 1.0


@dataclass(frozen=True)
class Change:
    origin: str
    kind: str
    name: str


def parse_change(payload: str) -> Change:
    """The announcement in `payload`; ValueError says why it is refused."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} characters")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ValueError("payload is not JSON") from None
    if not isinstance(data, dict) or set(data) - {"o", "k", "n"}:
        raise ValueError("payload is not an object of o, k and n")
    origin, kind, name = data.get("o"), data.get("k"), data.get("n", "")
    if not isinstance(origin, str) or not isinstance(kind, str) or not isinstance(name, str):
        raise ValueError("o, k and n must be strings")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind[:40]!r}")
    if len(origin) > 128 or len(name) > 256:
        raise ValueError("origin or name too long")
    if kind == "fn" and not is_valid_name(name):
        raise ValueError(f"invalid function name {name[:80]!r}")
    return Change(origin, kind, name)


Handler = Callable[[str], Awaitable[object]]


class ChangeApplier:
    """Applies announced changes in tasks of their own (a slow sync never holds up the
    LISTEN loop), one task per function (or the keys, or a full reload) at a time: a
    change to one function that waits for this node's deploy of it holds up no other
    change (a key revocation least of all). A change announced again while it is being
    applied is applied once more after; pending twice, once.

    `handlers` maps a kind to what applies it (given the name); `reload` reloads all.
    Nothing is applied before `start` (the daemon's functions are loaded first); what
    arrives before waits."""

    def __init__(self, node_id: str, handlers: Mapping[str, Handler],
                 reload: Callable[[], Awaitable[object]]) -> None:
        self.node_id = node_id
        self._handlers = dict(handlers)
        self._reload = reload
        self._pending: dict[tuple[str, str], None] = {}  # before start
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._rerun: set[tuple[str, str]] = set()
        self._started = False
        self._failures: dict[tuple[str, str], int] = {}
        self.applied = 0
        self.refused = 0

    def submit(self, payload: str) -> Change | None:
        """Queues the change in `payload` unless it is bad, this node's own, or of a
        kind nobody here handles; returns it when queued."""
        try:
            change = parse_change(payload)
        except ValueError as exc:
            self.refused += 1
            log.warning("cluster: ignored a malformed change announcement: %s", exc)
            return None
        if change.origin == self.node_id or change.kind not in self._handlers:
            return None
        self._queue((change.kind, change.name))
        return change

    def reload_all(self) -> None:
        """Queues a full reload (before `start`, it covers what was pending)."""
        if not self._started:
            self._pending.clear()
        self._queue(RELOAD)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._started = True
        pending, self._pending = list(self._pending), {}
        for key in pending:
            self._queue(key)

    async def stop(self) -> None:
        self._started = False
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _queue(self, key: tuple[str, str]) -> None:
        if not self._started:
            self._pending[key] = None
        elif key in self._running:
            self._rerun.add(key)
        else:
            task = asyncio.create_task(self._apply(*key), name=f"cluster-change {key}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)
        if key in self._rerun:
            self._rerun.discard(key)
            self._queue(key)

    async def _apply(self, kind: str, name: str) -> None:
        try:
            if (kind, name) == RELOAD:
                await self._reload()
            else:
                await self._handlers[kind](name)
            self.applied += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = self._failures.get((kind, name), 0) + 1
            self._failures[(kind, name)] = failures
            log.warning("cluster: could not apply a change (%s %s), try %d: %s",
                        kind, name, failures, exc)
            if failures < RETRIES:
                asyncio.get_running_loop().call_later(RETRY_AFTER, self._queue, (kind, name))
            return
        self._failures.pop((kind, name), None)
