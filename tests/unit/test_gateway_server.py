"""Drives a real Gateway on 127.0.0.1 (port 0) with raw sockets and http.client."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from lambdad import errors
from lambdad.gateway import Gateway
from lambdad.gateway.server import read_deadline
from lambdad.runtime.invocation import Headers, InvocationRequest, InvocationResponse

Behaviour = Callable[[InvocationRequest], Awaitable[InvocationResponse]]


class FakeInvoker:
    """Canned functions; records every request and every release."""

    def __init__(self) -> None:
        self.requests: list[InvocationRequest] = []
        self.handed_out: list[str] = []  # request ids that got a response
        self.releases: Counter[str] = Counter()
        self.closed_bodies: list[str] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()  # what "stuck" and "sleepy" functions wait for
        self.functions: dict[str, Behaviour | Exception] = {
            "echo": self._echo,
            "stream": self._stream,
            "nocontent": self._nocontent,
            "stuck": self._stuck,
            "sleepy": self._sleepy,
            "brokenbody": self._broken_body,
            "badheader": self._bad_header,
            "whole": self._whole,
            "boom": errors.InstanceFailed("the instance died"),
            "late": errors.FunctionTimeout("no answer within 3 s"),
            "busy": errors.Throttled("too many requests"),
            "crash": RuntimeError("secret internal detail"),
        }

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        self.requests.append(request)
        self.started.set()
        behaviour = self.functions.get(request.function)
        if behaviour is None:
            raise errors.NotFound(f"no function named '{request.function}'")
        if isinstance(behaviour, Exception):
            raise behaviour
        return await behaviour(request)

    def _response(
        self,
        request: InvocationRequest,
        status: int,
        headers: Headers,
        body: AsyncIterator[bytes],
    ) -> InvocationResponse:
        rid = request.request_id

        def release() -> None:
            self.releases[rid] += 1

        self.handed_out.append(rid)
        return InvocationResponse(status, headers, 7, False, body, release)

    async def _chunks(self, request: InvocationRequest, *chunks: bytes) -> AsyncIterator[bytes]:
        try:
            for chunk in chunks:
                yield chunk
        finally:
            self.closed_bodies.append(request.request_id)

    async def _echo(self, request: InvocationRequest) -> InvocationResponse:
        body = request.body or b"hello"
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"x-internal"),
            (b"x-internal", b"secret"),
            (b"keep-alive", b"timeout=5"),
            (b"x-fn", b"echo"),
        ]
        return self._response(request, 200, headers, self._chunks(request, body))

    async def _stream(self, request: InvocationRequest) -> InvocationResponse:
        body = self._chunks(request, b"a", b"", b"bb", b"ccc")
        return self._response(request, 200, [(b"content-type", b"text/plain")], body)

    async def _nocontent(self, request: InvocationRequest) -> InvocationResponse:
        return self._response(request, 204, [], self._chunks(request))

    async def _stuck(self, request: InvocationRequest) -> InvocationResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await self.gate.wait()
                yield b"second"
            finally:
                self.closed_bodies.append(request.request_id)

        return self._response(request, 200, [], body())

    async def _sleepy(self, request: InvocationRequest) -> InvocationResponse:
        await asyncio.sleep(0.2)
        return await self._echo(request)

    async def _broken_body(self, request: InvocationRequest) -> InvocationResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise errors.InstanceFailed("the instance died mid-body")

        return self._response(request, 200, [], body())

    async def _bad_header(self, request: InvocationRequest) -> InvocationResponse:
        headers = [(b"x-bad", b"line\r\nbreak")]
        return self._response(request, 200, headers, self._chunks(request, b"x"))

    async def _whole(self, request: InvocationRequest) -> InvocationResponse:
        """A body that came with the head, as the hop hands it over (`content`); its
        iterator must not be needed."""

        async def untouched() -> AsyncIterator[bytes]:
            raise AssertionError("the relay iterated a body it had whole")
            yield b""  # pragma: no cover

        response = self._response(request, 200, [(b"content-length", b"5")], untouched())
        response.content = b"whole"
        return response


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    rest: bytes = b""
    raw_head: bytes = field(default=b"", repr=False)

    def get(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse(data: bytes, *, head: bool = False) -> Reply:
    """A tiny, strict-enough HTTP/1.x response parser for assertions."""
    raw_head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"incomplete response: {data!r}"
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [
        (n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])
    ]
    reply = Reply(status, headers, b"", b"", raw_head)
    if head or status in (204, 304) or 100 <= status < 200:
        reply.rest = rest
    elif reply.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
        reply.body, reply.rest = body, rest
    elif reply.get("content-length") is not None:
        n = int(reply.get("content-length") or 0)
        reply.body, reply.rest = rest[:n], rest[n:]
    else:
        reply.body = rest
    return reply


def run(test: Callable[[Gateway, FakeInvoker], Awaitable[None]], **options: Any) -> FakeInvoker:
    """Runs `test` against a fresh gateway and checks every response was released once."""

    async def main() -> FakeInvoker:
        invoker = FakeInvoker()
        gateway = Gateway(invoker, **options)
        await gateway.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(test(gateway, invoker), 10)
        finally:
            await gateway.stop(1.0)
        # Every way a request ends gives its body's share of the budget back.
        assert gateway.bodies.used == 0, gateway.bodies.used
        assert all(invoker.releases[rid] == 1 for rid in invoker.handed_out), invoker.releases
        assert sum(invoker.releases.values()) == len(invoker.handed_out)
        return invoker

    return asyncio.run(main())


async def raw(port: int, data: bytes) -> bytes:
    """Sends bytes and reads until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def request_bytes(
    host: str, method: str = "GET", target: str = "/", *, body: bytes = b"", **headers: str
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def fetch(
    port: int,
    host: str,
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request through http.client, in a thread so the gateway's loop keeps running."""

    def blocking() -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            got = [(n.lower(), v) for n, v in resp.getheaders()]
            return Reply(resp.status, got, resp.read())
        finally:
            conn.close()

    return await asyncio.to_thread(blocking)


def host(gw: Gateway, name: str) -> str:
    return f"{name}.localhost:{gw.port}"


# --- routing -------------------------------------------------------------------------------


def test_routes_by_host_and_forwards_the_request() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = await fetch(gw.port, host(gw, "echo"), "POST", "/p/a?q=1&r", body=b"ping")
        assert reply.status == 200
        assert reply.body == b"ping"
        assert reply.get("x-fn") == "echo"
        assert reply.get("lambda-version") == "7"
        [req] = inv.requests
        assert req.function == "echo"
        assert req.version is None
        assert (req.method, req.target, req.body) == (b"POST", b"/p/a?q=1&r", b"ping")
        assert req.invocation_type == "http"
        assert uuid.UUID(req.request_id).version == 4
        assert reply.get("lambda-request-id") == req.request_id

    run(test)


def test_pinned_version_and_uppercase_host() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = await fetch(gw.port, f"V3.ECHO.localhost.:{gw.port}")
        assert reply.status == 200
        assert (inv.requests[0].function, inv.requests[0].version) == ("echo", 3)

    run(test)


def test_configured_domain() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        assert (await fetch(gw.port, f"echo.fn.test:{gw.port}")).status == 200
        assert (await fetch(gw.port, host(gw, "echo"))).status == 404

    run(test, domain="fn.test")


def test_unknown_host_is_404_without_invoking() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        for bad in ("example.com", f"a.b.localhost:{gw.port}", f"127.0.0.1:{gw.port}", "[::1]"):
            reply = await fetch(gw.port, bad)
            assert reply.status == 404, bad
            assert reply.json()["error"] == "not_found"
            assert reply.get("content-type") == "application/json"
            assert reply.get("lambda-request-id")
        assert inv.requests == []
        reply = await fetch(gw.port, f"BAD_name.localhost:{gw.port}")
        assert reply.json()["message"] == "no function named 'bad_name'"

    run(test)


def test_unknown_function_from_invoker_is_404() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = await fetch(gw.port, host(gw, "missing"))
        assert reply.status == 404
        assert reply.json() == {"error": "not_found", "message": "no function named 'missing'"}
        assert reply.get("lambda-request-id") == inv.requests[0].request_id

    run(test)


def test_request_without_host_is_404() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(await raw(gw.port, b"GET / HTTP/1.0\r\n\r\n"))
        assert reply.status == 404
        assert inv.requests == []

    run(test)


# --- headers -------------------------------------------------------------------------------


def test_headers_forwarded_and_stripped() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        headers = {
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "hop",
            "Keep-Alive": "timeout=5",
            "Lambda-Request-Id": "forged",
            "Lambda-Invocation-Type": "event",
            "Lambda-Whatever": "x",
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "Proxy-Authorization": "Basic eDp5",
            "Accept": "text/plain",
        }
        reply = await fetch(gw.port, host(gw, "echo"), headers=headers)
        assert reply.status == 200
        sent = {n: v for n, v in inv.requests[0].headers}
        assert sent[b"host"] == host(gw, "echo").encode()
        assert sent[b"accept"] == b"text/plain"
        assert sent[b"x-forwarded-for"] == b"203.0.113.7, 127.0.0.1"
        assert sent[b"x-forwarded-proto"] == b"http"
        assert sent[b"x-forwarded-host"] == host(gw, "echo").encode()
        for gone in (b"connection", b"x-secret", b"keep-alive", b"proxy-authorization"):
            assert gone not in sent
        assert not [n for n in sent if n.startswith(b"lambda-")]
        # and the instance's hop-by-hop headers never reach the client
        assert reply.get("x-internal") is None
        assert reply.get("keep-alive") is None
        assert reply.get("content-length") == "5"

    run(test)


# --- request bodies ------------------------------------------------------------------------


def test_chunked_request_body_is_reassembled() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo"), "POST", Transfer_Encoding="chunked")
        data += b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
        reply = parse(await raw(gw.port, data))
        assert reply.status == 200
        assert reply.body == b"hello world"
        assert inv.requests[0].body == b"hello world"
        names = [n for n, _ in inv.requests[0].headers]
        assert b"transfer-encoding" not in names

    run(test)


def test_content_length_over_limit_is_413_before_reading() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo"), "POST", Content_Length="101")
        reply = parse(await raw(gw.port, data))  # the body is never sent
        assert reply.status == 413
        assert reply.json()["error"] == "payload_too_large"
        assert reply.get("connection") == "close"
        assert reply.get("lambda-request-id")
        assert inv.requests == []

    run(test, max_body_bytes=100)


def test_big_upload_still_gets_its_413() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(
            await raw(gw.port, request_bytes(host(gw, "echo"), "PUT", body=b"x" * 300_000))
        )
        assert reply.status == 413

    run(test, max_body_bytes=1000)


def test_chunked_body_over_limit_is_413() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo"), "POST", Transfer_Encoding="chunked")
        data += b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"
        reply = parse(await raw(gw.port, data))
        assert reply.status == 413
        assert inv.requests == []

    run(test, max_body_bytes=100)


def test_body_at_the_limit_passes() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(await raw(gw.port, request_bytes(host(gw, "echo"), "POST", body=b"z" * 100)))
        assert reply.status == 200
        assert reply.body == b"z" * 100

    run(test, max_body_bytes=100)


def test_expect_100_continue() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            head = request_bytes(
                host(gw, "echo"), "POST", Content_Length="4", Expect="100-continue"
            )
            writer.write(head)
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            assert inv.requests == []
            writer.write(b"data")
            reply = parse(await asyncio.wait_for(reader.read(), 5))
            assert (reply.status, reply.body) == (200, b"data")
            assert b"expect" not in [n for n, _ in inv.requests[0].headers]
        finally:
            writer.close()

    run(test)


def test_expect_100_continue_to_unknown_host_gets_no_100() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes("nowhere.test", "POST", Content_Length="4", Expect="100-continue")
        out = await raw(gw.port, data)
        assert out.startswith(b"HTTP/1.1 404 ")

    run(test)


def _admit_with_key(function: str, version: int | None,
                    headers: Headers) -> Headers | errors.LambdaError:
    """A stand-in for the daemon's rule: 'private' needs `Authorization: Bearer k`,
    'echo' pinned to version 9 does not exist."""
    if version == 9:
        return errors.NotFound(f"function {function!r} has no version 9")
    if function == "private" and (b"authorization", b"Bearer k") not in headers:
        return errors.Unauthenticated("function 'private' needs an API key")
    return [(n, v) for n, v in headers if n != b"authorization"]


def test_expect_100_continue_is_answered_only_after_admission() -> None:
    """No 100 Continue, and no body read, for a request its head already refuses."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        inv.functions["private"] = inv.functions["echo"]
        refused = [
            (request_bytes(host(gw, "private"), "POST", Content_Length="4",
                           Expect="100-continue"), 401),
            (request_bytes(f"v9.{host(gw, 'echo')}", "POST", Content_Length="4",
                           Expect="100-continue"), 404),
            (request_bytes("nowhere.test", "POST", Content_Length="4",
                           Expect="100-continue"), 404),
            (request_bytes(host(gw, "echo"), "POST", Content_Length="101",
                           Expect="100-continue"), 413),
        ]
        for head, status in refused:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(head)  # and never the body: the answer must not wait for it
                out = await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
            assert out.startswith(f"HTTP/1.1 {status} ".encode()), out
            assert b"HTTP/1.1 100 " not in out
            assert parse(out).get("connection") == "close"
        assert inv.requests == []
        # With the key: 100 Continue, then the function's answer, without the key.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(request_bytes(host(gw, "private"), "POST", Content_Length="4",
                                       Expect="100-continue", Authorization="Bearer k"))
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"data")
            reply = parse(await asyncio.wait_for(reader.read(), 5))
        finally:
            writer.close()
        assert (reply.status, reply.body) == (200, b"data")
        assert b"authorization" not in [n for n, _ in inv.requests[0].headers]

    run(test, admit=_admit_with_key, max_body_bytes=100)


def test_a_refused_request_without_a_body_keeps_its_connection() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        def blocking() -> list[int]:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
            statuses = []
            for name in ("private", "echo"):
                conn.request("GET", "/", headers={"Host": host(gw, name)})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
                sock = conn.sock
            assert sock is not None and conn.sock is sock  # one connection for both
            conn.close()
            return statuses

        assert await asyncio.to_thread(blocking) == [401, 200]

    run(test, admit=_admit_with_key)


def test_admission_is_asked_again_after_the_body() -> None:
    """A deploy during a slow upload can change the version that will serve it."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        answers: list[errors.LambdaError | None] = [
            None, errors.Unauthenticated("the new active version needs a key")]
        seen: list[Headers] = []

        def admit(function: str, version: int | None,
                  headers: Headers) -> Headers | errors.LambdaError:
            seen.append(list(headers))
            return answers.pop(0) or headers

        gw.admit = admit
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            whole = request_bytes(host(gw, "echo"), "POST", body=b"x")
            writer.write(whole[:-1])  # the head, then the body after a pause: an upload
            await writer.drain()
            while not seen:
                await asyncio.sleep(0.01)
            writer.write(whole[-1:])  # ... during which the deploy happened
            reply = parse(await asyncio.wait_for(reader.read(), 5))
        finally:
            writer.close()
        assert reply.status == 401 and inv.requests == []
        assert len(seen) == 2

    run(test)


def test_a_request_that_arrives_whole_is_admitted_once() -> None:
    """Head and body in one read: no await between the head's admission and the
    hand-over, so that answer stands (nothing it looks at can have changed)."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        seen: list[Headers] = []

        def admit(function: str, version: int | None,
                  headers: Headers) -> Headers | errors.LambdaError:
            seen.append(list(headers))
            return [(n, v) for n, v in headers if n != b"authorization"]

        gw.admit = admit
        whole = request_bytes(host(gw, "echo"), "POST", body=b"x", Authorization="Bearer k")
        reply = parse(await raw(gw.port, whole))
        assert reply.status == 200 and reply.body == b"x" and len(seen) == 1
        assert b"authorization" not in [name for name, _ in inv.requests[0].headers]

    run(test)


def test_an_event_for_a_pinned_version_is_refused() -> None:
    """Queued events run the active version, so a pinned one would run the wrong code."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        queued: list[str] = []

        async def enqueue(function: str, body: bytes) -> str:
            queued.append(function)
            return "id"

        gw.enqueue = enqueue
        event = {"Lambda-Invocation-Type": "Event"}
        pinned = await fetch(gw.port, f"v2.{host(gw, 'echo')}", "POST", body=b"{}",
                             headers=event)
        assert pinned.status == 400 and "active version" in pinned.json()["message"]
        assert (await fetch(gw.port, host(gw, "echo"), "POST", body=b"{}",
                            headers=event)).status == 202
        assert queued == ["echo"] and inv.requests == []

    run(test)


def test_an_event_past_the_queue_cap_is_429_with_retry_after() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        async def enqueue(function: str, body: bytes) -> str:
            raise errors.Throttled("the queue is full", retry_after=7)

        gw.enqueue = enqueue
        reply = await fetch(gw.port, host(gw, "echo"), "POST", body=b"{}",
                            headers={"Lambda-Invocation-Type": "Event"})
        assert reply.status == 429 and reply.json()["error"] == "throttled"
        assert reply.get("retry-after") == "7"

    run(test)


# --- malformed input and timeouts ----------------------------------------------------------


def test_garbage_is_400_and_closed() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"):
            reply = parse(await raw(gw.port, junk))
            assert reply.status == 400
            assert reply.json()["error"] == "bad_request"
            assert reply.get("connection") == "close"
        assert inv.requests == []

    run(test)


def test_content_length_with_transfer_encoding_is_refused() -> None:
    """The classic request-smuggling shape: never forwarded, whatever the body."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = (f"POST / HTTP/1.1\r\nHost: {host(gw, 'echo')}\r\nContent-Length: 5\r\n"
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode()
        reply = parse(await raw(gw.port, data))
        assert reply.status == 400
        assert "both Content-Length and Transfer-Encoding" in reply.json()["message"]
        assert inv.requests == []

    run(test)


def test_connections_over_the_cap_are_closed_and_the_gateway_keeps_serving() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        gw.max_connections = 2
        held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        writer.close()
        for _, held_writer in held:
            held_writer.close()
        await asyncio.sleep(0.05)
        reply = parse(await raw(gw.port, request_bytes(host(gw, "echo"))))
        assert reply.status == 200

    run(test)


def test_a_flood_over_the_connection_cap_logs_one_line_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each refused connection used to log a warning: a flood was a log flood too."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        gw.max_connections = 2
        held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        for _ in range(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert gw.refused_connections == 30
        for _, held_writer in held:
            held_writer.close()

    with caplog.at_level(logging.WARNING, logger="lambdad.gateway"):
        started = time.monotonic()
        run(test)
        seconds = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert 1 <= len(lines) <= 1 + seconds, lines
    assert "the cap is 2" in lines[0]


# --- the body budget -----------------------------------------------------------------------

KIB = 1024
BUDGET = {"max_body_bytes": 256 * KIB, "max_buffered_body_bytes": 1024 * KIB}  # room: 896 KiB


async def _stall(gw: Gateway, name: str, size: int) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
    """Sends a head and all but the last byte of its body, then stalls."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request_bytes(host(gw, name), "POST", Content_Length=str(size)).replace(
        b"Connection: close\r\n", b""))
    writer.write(b"x" * (size - 1))
    await writer.drain()
    return reader, writer


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


