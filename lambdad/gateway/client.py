"""One client connection's task: does what its `ClientConnection` asks, awaiting the
socket, and invokes the function and relays its answer.

The rules are the machine's (`connection.py`); this module owns the awaits: reads under
the machine's deadlines, writes with back-pressure (a slow client slows the upstream body
down), the linger, the invocation cancelled when the client hangs up, and every upstream
response released exactly once, whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any, cast

import h11

from lambdad import errors
from lambdad.gateway.budget import Hold
from lambdad.gateway.connection import Close, Enqueue, Invoke, Linger, Read, Send
from lambdad.gateway.headers import response_headers
from lambdad.gateway.responses import Drop, Reply
from lambdad.gateway.stream import ClientStream, ReadTimeout
from lambdad.httpstatus import error_response
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse

if TYPE_CHECKING:
    from lambdad.gateway.server import Gateway

log = logging.getLogger("lambdad.gateway")

class Client:
    """One client connection: does what its `ClientConnection` asks, awaiting the socket."""

    def __init__(self, gateway: Gateway, stream: ClientStream) -> None:
        self.gw = gateway
        self.stream = stream
        self.peer = stream.peer
        self.rules = gateway.rules_for(self.peer)
        self._loop = asyncio.get_running_loop()
        self.gone = False  # the client closed (or half-closed) its connection
        self._invocation: asyncio.Task[Any] | None = None  # cancelled if the client goes
        self._task: asyncio.Task[Any] | None = None  # the task running `serve`

    @property
    def busy(self) -> bool:
        """Between a request's head and the end of its response."""
        return self.rules.busy

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()  # the connection's one task, for _watching
        try:
            while True:
                action = self.rules.next_action(loop.time())
                if isinstance(action, Send):
                    await self._write(action.data)
                elif isinstance(action, Read):
                    await self._read(action.deadline)
                elif isinstance(action, Invoke | Enqueue):
                    share = action.share
                    with share:  # given back on every way out, even before the work starts
                        if isinstance(action, Invoke):
                            work = self._invoke(action.invocation, share)
                        else:
                            work = self._enqueue(action.function, action.body,
                                                 action.request_id, share)
                        del action  # from here the work holds the only reference to the body
                        await self._watching(work)
                elif isinstance(action, Linger):
                    await self._linger(action.seconds)
                else:
                    assert isinstance(action, Close)
                    return
        except (Drop, OSError):
            pass  # the client went away or the response could not be completed
        finally:
            self.rules.finish(loop.time())

    async def _read(self, deadline: float) -> None:
        try:
            data = await self.stream.read(deadline)
        except ReadTimeout:
            self.rules.timed_out(self._loop.time())
            return
        self.rules.receive(data, self._loop.time())

    async def _linger(self, seconds: float) -> None:
        """Half-closes and discards what the client still sends, so it reads the answer
        instead of a reset caused by its unread upload."""
        with contextlib.suppress(Exception):
            self.stream.write_eof()
            deadline = self._loop.time() + seconds
            while await self.stream.read(deadline):
                pass  # ReadTimeout ends it, as does the client's EOF

    def client_gone(self) -> None:
        self.gone = True
        if self._invocation is not None:
            self._invocation.cancel()

    async def _watching(self, work_coro: Coroutine[Any, Any, int]) -> int:
        """Runs the invocation in this task but cancels it when the client hangs up,
        so a departed client stops holding an instance."""
        if self.gone:
            work_coro.close()
            raise Drop("client went away")
        task = self._task  # serve's, which awaits this
        assert task is not None
        self._invocation = task
        try:
            return await work_coro
        except asyncio.CancelledError:
            if self.gone and task.uncancel() == 0:
                raise Drop("client went away") from None
            raise
        finally:
            self._invocation = None

    async def _enqueue(self, function: str, body: bytes, request_id: str, share: Hold) -> int:
        """`Lambda-Invocation-Type: Event`: the event is stored, then 202 with its id."""
        assert self.gw.enqueue is not None
        try:
            invocation_id = await self.gw.enqueue(function, body)
        except errors.LambdaError as exc:
            return await self._respond(error_response(exc, request_id))
        finally:
            del body
            share.release()
        payload = json.dumps({"invocationId": invocation_id, "status": "queued"}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"lambda-request-id", invocation_id.encode())]
        return await self._respond((202, headers, payload))

    async def _invoke(self, invocation: InvocationRequest, share: Hold) -> int:
        request_id, version = invocation.request_id, invocation.version
        try:
            response = await self.gw.invoker.invoke(invocation)  # observed by the invoker
        except Exception as exc:
            return await self._respond(error_response(exc, request_id), version=version)
        finally:
            # The instance has the body (or it never will): drop it, give its bytes back.
            del invocation
            share.release()
        try:
            return await self._relay(response, request_id)
        finally:
            await _dispose(response)

    async def _relay(self, response: InvocationResponse, request_id: str) -> int:
        status = response.status
        headers = response_headers(response.headers)
        headers += (
            (b"lambda-request-id", request_id.encode()),
            (b"lambda-version", str(response.version).encode()),
            (b"lambda-cold-start", response.start.encode()),
            (b"server-timing", _server_timing(
                (self._loop.time() - self.rules.started) * 1000, response)),
        )
        try:
            self.rules.answer.start_response(status, headers)
        except h11.LocalProtocolError as exc:
            log.warning("request %s: the instance sent an invalid response: %s", request_id, exc)
            failed = errors.InstanceFailed("the function returned an invalid HTTP response")
            return await self._respond(error_response(failed, request_id), version=response.version)
        try:
            content = response.content
            if content is not None:  # the whole body came with the head: one write for all
                self.rules.answer.send_body(content)
            else:
                async for chunk in response.body:
                    if self.rules.answer.send_body(chunk):
                        await self._flush()
            self.rules.answer.end_response()
            await self._flush()
        except (Drop, OSError):
            raise
        except h11.LocalProtocolError as exc:
            log.warning("request %s: body does not match its framing: %s", request_id, exc)
            raise Drop from exc
        except errors.LambdaError as exc:
            log.warning("request %s: the instance failed mid-response: %s", request_id, exc)
            raise Drop from exc
        except Exception as exc:
            log.exception("request %s: relaying the response failed", request_id)
            raise Drop from exc
        return status

    async def _respond(self, reply: Reply, *, version: int | None = None) -> int:
        """Sends a response the gateway makes itself, if the connection still allows one."""
        self.rules.answer.respond(reply, version=version)
        await self._flush()
        return reply[0]

    async def _flush(self) -> None:
        await self._write(self.rules.answer.data_to_send())

    async def _write(self, data: bytes) -> None:
        if data:
            await self.stream.write(data)  # a slow client slows the upstream body down


