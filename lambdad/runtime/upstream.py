"""HTTP/1.1 client connections to one instance's Unix socket, spoken with h11.

A connection carries one request at a time; after a complete exchange it can be
reused (keep-alive). Any protocol or socket failure makes it unusable, and the
caller learns whether the instance may have seen the request.

Built on an asyncio Protocol rather than streams: bytes go straight from the
transport into h11, one wake-up per read, which matters on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import h11

from lambdad.runtime.invocation import Headers

if TYPE_CHECKING:
    from lambdad.runtime.folder import InstanceFolder

MAX_BUFFER = 1024 * 1024  # unread response bytes before reading from the instance pauses


class UpstreamError(Exception):
    """The exchange failed; `sent` says whether the request may have reached the instance."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _framed(method: bytes, headers: Headers, body: bytes) -> Headers:
    """The gateway hands over a complete body, so each request is Content-Length framed."""
    if body or method in (b"POST", b"PUT", b"PATCH"):
        return [*headers, (b"content-length", str(len(body)).encode())]
    return headers


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.transport: Any = None  # asyncio.Transport (uvloop's are not subclasses)
        self.closed: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        if len(self.h11.trailing_data[0]) > MAX_BUFFER and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.h11.receive_data(b"")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionResetError("instance closed the connection")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                if self.closed is not None or self.h11.their_state is h11.CLOSED:
                    raise UpstreamError("instance closed the connection", sent=True)
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("instance closed the connection", sent=True)
            return event  # type: ignore[return-value]


class UpstreamConnection:
    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self.broken = False

    @classmethod
    async def open(cls, folder: InstanceFolder) -> UpstreamConnection:
        """A new connection to the instance's socket, checked by `folder` (never by path:
        the folder is the function's to write). OSError when nothing listens; Refused
        when the folder holds something else than the function's own socket."""
        sock = await folder.connect()
        try:
            _, protocol = await asyncio.get_running_loop().create_unix_connection(
                _Protocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(protocol)

    @property
    def reusable(self) -> bool:
        conn = self._protocol.h11
        return (
            not self.broken
            and self._protocol.closed is None
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not self.stray
        )

    @property
    def stray(self) -> bool:
        """The instance sent bytes no request asked for (past its response's framing, or
        while the connection was idle): reused, they would be read as the answer to the
        next request, and every later answer would go to the caller after its own."""
        return bool(self._protocol.h11.trailing_data[0])

    @property
    def is_fresh(self) -> bool:
        """Open and never used: ready for its first request."""
        conn = self._protocol.h11
        return (not self.broken and self._protocol.closed is None
                and conn.our_state is h11.IDLE and conn.their_state is h11.IDLE)

    def recycle(self) -> bool:
        """Readies the connection for the next request; False if it cannot be reused."""
        if not self.reusable:
            return False
        self._protocol.h11.start_next_cycle()
        return True

    async def request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> tuple[int, Headers]:
        """Sends the whole request and returns the response status and headers."""
        protocol = self._protocol
        conn = protocol.h11
        sent = False
        try:
            if protocol.closed is not None or protocol.transport is None:
                raise UpstreamError("instance closed the connection", sent=False)
            payload = conn.send(h11.Request(
                method=method, target=target, headers=_framed(method, headers, body)
            )) or b""
            if body:
                payload += conn.send(h11.Data(data=body)) or b""
            payload += conn.send(h11.EndOfMessage()) or b""
            protocol.transport.write(payload)
            sent = True
            while True:
                event = await protocol.next_event()
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    return event.status_code, list(event.headers)
                raise UpstreamError(f"unexpected {type(event).__name__} from instance", sent=True)
        except UpstreamError as exc:
            self.broken = True
            raise UpstreamError(str(exc), sent=sent or exc.sent) from None
        except (OSError, h11.ProtocolError) as exc:
            self.broken = True
            raise UpstreamError(f"{type(exc).__name__}: {exc}", sent=sent) from None
        except BaseException:
            self.broken = True
            raise

    async def body(self) -> AsyncIterator[bytes]:
        """Yields the response body; leaves the connection reusable when it ends cleanly."""
        try:
            while True:
                event = await self._protocol.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return
                else:
                    raise UpstreamError(f"unexpected {type(event).__name__} in body", sent=True)
        except (OSError, h11.ProtocolError) as exc:
            self.broken = True
            raise UpstreamError(f"{type(exc).__name__}: {exc}", sent=True) from None
        except BaseException:
            self.broken = True
            raise

    def close(self) -> None:
        """Closes without waiting: the transport finishes closing on its own."""
        self.broken = True
        if self._protocol.transport is not None:
            self._protocol.transport.close()
