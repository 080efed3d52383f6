"""The gateway's listening side: accepts client connections under a cap, gives each one
a task (`client.py`) and a `ClientConnection` (`connection.py`, the per-connection rules),
and stops them in bounded time.

Routing, admission, header rules and error shapes live in the pure modules next to it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from lambdad.fds import Throttle
from lambdad.gateway.budget import BodyBudget
from lambdad.gateway.client import Client
from lambdad.gateway.connection import Admit, ClientConnection, Limits, read_deadline
from lambdad.gateway.stream import ClientStream
from lambdad.listener import Listener
from lambdad.runtime.invocation import Invoker

log = logging.getLogger("lambdad.gateway")

__all__ = ["Admit", "Gateway", "read_deadline"]

# (function, JSON payload) -> invocation id; for `Lambda-Invocation-Type: Event` requests
Enqueue = Callable[[str, bytes], Awaitable[str]]


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
        self._clients: dict[asyncio.Task[Any], Client] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._open = 0  # accepted connections not yet closed: what the cap counts
        self.refused_connections = 0  # closed at once because the cap was reached
        self._refusals = Throttle(1.0)  # one log line a second, whatever the flood

    @property
    def connections(self) -> int:
        return self._open

    def rules_for(self, peer: str) -> ClientConnection:
        """A new connection's machine, with the settings as they are now."""
        limits = Limits(
            domain=self.domain, max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes, header_timeout=self.header_timeout,
            body_timeout=self.body_timeout, keepalive_timeout=self.keepalive_timeout)
        return ClientConnection(limits, self.bodies, peer=peer, admit=self.admit,
                                events=self.enqueue is not None,
                                stopping=lambda: self.stopping)

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
                lambda: ClientStream(self._connected, gone, self.body_timeout), conn)
        except (asyncio.CancelledError, Exception) as exc:
            gone()
            conn.close()
            if not isinstance(exc, asyncio.CancelledError | OSError):
                log.exception("setting up a connection failed")

    def _connected(self, stream: ClientStream) -> None:
        """A connection's transport is up: it gets its task."""
        asyncio.get_running_loop().create_task(self._accept(stream))

    async def _accept(self, stream: ClientStream) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = Client(self, stream)
        stream.on_gone = client.client_gone
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
            stream.close()