def test_stalled_large_bodies_cannot_pass_the_body_budget() -> None:
    """The attack: many connections each send a large body but its last byte. Only what
    fits the budget is buffered; the rest is answered 503 with Retry-After before a body
    byte is read, and an ordinary request still goes through meanwhile."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        size = 256 * KIB
        stalled = []
        for count in range(1, 4):
            stalled.append(await _stall(gw, "echo", size))
            await _until(lambda n=count: gw.bodies.used == n * size)  # type: ignore[misc]
        for _ in range(3):  # a fourth would pass 896 KiB
            reader, writer = await _stall(gw, "echo", size)
            out = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
            writer.close()
            reply = parse(out)
            assert reply.status == 503 and reply.json()["error"] == "unavailable"
            assert "max_buffered_bodies" in reply.json()["message"]
            assert reply.get("retry-after") == "2" and reply.get("connection") == "close"
            assert b"100 Continue" not in out
        assert gw.bodies.used == 3 * size and gw.bodies.refused == 3
        small = await fetch(gw.port, host(gw, "echo"), "POST", body=b'{"ok": true}')
        assert small.status == 200 and small.body == b'{"ok": true}'
        assert gw.bodies.peak <= gw.bodies.limit
        assert [r.body for r in inv.requests] == [b'{"ok": true}']  # no stalled body got in
        for _, writer in stalled:
            writer.close()
        await _until(lambda: gw.bodies.used == 0)  # a connection that ends gives it back

    run(test, **BUDGET)


def test_a_chunked_body_is_cut_with_503_when_the_budget_is_spent() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        held = await _stall(gw, "echo", 256 * KIB)
        await _until(lambda: gw.bodies.used == 256 * KIB)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        head = request_bytes(host(gw, "echo"), "POST", Transfer_Encoding="chunked")
        writer.write(head)
        chunk = b"%x\r\n%s\r\n" % (32 * KIB, b"y" * 32 * KIB)
        answer = asyncio.ensure_future(reader.read())
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not answer.done() and sent < 2048 * KIB:
                writer.write(chunk)
                await writer.drain()
                sent += 32 * KIB
                await asyncio.sleep(0)
        reply = parse(await asyncio.wait_for(answer, 5))
        writer.close()
        assert reply.status == 503 and reply.get("retry-after") == "2"
        # Cut where it would have passed the room left, not at the body limit (256 KiB).
        assert gw.bodies.peak <= 896 * KIB
        held[1].close()
        assert inv.requests == []

    run(test, max_body_bytes=4096 * KIB, max_buffered_body_bytes=1024 * KIB)


def test_the_share_comes_back_once_the_instance_has_the_body() -> None:
    """Handed over: a long streamed response does not keep its request's bytes counted."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(host(gw, "stuck"), "POST", body=b"z" * 200 * KIB))
        assert b"first" in await asyncio.wait_for(reader.readuntil(b"first"), 5)
        assert gw.bodies.used == 0 and gw.bodies.peak == 200 * KIB
        inv.gate.set()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()

    run(test, **BUDGET)


