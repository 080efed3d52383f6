"""One request to one instance: take a slot from the pool that serves it, thaw the
instance if it is paused, send over a kept-alive or new connection, hand the response
back with a release that returns the slot; and pausing idle instances.

A failure decides the instance's fate here (a stale keep-alive connection is retried,
an instance that broke the exchange or passed its timeout is discarded), and the pool
it serves in (`Instance.owner`, which a version switch can change) is told once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lambdad.errors import FunctionTimeout, InstanceFailed, Unavailable
from lambdad.runtime.backend import Backend
from lambdad.runtime.folder import Refused
from lambdad.runtime.hop import RUNTIME_PREFIX, encode_request, runtime_control
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse
from lambdad.runtime.pool import Instance, InstancePool
from lambdad.runtime.routing import Routes
from lambdad.runtime.stops import Stopper
from lambdad.runtime.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("lambdad.runtime")

# What lambdad adds to every request (DESIGN's runtime contract), in one format.
_LAMBDA_HEADERS = (b"lambda-request-id: %s\r\nlambda-deadline-ms: %d\r\n"
                   b"lambda-invocation-type: %s\r\n")
PAUSE_RETRY_S = 300  # after a failed pause, leave that instance running this long
# Idle this long after a direct thaw, Docker's view is settled (a ~15 ms freeze and API
# unpause a request arriving meanwhile waits for; not at once, so a burst does not)
SETTLE_AFTER_S = 0.5


def _pool(instance: Instance) -> InstancePool:
    """The pool an acquired instance serves in now (a switch may have moved it)."""
    assert instance.owner is not None  # set by every pool that takes an instance in
    return instance.owner


class Forwarder:
    def __init__(self, routes: Routes, backend: Backend, stopper: Stopper) -> None:
        self._routes = routes
        self._backend = backend
        self._stopper = stopper

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        name = request.function
        pool = self._routes.pool_for(name, request.version)
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            instance, cold = await pool.acquire(pool.version.config.queue_timeout_s)
            version = instance.version
            timeout = version.config.timeout_s
            start = instance.start_path if cold else "warm"
            if instance.paused or instance.transition.locked():
                try:
                    if await self._unpause(instance):
                        start = "unpaused"
                except BaseException:
                    _pool(instance).release(instance)
                    raise
            try:
                conn, reused = await self._connection(instance)
            except Refused as exc:
                _pool(instance).release(instance)
                reason = f"was refused: {exc.reason}"
                log.warning('instance refused function=%s version=%d instance=%s reason="%s"',
                            name, version.number, instance.id, exc.reason)
                _pool(instance).discard(instance, reason)
                raise InstanceFailed(f"the instance of {name!r} {reason}") from None
            except BaseException:
                _pool(instance).release(instance)
                raise
            if conn is None:
                _pool(instance).release(instance)
                _pool(instance).discard(instance, "stopped answering on its socket")
                continue
            lines = _LAMBDA_HEADERS % (request.request_id.encode(),
                                       int((time.time() + timeout) * 1000),
                                       request.invocation_type.encode())
            if start != "warm":
                lines += b"lambda-start: " + start.encode() + b"\r\n"
            payload = encode_request(request.method, request.target, request.headers, lines,
                                     request.body, (name + ".lambda").encode())
            sent_at = loop.time()
            deadline = sent_at + timeout
            try:
                status, response_headers = await conn.request(
                    payload, head_only=request.method == b"HEAD", deadline=deadline)
            except TimeoutError:
                self._release(instance, conn)
                _timed_out(instance, timeout)
                raise FunctionTimeout(
                    f"function {name!r} did not respond within its timeout of {timeout} s"
                ) from None
            except UpstreamError as exc:
                self._release(instance, conn)
                state = await self._stopper.settled_state(instance.container_id)
                if (state.running and reused and not exc.answered and not instance.dead
                        and attempt < 2):
                    continue  # a stale keep-alive connection; the instance itself is fine
                detail = instance.end_reason or state.describe(version.config.memory_mb)
                if state.running and not instance.end_reason:
                    detail = f"broke the HTTP exchange ({exc})"
                _pool(instance).discard(instance, detail)
                raise InstanceFailed(
                    f"the instance of {name!r} {detail} while handling the request"
                ) from None
            except BaseException:
                self._release(instance, conn)
                raise
            if (response_headers and response_headers[0][0].startswith(RUNTIME_PREFIX)
                    and version.config.runtime != "docker"):  # the runtime's word first
                workers, waited_out, response_headers = runtime_control(response_headers)
                if workers is not None:
                    _pool(instance).set_workers(instance, workers)
                if waited_out:
                    # It never ran: only this request timed out, the instance serves on.
                    self._release(instance, conn)
                    raise FunctionTimeout(
                        f"function {name!r} did not respond within its timeout of {timeout} s"
                        f" (it waited for a worker: the instance's memory holds "
                        f"{workers or instance.workers or '?'})") from None
            reader = conn.reader
            content = reader.take_body() if reader.complete else None
            exchange = _Exchange(self, instance, conn, content)
            return InvocationResponse(
                status=status,
                headers=response_headers,
                version=version.number,
                cold_start=start in ("cell", "container"),
                start=start,
                body=exchange,
                release=exchange.release,
                function_ms=(loop.time() - sent_at) * 1000,
                init_ms=instance.init_ms if start in ("cell", "container") else 0.0,
                import_ms=instance.import_ms if start in ("cell", "container") else 0.0,
                hooks_ms=instance.hooks_ms if start in ("cell", "container") else 0.0,
                fetch_ms=instance.fetch_ms if start in ("cell", "container") else 0.0,
                content=content,
            )
        raise Unavailable(f"no instance of {name!r} could take the request")

    async def _connection(
        self, instance: Instance
    ) -> tuple[UpstreamConnection | None, bool]:
        """An idle connection, or a new one (None if the socket does not answer); Refused
        when the folder no longer holds the function's own socket."""
        while instance.idle:
            conn = instance.idle.pop()
            if not conn.stray:
                return conn, True
            conn.close()  # bytes arrived while it was idle: never read them as an answer
        try:
            return await UpstreamConnection.open(instance.folder), False
        except OSError:
            return None, False

    def _release(self, instance: Instance, conn: UpstreamConnection) -> None:
        if conn.recycle() and not instance.dead:
            instance.idle.append(conn)
        else:
            conn.close()
        _pool(instance).release(instance)

    # Pausing idle instances

    def may_pause(self, instance: Instance, now: float, pause_after: float) -> bool:
        """Idle for `pause_after`, and not in a pause, an unpause or a pause's back-off."""
        return (not instance.paused and not instance.dead and instance.in_flight == 0
                and not instance.unsettled  # Docker says Paused: settled first
                and not instance.transition.locked()
                and now - instance.last_used >= pause_after
                and now >= instance.no_pause_until)

    def may_settle(self, instance: Instance, now: float) -> bool:
        """Thawed directly, idle for SETTLE_AFTER_S, and not in a transition or back-off."""
        return (instance.unsettled and not instance.paused and not instance.dead
                and instance.in_flight == 0 and not instance.transition.locked()
                and now - instance.last_used >= SETTLE_AFTER_S
                and now >= instance.no_settle_until)

    async def settle(self, instance: Instance) -> None:
        """Brings Docker's view of a directly thawed instance back to running (it said
        Paused: `docker exec` refused, a second `docker pause` refused). A request that
        comes meanwhile waits for it, as for a pause."""
        async with instance.transition:
            if (not instance.unsettled or instance.paused or instance.dead
                    or instance.in_flight > 0):
                return
            try:
                await asyncio.to_thread(self._backend.settle, instance.container_id)
            except Exception as exc:
                # Neither settled nor pausable (Docker says Paused): as after a failed
                # pause, it cannot be kept frozen, so its idle timeout stops it, not a
                # freeze window it would spend running, outside the frozen memory bound.
                instance.no_settle_until = time.monotonic() + PAUSE_RETRY_S
                instance.no_pause_until = instance.no_settle_until
                log.warning("settling a thawed instance failed instance=%s retry_in_s=%d "
                            "error=%s", instance.id, PAUSE_RETRY_S, exc)
                return
            instance.unsettled = False
        log.debug("thawed instance settled function=%s instance=%s",
                  instance.version.function, instance.id)

    async def pause(self, instance: Instance) -> None:
        """Freezes an idle instance (cgroup freezer): no CPU, memory kept, ~ms to thaw.
        Its memory is measured once frozen (it cannot change until a thaw), off the loop,
        for the bound on frozen memory."""
        async with instance.transition:
            if instance.paused or instance.dead or instance.in_flight > 0:
                return
            instance.paused = True
            instance.pauses += 1
            try:
                await asyncio.to_thread(self._backend.pause, instance.container_id)
            except Exception as exc:
                instance.paused = False
                instance.no_pause_until = time.monotonic() + PAUSE_RETRY_S  # e.g. no freezer
                log.warning("pause failed instance=%s retry_in_s=%d error=%s", instance.id,
                            PAUSE_RETRY_S, exc)
                return
            pauses = instance.pauses
        log.debug("instance paused function=%s instance=%s", instance.version.function,
                  instance.id)
        size = await asyncio.to_thread(self._backend.memory_bytes, instance.container_id)
        if instance.paused and instance.pauses == pauses:  # not thawed meanwhile
            # Unknown (stats failed): its memory limit, an upper bound.
            instance.paused_bytes = (size if size is not None
                                     else instance.version.config.memory_mb * 1024 * 1024)

    async def _unpause(self, instance: Instance) -> bool:
        """Thaws a paused instance before a request uses it; True if it was paused.
        Directly through its freezer file when the backend can (microseconds; Docker's
        view is settled later, idle), else through the Docker API (12-48 ms)."""
        async with instance.transition:
            if not instance.paused:
                return False
            try:
                # On the loop when its freezer file is known (a write of a few bytes; a
                # thread's round trip would cost more), else in a thread (found first).
                if (self._backend.thaw(instance.container_id, find=False)
                        or await asyncio.to_thread(self._backend.thaw, instance.container_id)):
                    instance.unsettled = True
                else:
                    await asyncio.to_thread(self._backend.unpause, instance.container_id)
            except Exception as exc:
                # Unpaused behind our back (docker unpause by hand) is fine; anything
                # else and the instance goes, so no request waits on it again.
                if not await asyncio.to_thread(self._backend.is_running_unpaused,
                                               instance.container_id):
                    _pool(instance).discard(instance, f"could not be unpaused ({exc})")
                    raise Unavailable(f"could not unpause an instance: {exc}") from None
            instance.paused = False
            instance.paused_bytes = None
            return True


