"""One client connection's socket as an asyncio Protocol: what `client.py` awaits.

It replaces a StreamReader/StreamWriter pair and an `asyncio.timeout_at` context per read,
which together were a tenth of the gateway's CPU per request. Bytes that arrive while the
connection's task waits go straight to it (no buffer, no copy); bytes that arrive while it
is busy are kept, up to `READ_SIZE` before reading pauses (the client is slowed down, as a
StreamReader's limit did). A read waits until a deadline with one timer per connection:
the timer stays armed while later deadlines come (a keep-alive connection's next one is
always later), and is moved only when a deadline is earlier than the armed one. Writes
apply back-pressure as `drain()` did: a slow client slows the upstream body down. A client
that stops taking what is sent is cut after `send_timeout` seconds (a write waiting for
the buffer to drain, or a close whose last bytes are not taken by then): `drain()` and
`close()` waited for ever, so a caller that never read its answer kept its connection,
and its place under the cap, for as long as it liked.

The client hanging up or half-closing is reported at once (`on_gone`), so an invocation
can be cancelled without a second task per request watching the socket; `released` runs
once when the transport is gone (the connection's place under the cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

READ_SIZE = 64 * 1024


class ReadTimeout(Exception):
    """Nothing arrived by the read's deadline."""


class ClientStream(asyncio.Protocol):
    def __init__(self, connected: Callable[[ClientStream], None],
                 released: Callable[[], None], send_timeout: float = 60.0) -> None:
        self._connected = connected
        self._released = released
        self._send_timeout = send_timeout
        self.on_gone: Callable[[], None] | None = None  # the client hung up or half-closed
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False  # no more bytes will come (EOF or connection lost)
        self._lost = False
        self._paused = False  # reading paused: the buffer is full
        self._reader: asyncio.Future[None] | None = None  # a read waiting for bytes
        self._writable: asyncio.Future[None] | None = None  # a write waiting for drain
        self._write_paused = False
        self._deadline: float | None = None  # of the waiting read (None: it has none)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # --- asyncio's side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._connected(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= READ_SIZE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        if self.on_gone is not None:
            self.on_gone()
        return True  # keep our side open: the answer may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._wake()
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._released()
        if self.on_gone is not None:
            self.on_gone()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- the connection task's side ------------------------------------------------------

    @property
    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) else "unknown"

    async def read(self, deadline: float | None = None) -> bytes:
        """What has arrived (b"" at the end of the stream), waiting for it until `deadline`
        (loop time; None: no deadline); ReadTimeout when nothing came by then."""
        if not self._buffer and not self._eof:
            if deadline is not None and deadline <= self._loop.time():
                raise ReadTimeout
            self._reader = self._loop.create_future()
            self._deadline = deadline
            if deadline is not None and (self._timer is None or deadline < self._timer_at):
                self._arm(deadline)
            try:
                await self._reader
            finally:
                self._reader = None
                self._deadline = None
            if not self._buffer and not self._eof:
                raise ReadTimeout
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None and not self._lost:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        """Writes, and waits while the client is not taking what was written."""
        if self._lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        self.transport.write(data)
        if self._write_paused:
            self._writable = self._loop.create_future()
            stalled = self._loop.call_later(self._send_timeout, self._abort)
            try:
                await self._writable
            finally:
                stalled.cancel()
            if self._lost:
                raise ConnectionResetError("the client connection was lost")

    def write_eof(self) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self.transport
        if transport is not None:
            transport.close()  # kept open until the client has taken what is written...
            if not self._lost and transport.get_write_buffer_size():
                self._loop.call_later(self._send_timeout, self._abort)  # ...for so long

    def _abort(self) -> None:
        """The client took nothing for `send_timeout`: drop the connection and its bytes."""
        if self.transport is not None and not self._lost:
            self.transport.abort()

    # --- inside --------------------------------------------------------------------------

    def _wake(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expired)

    def _expired(self) -> None:
        """The armed deadline came: a read still waiting past its own deadline gives up;
        one with a later deadline (or none waiting) re-arms for it."""
        self._timer = None
        if self._reader is None or self._reader.done() or self._deadline is None:
            return
        if self._deadline > self._loop.time():
            self._arm(self._deadline)
            return
        self._reader.set_result(None)  # woken with nothing: read() raises ReadTimeout