def test_every_way_a_body_ends_gives_its_share_back() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        queued: list[bytes] = []

        async def enqueue(function: str, body: bytes) -> str:
            assert gw.bodies.used == len(body)  # still counted while it is stored
            queued.append(body)
            return "id"

        gw.enqueue = enqueue
        assert (await fetch(gw.port, host(gw, "echo"), "POST", body=b"[1]" * 30 * KIB,
                            headers={"Lambda-Invocation-Type": "Event"})).status == 202
        assert gw.bodies.used == 0 and len(queued) == 1
        for name in ("boom", "missing", "crash"):  # the invoker fails
            assert (await fetch(gw.port, host(gw, name), "POST", body=b"q" * 70 * KIB)).status
            assert gw.bodies.used == 0
        # The client leaves half-way; then one that is too slow (408).
        reader, writer = await _stall(gw, "echo", 100 * KIB)
        await _until(lambda: gw.bodies.used == 100 * KIB)
        writer.close()
        await _until(lambda: gw.bodies.used == 0)
        reader, writer = await _stall(gw, "echo", 100 * KIB)
        assert parse(await asyncio.wait_for(reader.read(), 5)).status == 408
        writer.close()
        assert gw.bodies.used == 0
        # Too large once it arrives (chunked): 413, nothing kept.
        data = request_bytes(host(gw, "echo"), "POST", Transfer_Encoding="chunked")
        data += b"%x\r\n%s\r\n0\r\n\r\n" % (300 * KIB, b"w" * 300 * KIB)
        assert parse(await raw(gw.port, data)).status == 413
        assert gw.bodies.used == 0
        # Still reading when the gateway stops: run() checks it comes back then too.
        reader, writer = await _stall(gw, "echo", 100 * KIB)
        await _until(lambda: gw.bodies.used == 100 * KIB)

    run(test, body_timeout=0.5, **BUDGET)


