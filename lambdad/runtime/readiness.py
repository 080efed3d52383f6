"""When a starting container is ready: its socket answers in its locked folder, and (a
standard runtime) its handler is loaded by POST /init.

One way for both cold paths, a new container and a stem cell, so their start errors,
timeouts and INIT_REPORT lines are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time

from lambdad.errors import InstanceFailed, InvalidArgument, Unavailable
from lambdad.functions import FunctionVersion
from lambdad.jsontext import parse_json
from lambdad.runtime.backend import Backend
from lambdad.runtime.docker_backend import TASK_DIR, function_environment
from lambdad.runtime.folder import InstanceFolder, Refused, start_problem
from lambdad.runtime.stops import Stopper
from lambdad.runtime.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("lambdad.runtime")

READY_POLL_S = 0.003  # a cold start waits on this; an openat and a scandir are cheap


class Readiness:
    def __init__(self, backend: Backend, stopper: Stopper, *, start_timeout: float) -> None:
        self._backend = backend
        self._stopper = stopper
        self.start_timeout = start_timeout

    async def load(
        self, version: FunctionVersion, folder: InstanceFolder, container_id: str,
        conn: UpstreamConnection | None,
    ) -> tuple[UpstreamConnection | None, float, float]:
        """POST /init: the runtime imports the version's handler with its environment.
        Returns the connection when it can be reused (closes it on failure), how long the
        import took as the runtime measured it (ms), and how long the function's
        before-snapshot hooks took after it (ms; the two make its REPORT's Init Duration)."""
        name = f"{version.function} v{version.number}"
        try:
            if conn is None or not conn.is_fresh:
                if conn is not None:
                    conn.close()
                conn = await UpstreamConnection.open(folder)
        except (OSError, Refused) as exc:
            raise InstanceFailed(f"instance of {name} stopped answering on its socket before "
                                 f"loading its code ({exc})") from None
        init = json.dumps({"handler": version.config.handler, "task_root": TASK_DIR,
                           "env": function_environment(version)}).encode()
        try:
            try:
                async with asyncio.timeout(self.start_timeout):
                    status, reply = await conn.fetch(
                        b"POST", b"/init",
                        [(b"host", b"cell"), (b"content-type", b"application/json")], init)
            except TimeoutError:
                raise Unavailable(f"{name} did not finish loading its code within "
                                  f"{self.start_timeout:.0f} s") from None
            except UpstreamError as exc:
                state = await self._stopper.settled_state(container_id)
                logs = "" if state.running else await asyncio.to_thread(
                    self._backend.logs_tail, container_id)
                raise InstanceFailed(
                    f"instance of {name} {state.describe(version.config.memory_mb)} while "
                    f"loading its code ({exc})" + (f":\n{logs}" if logs else "")) from None
            if status != 200:
                raise InstanceFailed(f"{name} failed to initialize: {init_error(reply)}")
        except BaseException:
            conn.close()
            raise
        loaded_ms = init_duration(reply)
        hooks_ms = min(hooks_duration(reply), loaded_ms)
        if conn.recycle():
            return conn, loaded_ms - hooks_ms, hooks_ms
        conn.close()
        return None, loaded_ms - hooks_ms, hooks_ms

    async def wait_socket(
        self, folder: InstanceFolder, container_id: str, what: str, memory_mb: int
    ) -> UpstreamConnection:
        """A connection to a starting container's socket, once it answers, with its folder
        locked first; until the socket appears, what the folder holds is bounded. A folder
        refused on the way is sealed at once (the instance is then removed, killed)."""
        deadline = time.monotonic() + self.start_timeout
        next_state_check = time.monotonic() + 0.25
        while True:
            try:
                if not folder.locked:
                    try:
                        os.close(folder.open_socket())
                    except OSError:  # no socket yet
                        problem = start_problem(folder.usage())
                        if problem is not None:
                            raise Refused(problem) from None
                    else:
                        folder.lock()
                if folder.locked:
                    with contextlib.suppress(OSError):  # bound, not listening yet
                        return await UpstreamConnection.open(folder)
            except Refused as exc:
                folder.seal()
                log.warning('instance refused instance=%s what="%s" reason="%s"',
                            folder.path.name, what, exc.reason)
                raise InstanceFailed(f"{what} was refused: {exc.reason}") from None
            now = time.monotonic()
            if now >= next_state_check:
                state = await asyncio.to_thread(self._backend.state, container_id)
                if not state.running:
                    logs = await asyncio.to_thread(self._backend.logs_tail, container_id)
                    raise InstanceFailed(
                        f"{what} {state.describe(memory_mb)} during start"
                        + (f":\n{logs}" if logs else "")
                    )
                next_state_check = now + 0.25
            if now >= deadline:
                raise Unavailable(
                    f"{what} did not open its socket within {self.start_timeout:.0f} s"
                )
            await asyncio.sleep(READY_POLL_S)


def init_duration(reply: bytes) -> float:
    """The load's duration from the runtime's answer to POST /init, `{"initDurationMs":
    605.2}` (the import and the before-snapshot hooks); 0 when it does not say (a runtime
    image older than that answer)."""
    return _duration(reply, "initDurationMs")


def hooks_duration(reply: bytes) -> float:
    """The before-snapshot hooks' share of it, `"hooksDurationMs": 40.1`; 0 when none ran
    (or the runtime image is older than the hooks)."""
    return _duration(reply, "hooksDurationMs")


def _duration(reply: bytes, key: str) -> float:
    try:  # parse_json: nesting past the recursion limit is InvalidArgument too
        value = parse_json(reply, "the runtime's /init answer")[key]
    except (InvalidArgument, KeyError, TypeError):
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        return 0.0
    return float(value)


def init_error(reply: bytes) -> str:
    """`Runtime.ImportModuleError: Unable to import module 'app': ...` from the cell's reply."""
    try:
        data = parse_json(reply, "the runtime's /init answer")
        return f"{data['errorType']}: {data['errorMessage']}"
    except (InvalidArgument, KeyError, TypeError):
        return reply.decode(errors="replace")[:500] or "no reply"
