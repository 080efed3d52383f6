"""HTTP/1.1 client connections to one instance's Unix socket: the I/O edge of `hop.py`.

A connection carries one request at a time; after a complete exchange it can be
reused (keep-alive). Any protocol or socket failure makes it unusable, and the
caller learns whether the instance may have seen the request.

The connection is the asyncio Protocol itself: bytes go straight from the transport
into llhttp (`ResponseReader.feed`) in `data_received`, one wake-up per read and no
StreamReader. One timer per connection, not per request, replaces a timeout context per
read: it is armed at a request's deadline and, when it fires after that request ended,
re-armed at the deadline of the one under way (on a kept-alive connection each deadline is
later than the last, so a request normally arms nothing: it fires once per timeout, not
once per request).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from lambdad.runtime.hop import ResponseReader, encode_request
from lambdad.runtime.invocation import Headers

if TYPE_CHECKING:
    from lambdad.runtime.folder import InstanceFolder

MAX_BUFFER = 1024 * 1024  # unread response bytes before reading from the instance pauses


class UpstreamError(Exception):
    """The exchange failed; `sent` says whether the request may have reached the instance,
    `answered` whether the instance sent any byte of an answer (it surely saw the request:
    a retry would deliver it twice)."""

    def __init__(self, message: str, *, sent: bool, answered: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.answered = answered


class UpstreamConnection(asyncio.Protocol):
    """One connection to an instance, and the protocol its transport feeds."""

    def __init__(self) -> None:
        self.reader = ResponseReader()
        self.transport: Any = None  # asyncio.Transport (uvloop's are not subclasses)
        self.closed = False
        self.broken = False
        self._used = False  # a request was sent on it
        self._active = False  # a request is under way: bytes are its response
        self._answered = False  # bytes came for the request under way
        self._expired = False
        self._deadline: float | None = None  # of the request under way (loop time)
        self._timer: asyncio.TimerHandle | None = None  # at or before that deadline
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    @classmethod
    async def open(cls, folder: InstanceFolder) -> UpstreamConnection:
        """A new connection to the instance's socket, checked by `folder` (never by path:
        the folder is the function's to write). OSError when nothing listens; Refused
        when the folder holds something else than the function's own socket."""
        sock = await folder.connect()
        try:
            _, conn = await asyncio.get_running_loop().create_unix_connection(cls, sock=sock)
        except BaseException:
            sock.close()
            raise
        return conn

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if not self._active:
            reader.stray = True  # nothing was asked: never read it as a later answer
            return
        self._answered = True
        reader.feed(data)
        if reader.buffered > MAX_BUFFER and not self._paused:
            self.transport.pause_reading()
            self._paused = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        if self._active:
            self.reader.eof()
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        self.closed = True
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # armed for a request that has ended; none is under way
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:  # armed for an earlier request: the current one's now
            self._timer = loop.call_at(deadline, self._expire)
            return
        self._expired = True
        self._wake()

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    # The exchange

    @property
    def stray(self) -> bool:
        """The instance sent bytes no request asked for (past its response's framing, or
        while the connection was idle): reused, they would be read as the answer to the
        next request, and every later answer would go to the caller after its own."""
        return self.reader.stray

    @property
    def is_fresh(self) -> bool:
        """Open and never used: ready for its first request."""
        return not self.broken and not self.closed and not self._used and not self.stray

    @property
    def reusable(self) -> bool:
        return (not self.broken and not self.closed and not self._active
                and self.reader.reusable)

    def recycle(self) -> bool:
        """Ends the request (its timer too); False if the connection cannot be reused."""
        self._end()
        return self.reusable

    async def fetch(self, method: bytes, target: bytes, headers: Headers,
                    body: bytes) -> tuple[int, bytes]:
        """A whole exchange off the hot path (`POST /init`): status and whole body. No
        deadline of its own: the caller bounds it."""
        payload = encode_request(method, target, headers, b"", body, b"lambda")
        status, _ = await self.request(payload, head_only=method == b"HEAD", deadline=None)
        chunks = []
        while (chunk := await self.next_chunk()) is not None:
            chunks.append(chunk)
        return status, b"".join(chunks)

    async def request(self, payload: bytes, *, head_only: bool,
                      deadline: float | None) -> tuple[int, Headers]:
        """Sends the whole request (`hop.encode_request`) and returns the response status
        and headers; the body is then `reader.body` so far, all of it if `reader.complete`.
        TimeoutError at `deadline` (loop time), which stays armed for `next_chunk`."""
        if self.closed or self.broken or self.transport is None:
            self.broken = True
            raise UpstreamError("instance closed the connection", sent=False)
        reader = self.reader
        reader.start(head_only)
        self._used = self._active = True
        self._expired = self._answered = False
        loop = asyncio.get_running_loop()
        self._deadline = deadline
        if deadline is not None:
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._expire)
        try:
            self.transport.write(payload)
            while not reader.head_done:
                await self._wait(loop)
        except BaseException:
            self.broken = True
            self._end()
            raise
        if reader.complete:
            self._end()
        return reader.status, reader.headers

    async def next_chunk(self) -> bytes | None:
        """The next part of the body, None at its end (the connection is then reusable,
        if the exchange was clean)."""
        reader = self.reader
        try:
            while not reader.body:
                if reader.complete:
                    self._end()
                    return None
                if self._paused:
                    self._paused = False
                    self.transport.resume_reading()
                await self._wait(asyncio.get_running_loop())
        except BaseException:
            self.broken = True
            self._end()
            raise
        return reader.take_body()

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the transport or the timer says something; raises if it was bad news."""
        reader = self.reader
        if reader.error is None and not self.closed and not self._expired:
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if reader.error is not None:
            raise UpstreamError(reader.error, sent=True, answered=self._answered)
        if self._expired:
            raise TimeoutError
        if self.closed and not (reader.body or reader.complete):
            raise UpstreamError("instance closed the connection", sent=True,
                                answered=self._answered)

    def _end(self) -> None:
        self._active = False
        self._deadline = None  # the timer stays armed for the next request (or fires idle)
        if self._paused:  # the read that paused it may have completed the response
            self._paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        """Closes without waiting: the transport finishes closing on its own."""
        self.broken = True
        self._end()
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