def test_two_host_headers_is_400() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo")).replace(
            b"\r\n\r\n", b"\r\nHost: boom.localhost\r\n\r\n"
        )
        reply = parse(await raw(gw.port, data))
        assert reply.status == 400
        assert inv.requests == []

    run(test)


def test_an_oversized_header_block_is_431() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo"), X_Big="a" * 40_000)
        reply = parse(await raw(gw.port, data))
        assert reply.status == 431
        assert inv.requests == []

    run(test)


def test_slow_header_gets_408_and_idle_connection_just_closes() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        started = time.monotonic()
        out = await raw(gw.port, b"GET / HTTP/1.1\r\nHost: echo.localhost\r\n")
        assert parse(out).status == 408
        assert await raw(gw.port, b"") == b""
        assert time.monotonic() - started < 2

    run(test, header_timeout=0.2)


def test_the_body_read_deadline_is_the_earlier_of_silence_and_the_whole_body() -> None:
    assert read_deadline(100.0, 160.0, 10.0) == 110.0
    assert read_deadline(155.0, 160.0, 10.0) == 160.0  # a byte just in time buys no more
    assert read_deadline(170.0, 160.0, 10.0) == 160.0


def test_a_trickled_body_is_cut_at_the_body_deadline() -> None:
    """Slowloris on bodies: a byte just before each per-read timeout used to reset it
    forever; the whole body has one deadline, then 408 and the connection closes."""

    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        sent = 0
        try:
            writer.write(request_bytes(host(gw, "echo"), "POST", Content_Length="100"))
            answer = asyncio.ensure_future(reader.read())
            while not answer.done() and sent < 100:
                await asyncio.sleep(0.15)  # well inside the 0.5 s per-read timeout
                writer.write(b"x")
                sent += 1
            out = await asyncio.wait_for(answer, 5)
        finally:
            writer.close()
        reply = parse(out)
        assert reply.status == 408 and reply.json()["error"] == "request_timeout"
        assert reply.get("connection") == "close"
        assert sent < 100 and inv.requests == []

    run(test, header_timeout=0.5, body_timeout=1.0)