async def _dispose(response: InvocationResponse) -> None:
    """Closes the body (so its generator lets go of the upstream connection), then
    releases; the release is synchronous, so even a cancellation cannot skip it. A body
    read to its end is a finished generator (no frame): nothing to close or await."""
    try:
        body = response.body
        frame = getattr(body, "ag_frame", _NO_FRAME)
        if frame is not _NO_FRAME:
            if frame is not None:
                await cast("AsyncGenerator[bytes, None]", body).aclose()
        elif _is_async_generator(body):
            await cast("AsyncGenerator[bytes, None]", body).aclose()  # not Python's own kind
    except Exception:
        log.exception("closing a response body failed")
    finally:
        try:
            response.release()
        except Exception:
            log.exception("releasing an instance failed")


_NO_FRAME = object()
# Whether a type of body is an AsyncGenerator (the ABC's isinstance is a slow call, and was
# asked for every response): one entry per type of body there is (a handful).
_ASYNC_GENERATOR_TYPES: dict[type, bool] = {}


def _is_async_generator(body: object) -> bool:
    kind = type(body)
    known = _ASYNC_GENERATOR_TYPES.get(kind)
    if known is None:
        known = _ASYNC_GENERATOR_TYPES[kind] = isinstance(body, AsyncGenerator)
    return known


def _server_timing(total_ms: float, response: InvocationResponse) -> bytes:
    """`Server-Timing` as browsers' devtools show it: our share, the function's, and on a
    cold start its `init` (the whole start, as lambdad timed it) and, within it, `import`
    (the function's code loading, as its runtime timed it) and `hooks` (its before-snapshot
    hooks, run after the import: snapshot_restore_py): init minus import minus hooks is
    lambdad's share of a cold start (a cell taken, the code linked, POST /init's way).
    In cluster mode a start on a node that first fetched the version's artifact (or built
    its image) adds `fetch` (part of `init`)."""
    timing = _timing(total_ms, response)
    if response.fetch_ms and response.init_ms:
        timing += b", fetch;dur=%.2f" % min(response.fetch_ms, response.init_ms)
    return timing


def _timing(total_ms: float, response: InvocationResponse) -> bytes:
    function_ms, init_ms = response.function_ms, response.init_ms
    gateway_ms = max(0.0, total_ms - function_ms - init_ms)
    if not init_ms:
        return b"gateway;dur=%.2f, function;dur=%.2f" % (gateway_ms, function_ms)
    if response.import_ms:
        import_ms = min(response.import_ms, init_ms)
        timing = b"gateway;dur=%.2f, function;dur=%.2f, init;dur=%.2f, import;dur=%.2f" % (
            gateway_ms, function_ms, init_ms, import_ms)
        if response.hooks_ms:
            timing += b", hooks;dur=%.2f" % min(response.hooks_ms, init_ms - import_ms)
        return timing
    return b"gateway;dur=%.2f, function;dur=%.2f, init;dur=%.2f" % (
        gateway_ms, function_ms, init_ms)
