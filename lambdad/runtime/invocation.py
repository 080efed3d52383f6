"""What the gateway and the control API hand to the runtime manager, and get back.

An invocation is an HTTP/1.1 exchange with one instance over its Unix socket. The
request body is complete (bounded by the body limit); the response body streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Headers = list[tuple[bytes, bytes]]
InvocationType = Literal["http", "direct", "event"]


@dataclass(frozen=True)
class InvocationRequest:
    function: str
    method: bytes
    target: bytes  # path and query, as the client sent them
    # End-to-end headers only, already valid (h11 parsed the client's) and without
    # framing headers (Content-Length, Transfer-Encoding): the hop writes them as they
    # are. The runtime manager adds Lambda-* and the framing.
    headers: Headers
    body: bytes
    invocation_type: InvocationType
    request_id: str
    version: int | None = None  # None: the active version
    # Loop time the request arrived (the gateway: its head); None: when invoked. Where the
    # duration recorded for the invocation starts.
    received_at: float | None = None


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _nothing() -> None:
    return None


@dataclass
class InvocationResponse:
    """A response whose body must be consumed (or not) and then released once."""

    status: int
    headers: Headers
    version: int
    cold_start: bool  # the request waited for a new instance (a cell or a container)
    body: AsyncIterator[bytes] = field(default_factory=_no_body)
    # Synchronous on purpose: it runs in `finally` blocks of cancelled tasks, where
    # an await could be interrupted and the instance's slot leak.
    release: Callable[[], None] = _nothing
    function_ms: float = 0.0  # request sent to response head received
    init_ms: float = 0.0  # the instance's start, when this request waited for it
    import_ms: float = 0.0  # of which the import of the function's code (the runtime's)
    hooks_ms: float = 0.0  # and the function's before-snapshot hooks after it (the runtime's)
    fetch_ms: float = 0.0  # of which its artifact fetched or image built (cluster mode)
    start: str = "warm"  # how the instance was got: warm, cell, unpaused or container
    # The whole body, when it arrived with the head (most responses): a relay can send
    # it without iterating `body`, which then yields just these bytes. None: streamed.
    content: bytes | None = None

    async def read(self) -> bytes:
        """Collects the whole body and releases the instance."""
        try:
            if self.content is not None:
                return self.content
            return b"".join([chunk async for chunk in self.body])
        finally:
            self.release()


class Invoker(Protocol):
    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        """Sends one request to an instance of the function.

        Raises NotFound (no such function), InstanceFailed (the instance died or
        answered garbage), FunctionTimeout (no answer within the function's
        timeout) or Unavailable (no instance could be started).
        """
        ...