# --- responses -----------------------------------------------------------------------------


def test_streamed_response_is_chunked_for_http11_and_close_delimited_for_http10() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(await raw(gw.port, request_bytes(host(gw, "stream"))))
        assert reply.get("transfer-encoding") == "chunked"
        assert reply.body == b"abbccc"
        data = f"GET / HTTP/1.0\r\nHost: {host(gw, 'stream')}\r\n\r\n".encode()
        reply = parse(await raw(gw.port, data))
        assert reply.get("transfer-encoding") is None
        assert reply.get("content-length") is None
        assert reply.body == b"abbccc"

    run(test)


def test_head_has_no_body_and_upstream_body_is_drained() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(await raw(gw.port, request_bytes(host(gw, "echo"), "HEAD")), head=True)
        assert reply.status == 200
        assert reply.get("content-length") == "5"
        assert reply.rest == b""
        assert inv.closed_bodies == [inv.requests[0].request_id]

    run(test)


def test_204_has_no_body() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reply = parse(await raw(gw.port, request_bytes(host(gw, "nocontent"))))
        assert reply.status == 204
        assert reply.get("transfer-encoding") is None
        assert reply.rest == b""

    run(test)


def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        def blocking() -> list[bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
            bodies = []
            for name in ("echo", "stream"):
                conn.request("GET", "/", headers={"Host": host(gw, name)})
                bodies.append(conn.getresponse().read())
                if name == "echo":
                    sock = conn.sock
            assert conn.sock is sock and sock is not None
            conn.close()
            return bodies

        assert await asyncio.to_thread(blocking) == [b"hello", b"abbccc"]
        assert len(inv.requests) == 2

    run(test)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        first = request_bytes(host(gw, "echo"), "POST", body=b"one").replace(
            b"Connection: close", b"X: y"
        )
        second = request_bytes(host(gw, "echo"), "POST", body=b"two")
        out = await raw(gw.port, first + second)
        a = parse(out)
        b = parse(a.rest)
        assert (a.body, b.body) == (b"one", b"two")

    run(test)


def test_error_mapping() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        cases = [("boom", 502, "bad_gateway"), ("late", 504, "gateway_timeout")]
        cases += [("busy", 429, "throttled"), ("crash", 500, "internal")]
        cases += [("badheader", 502, "bad_gateway")]
        for name, status, code in cases:
            reply = await fetch(gw.port, host(gw, name))
            assert reply.status == status, name
            assert reply.get("content-type") == "application/json"
            body = reply.json()
            assert body["error"] == code
            assert body["message"]
            assert reply.get("lambda-request-id") == inv.requests[-1].request_id
        assert "secret" not in (await fetch(gw.port, host(gw, "crash"))).body.decode()
        assert (await fetch(gw.port, host(gw, "busy"))).get("retry-after") == "1"

    run(test)


def test_upstream_failure_mid_body_cuts_the_response() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        out = await raw(gw.port, request_bytes(host(gw, "brokenbody")))
        assert out.startswith(b"HTTP/1.1 200 ")
        assert b"partial" in out
        assert not out.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees an error

    run(test)


def test_release_once_when_client_disconnects_mid_stream() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(host(gw, "stuck")))
        await asyncio.wait_for(reader.readuntil(b"first"), 5)
        writer.close()
        rid = inv.requests[0].request_id
        for _ in range(200):
            if inv.releases[rid]:
                break
            await asyncio.sleep(0.01)
        assert inv.releases[rid] == 1
        assert inv.closed_bodies == [rid]

    run(test)


