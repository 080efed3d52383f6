"""The admin listener: /metrics (Prometheus text) and /healthz, over h11.

Kept apart from the gateway so scraping works whatever the functions do, and so it
can listen on another address (127.0.0.1:8081 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable

import h11
from prometheus_client import CONTENT_TYPE_LATEST

from lambdad.listener import Listener

log = logging.getLogger("lambdad.admin")

HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 64  # scrapers and probes; more are closed at once, keeping descriptors


class AdminServer:
    def __init__(self, render_metrics: Callable[[], bytes],
                 health: Callable[[], dict[str, object]]) -> None:
        self._render = render_metrics
        self._health = health
        self._listener: Listener | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int, *, serve: bool = True) -> None:
        """Binds (a busy port fails here); accepts now, or from `serve` if not `serve`."""
        self._listener = Listener(self._accepted, name="admin listener", log=log)
        await self._listener.bind(host, port)
        self.port = self._listener.port
        log.info("admin listener on %s:%d (/metrics, /healthz)", host, self.port)
        if serve:
            self._listener.serve()

    async def serve(self) -> None:
        assert self._listener is not None, "start binds first"
        self._listener.serve()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=2)

    def _accepted(self, conn: socket.socket) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(self._connection(conn))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except (asyncio.CancelledError, OSError):
            conn.close()
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    def respond(self, method: bytes, target: bytes) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for one request: pure, so it is unit-tested."""
        path = target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"text/plain", b"method not allowed\n"
        if path == b"/metrics":
            return 200, CONTENT_TYPE_LATEST.encode(), self._render()
        if path == b"/healthz":
            return 200, b"application/json", json.dumps(self._health()).encode() + b"\n"
        return 404, b"text/plain", b"not found: try /metrics or /healthz\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), HEADER_TIMEOUT)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    status, content_type, body = self.respond(event.method, event.target)
                    headers = [(b"content-type", content_type),
                               (b"content-length", str(len(body)).encode())]
                    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
                    if event.method != b"HEAD":
                        out += conn.send(h11.Data(data=body)) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    writer.write(out)
                    await writer.drain()
                    continue
                if isinstance(event, h11.EndOfMessage):
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                        continue
                    return
                if isinstance(event, h11.ConnectionClosed | h11.Data):
                    if isinstance(event, h11.ConnectionClosed):
                        return
                    continue
                return
        except (h11.ProtocolError, TimeoutError, OSError):
            return
        finally:
            writer.close()
