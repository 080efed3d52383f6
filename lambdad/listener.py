"""Listening sockets with an accept loop that stays calm when descriptors run out.

asyncio's own accept loop (Python 3.11) handles EMFILE badly: for each failed accept
it logs a traceback, stops listening and schedules a restart a second later, but
then goes on trying the rest of its batch of 100, so one wake-up schedules up to 100
restarts, each of which fails 100 times more: one flood of 600 idle connections made
634,598 log lines and kept the loop busy. Here a failed accept stops the batch, logs
one line and resumes once, a second later.

It also hands each accepted socket to `on_accept` before any transport or task
exists, so a connection over a cap is closed at the cost of one accept and close.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from lambdad.fds import Throttle

RESUME_AFTER = 1.0  # seconds without accepting after the process ran out of descriptors
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """The sockets of one address: `bind` now (a busy port fails there), `serve` later."""

    def __init__(self, on_accept: Callable[[socket.socket], None], *, name: str,
                 log: logging.Logger, backlog: int = 1024) -> None:
        self.on_accept = on_accept
        self.name = name
        self.log = log
        self.backlog = backlog
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._serving = False
        self._complaints = Throttle(1.0)

    async def bind(self, host: str, port: int) -> None:
        """Binds every address `host` resolves to (as asyncio's create_server does)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setblocking(False)
                if port == 0 and self.port:  # one ephemeral port for every address
                    address = (address[0], self.port, *address[2:])
                sock.bind(address)
                self.port = int(sock.getsockname()[1])
        except OSError:
            self.close()
            raise
        if not self._sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"{host} resolves to no address")

    def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            sock.listen(self.backlog)
            loop.add_reader(sock.fileno(), self._ready, sock)
        self._serving = True

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        self._serving = False
        for sock in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._sockets = []

    def _ready(self, sock: socket.socket) -> None:
        for _ in range(self.backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise  # the loop logs it; the listener stays
                self._pause(sock, exc)
                return
            conn.setblocking(False)
            try:
                self.on_accept(conn)
            except Exception:
                conn.close()
                self.log.exception("%s: handling a new connection failed", self.name)

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.call_later(RESUME_AFTER, self._resume, sock)
        dropped = self._complaints.allow(loop.time())
        if dropped is not None:
            self.log.error("%s: cannot accept connections for %.0f s: %s", self.name,
                           RESUME_AFTER, exc)

    def _resume(self, sock: socket.socket) -> None:
        if self._serving and sock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._ready, sock)
