"""Raw sockets to the gateway on 127.0.0.1, for attacks an HTTP client would not send
(split, trickled, pipelined or never-read requests) and for answers read to the byte."""

from __future__ import annotations

import socket

from tests.support.daemon import Lambdad


def connect(daemon: Lambdad, timeout: float = 30) -> socket.socket:
    """A TCP connection to the daemon's gateway."""
    return socket.create_connection(("127.0.0.1", daemon.gateway_port), timeout=timeout)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes (a timeout raises)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out