def _timed_out(instance: Instance, timeout: int) -> None:
    instance.end_reason = (
        f"was stopped because a request to it passed the function's timeout of {timeout} s"
    )
    _pool(instance).discard(instance, instance.end_reason)


class _Exchange:
    """One response's body, read through the instance's connection, and its release:
    one object per request where a generator, a timeout context per read and a
    release closure used to be."""

    __slots__ = ("_conn", "_content", "_forwarder", "_instance", "_released")

    def __init__(self, forwarder: Forwarder, instance: Instance, conn: UpstreamConnection,
                 content: bytes | None) -> None:
        self._forwarder = forwarder
        self._instance = instance
        self._conn = conn
        self._content = content  # the whole body when it came with the head; None: streamed
        self._released = False

    def __aiter__(self) -> _Exchange:
        return self

    async def __anext__(self) -> bytes:
        content = self._content
        if content is not None:
            if content:
                self._content = b""
                return content
            raise StopAsyncIteration
        instance = self._instance
        name = instance.version.function
        try:
            chunk = await self._conn.next_chunk()
        except TimeoutError:
            self._content = b""
            timeout = instance.version.config.timeout_s
            _timed_out(instance, timeout)
            raise FunctionTimeout(
                f"function {name!r} did not finish its response within {timeout} s"
            ) from None
        except UpstreamError as exc:
            self._content = b""
            _pool(instance).discard(instance, f"failed mid-response ({exc})")
            raise InstanceFailed(
                f"the instance of {name!r} failed mid-response: {exc}") from None
        if chunk is None:
            self._content = b""
            raise StopAsyncIteration
        return chunk

    def release(self) -> None:
        """The gateway and the API both release in `finally`; only the first call counts."""
        if self._released:
            return
        self._released = True
        try:
            self._forwarder._release(self._instance, self._conn)
        except Exception:
            log.exception("releasing an instance failed")
