"""The gateway's I/O: one task and one h11.Connection per client connection.

Routing, header rules and error shapes live in the pure modules next to this
one; this module moves bytes, enforces limits and timeouts, and makes sure
every upstream response is released exactly once, whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import logging
import socket
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

import h11

from lambdad import errors
from lambdad.fds import Throttle
from lambdad.gateway.budget import BodyBudget, Hold
from lambdad.gateway.headers import forward_request_headers, response_headers
from lambdad.gateway.routing import route, subdomain
from lambdad.httpstatus import error_response, json_error
from lambdad.listener import Listener
from lambdad.runtime.invocation import (
    Headers,
    InvocationRequest,
    InvocationResponse,
    Invoker,
)

log = logging.getLogger("lambdad.gateway")

Reply = tuple[int, Headers, bytes]
# (function, pinned version or None, request headers) -> None when the request may go on,
# else the error to answer with; decided on the head alone (the function and version exist,
# auth = "key"), and may take credentials out of the headers it was given.
Admit = Callable[[str, "int | None", Headers], "errors.LambdaError | None"]
# (function, JSON payload) -> invocation id; for `Lambda-Invocation-Type: Event` requests
Enqueue = Callable[[str, bytes], Awaitable[str]]

_READ_SIZE = 64 * 1024
_LINGER = 2.0  # seconds spent discarding a rejected upload before closing on it
BODY_RETRY_AFTER = 2  # seconds: Retry-After when the body budget is spent

class _Drop(Exception):
    """The connection can carry no (further) response: close it without one."""


class _Timeout(Exception):
    """The client started a request and then was too slow to send the rest."""


class Gateway:
    """Accepts client connections and proxies each request to an Invoker."""

    def __init__(
        self,
        invoker: Invoker,
        *,
        domain: str = "localhost",
        max_body_bytes: int = 6 * 1024 * 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        keepalive_timeout: float = 75.0,
        enqueue: Enqueue | None = None,
        admit: Admit | None = None,
        max_connections: int = 1024,
        max_header_bytes: int = 16 * 1024,
        max_buffered_body_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.bodies = BodyBudget(max_buffered_body_bytes)  # every body being read, together
        self.admit = admit
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.invoker = invoker
        self.enqueue = enqueue
        self.domain = domain
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.port = 0  # the bound port once started (useful with port 0)
        self.stopping = False
        self._listener: Listener | None = None
        self._clients: dict[asyncio.Task[Any], _Client] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._open = 0  # accepted connections not yet closed: what the cap counts
        self.refused_connections = 0  # closed at once because the cap was reached
        self._refusals = Throttle(1.0)  # one log line a second, whatever the flood

    @property
    def connections(self) -> int:
        return self._open

    async def start(self, host: str = "127.0.0.1", port: int = 8080, *,
                    serve: bool = True) -> None:
        """Binds (a busy port fails here); accepts now, or from `serve` if not `serve`."""
        self._listener = Listener(self._accepted, name="gateway", log=log)
        await self._listener.bind(host, port)
        self.port = self._listener.port
        log.info("gateway listening on %s:%d (domain %s)", host, self.port, self.domain)
        if serve:
            self._listener.serve()

    async def serve(self) -> None:
        assert self._listener is not None, "start binds first"
        self._listener.serve()

    async def stop(self, grace: float) -> None:
        """Bounded shutdown: idle connections close now, busy ones get `grace` seconds."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for connecting in list(self._connecting):
            connecting.cancel()
        if self._connecting:
            await asyncio.wait(set(self._connecting))
        await asyncio.sleep(0)  # connections just set up register (and see `stopping`)
        for task, client in list(self._clients.items()):
            if not client.busy:
                task.cancel()
        if self._clients:
            _, late = await asyncio.wait(set(self._clients), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("cancelled %d request(s) still running after %.1fs", len(late), grace)
                await asyncio.wait(late)

    def _accepted(self, conn: socket.socket) -> None:
        """A new connection, before it has a transport or a task: over the cap it costs
        nothing more than its close (clients retry, the daemon keeps its descriptors)."""
        if self.stopping:
            conn.close()
            return
        if self._open >= self.max_connections:
            self.refused_connections += 1
            conn.close()
            dropped = self._refusals.allow(asyncio.get_running_loop().time())
            if dropped is not None:
                log.warning("connection refused: %d open, the cap is %d (%d more refused "
                            "since the last such line)", self._open, self.max_connections,
                            dropped)
            return
        self._open += 1
        task = asyncio.get_running_loop().create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        closed = False

        def gone() -> None:  # once per connection, whichever way it ends
            nonlocal closed
            if not closed:
                closed = True
                self._open -= 1

        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _ClientProtocol(self, gone), conn)
        except (asyncio.CancelledError, Exception) as exc:
            gone()
            conn.close()
            if not isinstance(exc, asyncio.CancelledError | OSError):
                log.exception("setting up a connection failed")

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        protocol: _ClientProtocol,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = _Client(self, reader, writer)
        protocol.on_gone = client.client_gone
        self._clients[task] = client
        try:
            if not self.stopping:
                await client.serve()
        except asyncio.CancelledError:
            pass  # stop() ended this connection; nobody awaits this task's result
        except Exception:
            log.exception("connection from %s failed", client.peer)
        finally:
            del self._clients[task]
            writer.close()


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that reports the client hanging up (or half-closing) at once.

    That lets an invocation be cancelled when its client leaves without a second
    task per request watching the socket. `closed` gives the connection's place
    under the cap back when the transport is gone.
    """

    def __init__(self, gateway: Gateway, closed: Callable[[], None]) -> None:
        self.on_gone: Callable[[], None] | None = None
        self._release_slot = closed
        super().__init__(
            asyncio.StreamReader(limit=_READ_SIZE),
            functools.partial(gateway._accept, protocol=self),
        )

    def eof_received(self) -> bool:
        keep_open = bool(super().eof_received())
        if self.on_gone is not None:
            self.on_gone()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release_slot()
        if self.on_gone is not None:
            self.on_gone()


class _Client:
    """One client connection: a keep-alive loop of request/response cycles."""

    def __init__(
        self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gw = gateway
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=gateway.max_header_bytes)
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.busy = False  # between a request's head and the end of its response
        self.method = b""
        self.started = 0.0  # loop time the current request's head arrived
        self.gone = False  # the client closed (or half-closed) its connection
        self._out = bytearray()  # framed bytes not yet written
        self._invocation: asyncio.Task[Any] | None = None  # cancelled if the client goes

    async def serve(self) -> None:
        first = True
        try:
            while True:
                self.method = b""  # no request yet: error replies carry a body
                try:
                    request = await self._read_head(first)
                except h11.RemoteProtocolError as exc:
                    log.debug("%s: malformed request head: %s", self.peer, exc)
                    await self._reject(_malformed(exc, None))
                    return
                except _Timeout:
                    log.debug("%s: request head not received in time", self.peer)
                    await self._respond(_too_slow(None), close=True)
                    return
                if request is None:
                    return
                first = False
                self.busy = True
                await self._exchange(request)
                self.busy = False
                if self.gw.stopping or not (
                    self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                ):
                    return
                self.conn.start_next_cycle()
        except (_Drop, OSError):
            pass  # the client went away or the response could not be completed

    async def _recv(self, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            data = await self.reader.read(_READ_SIZE)
        self.conn.receive_data(data)
        return data

    async def _read_head(self, first: bool) -> h11.Request | None:
        """None means close quietly: the client left, or stayed idle too long."""
        loop = asyncio.get_running_loop()
        started = bool(self.conn.trailing_data[0])
        idle = self.gw.header_timeout if first or started else self.gw.keepalive_timeout
        deadline = loop.time() + idle
        while True:
            event = self.conn.next_event()
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed
            try:
                data = await self._recv(deadline)
            except TimeoutError:
                if started:
                    raise _Timeout from None
                return None
            if data and not started and not first:
                deadline = loop.time() + self.gw.header_timeout
            started = started or bool(data)

    async def _read_body(self, share: Hold) -> bytes:
        """The whole body within one deadline (`body_timeout`), whatever the pace: a
        client trickling a byte now and then cannot hold the connection for longer.
        Every byte is covered by `share` before it is kept (Overloaded when the
        daemon-wide budget is spent: a chunked body declares no size up front); a body
        that is not read to its end gives its share back at once, before any answer."""
        try:
            return await self._read_body_within(share)
        except BaseException:
            share.release()
            raise

    async def _read_body_within(self, share: Hold) -> bytes:
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gw.body_timeout
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    await self._recv(read_deadline(loop.time(), deadline,
                                                   self.gw.header_timeout))
                except TimeoutError:
                    raise _Timeout from None
            elif isinstance(event, h11.Data):
                if len(body) + len(event.data) > self.gw.max_body_bytes:
                    raise _too_large(self.gw.max_body_bytes)
                if not share.cover(len(body) + len(event.data)):
                    raise _overloaded()
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise _Drop("client closed the connection mid-request")

    async def _exchange(self, request: h11.Request) -> None:
        request_id = str(uuid.uuid4())
        self.method = request.method
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.started = started
        status: int | str = "dropped"
        try:
            status = await self._proxy(request, request_id)
        finally:
            log.debug(
                "%s %s %s -> %s in %.1f ms (request %s)",
                self.peer,
                request.method.decode("latin-1"),
                request.target[:200].decode("latin-1"),
                status,
                (loop.time() - started) * 1000,
                request_id,
            )

    async def _proxy(self, request: h11.Request, request_id: str) -> int:
        hosts = [value.decode("latin-1") for name, value in request.headers if name == b"host"]
        if len(hosts) > 1:
            return await self._reject(
                error_response(errors.InvalidArgument("more than one Host header"), request_id)
            )
        # h11 bounds only a head that arrives in pieces; one that arrives whole is checked here.
        head_size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head_size > self.gw.max_header_bytes:
            return await self._reject(json_error(
                431, "request_header_fields_too_large",
                f"the request head is larger than {self.gw.max_header_bytes} bytes", request_id))
        framing = {name for name, _ in request.headers
                   if name in (b"content-length", b"transfer-encoding")}
        if len(framing) == 2:  # RFC 9112 lets TE win; a proxy refusing it cannot be smuggled past
            return await self._reject(error_response(errors.InvalidArgument(
                "the request has both Content-Length and Transfer-Encoding"), request_id))
        host = hosts[0] if hosts else None
        target = route(host, self.gw.domain)
        version = target.version if target else None
        if request.method == b"CONNECT":
            msg = "CONNECT is not supported by the gateway"
            return await self._reject(json_error(405, "method_not_allowed", msg, request_id))
        lengths = [int(v) for n, v in request.headers if n == b"content-length"]
        if lengths and lengths[0] > self.gw.max_body_bytes:
            exc = _too_large(self.gw.max_body_bytes)
            return await self._reject(error_response(exc, request_id), version=version)
        # Everything the head decides is decided before a 100 Continue or a body byte.
        if target is None:
            return await self._refuse(error_response(self._no_route(host), request_id))
        is_event = self.gw.enqueue is not None and _wants_event(request.headers)
        if is_event and version is not None:
            return await self._refuse(error_response(errors.InvalidArgument(
                "asynchronous invocations run the active version: send them to "
                f"{target.function}.{self.gw.domain}, not to a pinned version"), request_id))
        refused = self._admit(target.function, version, list(request.headers))
        if refused is not None:
            return await self._refuse(error_response(refused, request_id), version=version)
        with self.gw.bodies.hold() as share:  # given back on every way out of here
            if lengths and not share.cover(lengths[0]):
                return await self._refuse(error_response(_overloaded(), request_id),
                                          version=version)
            return await self._forward(request, request_id, target.function, version,
                                       is_event, share)

    async def _forward(self, request: h11.Request, request_id: str, function: str,
                       version: int | None, is_event: bool, share: Hold) -> int:
        """Reads the body within `share`, admits again and hands the body over; the
        share is given back as soon as the body is stored (events) or the instance has
        answered it, and no reference to the body is kept past that point."""
        try:
            body = await self._read_body(share)
        except (errors.PayloadTooLarge, errors.Overloaded) as exc:
            return await self._reject(error_response(exc, request_id), version=version)
        except h11.RemoteProtocolError as exc:
            return await self._reject(_malformed(exc, request_id))
        except _Timeout:
            return await self._respond(_too_slow(request_id), close=True)
        headers = list(request.headers)
        # Again, with no await before the invocation picks its version: a deploy during
        # the upload may have changed which version serves an unpinned request.
        refused = self._admit(function, version, headers)
        if refused is not None:
            return await self._respond(error_response(refused, request_id), version=version)
        if is_event:
            enqueue = self._enqueue(function, body, request_id, share)
            del body
            return await enqueue
        work = self._invoke(InvocationRequest(
            function=function,
            method=request.method,
            target=request.target,
            headers=forward_request_headers(headers, self.peer),
            body=body,
            invocation_type="http",
            request_id=request_id,
            version=version,
            received_at=self.started,
        ), share)
        del body  # from here the invocation holds the only reference
        return await self._watching(work)

    def _admit(self, function: str, version: int | None,
               headers: Headers) -> errors.LambdaError | None:
        return None if self.gw.admit is None else self.gw.admit(function, version, headers)

    async def _refuse(self, reply: Reply, *, version: int | None = None) -> int:
        """Answers a request refused on its head, with no 100 Continue and without reading
        its body: the connection is kept only when there is no body to skip."""
        try:
            empty = isinstance(self.conn.next_event(), h11.EndOfMessage)
        except h11.RemoteProtocolError:
            empty = False
        if empty:
            return await self._respond(reply, version=version)
        return await self._reject(reply, version=version)

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

    def _no_route(self, host: str | None) -> errors.NotFound:
        name = subdomain(host, self.gw.domain)
        if name is not None:
            return errors.NotFound(f"no function named '{name}'")
        if host:
            return errors.NotFound(f"no function at host '{host}'")
        return errors.NotFound("the request has no Host header naming a function")

    def client_gone(self) -> None:
        self.gone = True
        if self._invocation is not None:
            self._invocation.cancel()

    async def _watching(self, work_coro: Coroutine[Any, Any, int]) -> int:
        """Runs the invocation in this task but cancels it when the client hangs up,
        so a departed client stops holding an instance."""
        if self.gone:
            work_coro.close()
            raise _Drop("client went away")
        task = asyncio.current_task()
        assert task is not None
        self._invocation = task
        try:
            return await work_coro
        except asyncio.CancelledError:
            if self.gone and task.uncancel() == 0:
                raise _Drop("client went away") from None
            raise
        finally:
            self._invocation = None

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
        headers.append((b"lambda-request-id", request_id.encode()))
        headers.append((b"lambda-version", str(response.version).encode()))
        headers.append((b"lambda-cold-start", response.start.encode()))
        headers.append((b"server-timing", _server_timing(
            (asyncio.get_running_loop().time() - self.started) * 1000, response)))
        if self.gw.stopping:
            headers.append((b"connection", b"close"))
        try:
            if not 200 <= status <= 599:
                raise h11.LocalProtocolError(f"status {status} cannot be relayed")
            head = h11.Response(status_code=status, headers=headers, reason=_reason(status))
        except h11.LocalProtocolError as exc:
            log.warning("request %s: the instance sent an invalid response: %s", request_id, exc)
            failed = errors.InstanceFailed("the function returned an invalid HTTP response")
            return await self._respond(error_response(failed, request_id), version=response.version)
        self._queue(head)
        bodiless = self.method == b"HEAD" or status in (204, 304)
        try:
            async for chunk in response.body:
                if chunk and not bodiless:
                    self._queue(h11.Data(data=chunk))
                    await self._flush()
            self._queue(h11.EndOfMessage())
            await self._flush()
        except (_Drop, OSError):
            raise
        except h11.LocalProtocolError as exc:
            log.warning("request %s: body does not match its framing: %s", request_id, exc)
            raise _Drop from exc
        except errors.LambdaError as exc:
            log.warning("request %s: the instance failed mid-response: %s", request_id, exc)
            raise _Drop from exc
        except Exception as exc:
            log.exception("request %s: relaying the response failed", request_id)
            raise _Drop from exc
        return status

    async def _respond(
        self, reply: Reply, *, version: int | None = None, close: bool = False
    ) -> int:
        """Sends a response the gateway makes itself, if the connection still allows one."""
        status, headers, body = reply
        if version is not None:
            headers = [*headers, (b"lambda-version", str(version).encode())]
        if close or self.gw.stopping:
            headers = [*headers, (b"connection", b"close")]
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise _Drop("a response was already started")
        self._queue(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        if self.method != b"HEAD":
            self._queue(h11.Data(data=body))
        self._queue(h11.EndOfMessage())
        await self._flush()
        return status

    async def _reject(self, reply: Reply, *, version: int | None = None) -> int:
        """Answers without reading the request, then closes; lingering first so the
        client reads the answer instead of a reset caused by its unread upload."""
        status = await self._respond(reply, version=version, close=True)
        with contextlib.suppress(Exception):
            self.writer.write_eof()
            async with asyncio.timeout(_LINGER):
                while await self.reader.read(_READ_SIZE):
                    pass
        return status

    async def _send(self, event: h11.Event) -> None:
        self._queue(event)
        await self._flush()

    def _queue(self, event: h11.Event) -> None:
        """Frames an event without writing it: a response's head, body and end go out in
        one send when they are ready together (each send wakes the client up)."""
        data = self.conn.send(event)
        if data:
            self._out += data

    async def _flush(self) -> None:
        if self._out:
            self.writer.write(bytes(self._out))
            self._out.clear()
            await self.writer.drain()  # a slow client slows the upstream body down


async def _dispose(response: InvocationResponse) -> None:
    """Closes the body (so its generator lets go of the upstream connection), then
    releases; the release is synchronous, so even a cancellation cannot skip it."""
    try:
        body = response.body
        if isinstance(body, AsyncGenerator):
            await body.aclose()
    except Exception:
        log.exception("closing a response body failed")
    finally:
        try:
            response.release()
        except Exception:
            log.exception("releasing an instance failed")


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def read_deadline(now: float, body_deadline: float, idle: float) -> float:
    """When the next body read gives up: `idle` seconds of silence, but never past the
    deadline of the whole body (a fresh timeout per read let a trickle last forever)."""
    return min(now + idle, body_deadline)


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"the request body is larger than the {limit} byte limit")


def _overloaded() -> errors.Overloaded:
    return errors.Overloaded(
        "the gateway is holding as many request bodies as it may (max_buffered_bodies); "
        "try again shortly", retry_after=BODY_RETRY_AFTER)


def _too_slow(request_id: str | None) -> Reply:
    return json_error(408, "request_timeout", "the request was not received in time", request_id)


def _malformed(exc: h11.RemoteProtocolError, request_id: str | None) -> Reply:
    status = exc.error_status_hint
    code = "bad_request" if status == 400 else http.HTTPStatus(status).phrase.lower()
    message = f"malformed HTTP request: {exc}"
    return json_error(status, code.replace(" ", "_"), message, request_id)


def _server_timing(total_ms: float, response: InvocationResponse) -> bytes:
    """`Server-Timing` as browsers' devtools show it: our share, the function's, its init."""
    function_ms = response.function_ms
    parts = [f"gateway;dur={max(0.0, total_ms - function_ms - response.init_ms):.2f}",
             f"function;dur={function_ms:.2f}"]
    if response.init_ms:
        parts.append(f"init;dur={response.init_ms:.2f}")
    return ", ".join(parts).encode()


def _wants_event(headers: object) -> bool:
    """The one Lambda-* header accepted from outside: asynchronous invocation."""
    return any(name == b"lambda-invocation-type" and value.strip().lower() == b"event"
               for name, value in headers)  # type: ignore[attr-defined]
