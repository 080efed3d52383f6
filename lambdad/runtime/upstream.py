"""HTTP/1.1 client connections to one instance's Unix socket, spoken with h11.

A connection carries one request at a time; after a complete exchange it can be
reused (keep-alive). Any protocol or socket failure makes it unusable, and the
caller learns whether the instance may have seen the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11

from lambdad.runtime.invocation import Headers

READ_SIZE = 64 * 1024


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


class UpstreamConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.broken = False

    @classmethod
    async def open(cls, path: str) -> UpstreamConnection:
        reader, writer = await asyncio.open_unix_connection(path, limit=READ_SIZE)
        return cls(reader, writer)

    @property
    def reusable(self) -> bool:
        return (
            not self.broken
            and self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
        )

    def recycle(self) -> bool:
        """Readies the connection for the next request; False if it cannot be reused."""
        if not self.reusable:
            return False
        self._h11.start_next_cycle()
        return True

    async def request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> tuple[int, Headers]:
        """Sends the whole request and returns the response status and headers."""
        sent = False
        try:
            data = self._h11.send(
                h11.Request(
                    method=method,
                    target=target,
                    headers=_framed(method, headers, body),
                )
            )
            payload = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"" if body else b"")
            payload += self._h11.send(h11.EndOfMessage()) or b""
            self._writer.write(payload)
            sent = True
            await self._writer.drain()
            while True:
                event = await self._next_event()
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

    async def body(self) -> AsyncIterator[bytes]:
        """Yields the response body; leaves the connection reusable when it ends cleanly."""
        try:
            while True:
                event = await self._next_event()
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

    async def _next_event(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._reader.read(READ_SIZE)
                if not chunk and self._reader.at_eof():
                    self._h11.receive_data(b"")
                    event = self._h11.next_event()
                    if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                        raise UpstreamError("instance closed the connection", sent=True)
                    return event  # type: ignore[return-value]
                self._h11.receive_data(chunk)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("instance closed the connection", sent=True)
            return event  # type: ignore[return-value]

    def close(self) -> None:
        """Closes without waiting: the transport finishes closing on its own."""
        self.broken = True
        self._writer.close()