def test_stop_lets_an_in_flight_request_finish() -> None:
    async def main() -> None:
        inv = FakeInvoker()
        gw = Gateway(inv)
        await gw.start("127.0.0.1", 0)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        pending = asyncio.create_task(raw(gw.port, request_bytes(host(gw, "sleepy"))))
        await asyncio.wait_for(inv.started.wait(), 5)
        started = time.monotonic()
        await gw.stop(grace=5)
        assert time.monotonic() - started < 2
        reply = parse(await pending)
        assert (reply.status, reply.body) == (200, b"hello")
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle one just closed
        idle_writer.close()
        assert list(inv.releases.values()) == [1]
        try:
            await asyncio.open_connection("127.0.0.1", gw.port)
        except OSError:
            pass
        else:
            raise AssertionError("still accepting after stop")

    asyncio.run(main())


def test_stop_cancels_after_grace_and_still_releases() -> None:
    async def main() -> None:
        inv = FakeInvoker()
        gw = Gateway(inv)
        await gw.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(host(gw, "stuck")))
        await asyncio.wait_for(reader.readuntil(b"first"), 5)
        started = time.monotonic()
        await gw.stop(grace=0.1)
        assert time.monotonic() - started < 1
        assert list(inv.releases.values()) == [1]
        assert inv.closed_bodies == [inv.requests[0].request_id]
        writer.close()

    asyncio.run(main())


def test_garbage_after_a_head_request_still_gets_a_400_body() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        head = request_bytes(host(gw, "echo"), "HEAD").replace(b"Connection: close", b"X: y")
        out = await raw(gw.port, head + b"GARBAGE\r\n\r\n")
        first = parse(out, head=True)
        assert first.status == 200
        second = parse(first.rest)
        assert second.status == 400
        assert second.json()["error"] == "bad_request"

    run(test)


def test_connect_is_refused() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = f"CONNECT echo.localhost:443 HTTP/1.1\r\nHost: {host(gw, 'echo')}\r\n\r\n"
        reply = parse(await raw(gw.port, data.encode()))
        assert reply.status == 405
        assert inv.requests == []

    run(test)


def test_upgrade_is_not_forwarded_and_answered_normally() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        data = request_bytes(host(gw, "echo"), Upgrade="websocket")
        data = data.replace(b"Connection: close", b"Connection: Upgrade")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(data + request_bytes(host(gw, "stream")))
            out = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        first = parse(out)
        assert (first.status, first.body) == (200, b"hello")
        assert parse(first.rest).body == b"abbccc"
        names = [n for n, _ in inv.requests[0].headers]
        assert b"upgrade" not in names
        assert b"connection" not in names

    run(test)


def test_a_body_that_came_with_the_head_is_relayed_without_iterating_it() -> None:
    async def test(gw: Gateway, inv: FakeInvoker) -> None:
        got = await fetch(gw.port, host(gw, "whole"))
        assert (got.status, got.body) == (200, b"whole")
        head = await fetch(gw.port, host(gw, "whole"), "HEAD")
        assert head.status == 200 and head.body == b"" and head.get("content-length") == "5"
        assert all(count == 1 for count in inv.releases.values()) and len(inv.releases) == 2

    run(test)
