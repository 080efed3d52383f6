"""The TCP control API's gate: API keys and roles on every call, and revocation of
streams already open.

gRPC-specific (interceptor, handlers, status codes), so it lives with the transport; the
keys and the role table it asks are lambdad/auth's and know nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from lambdad.api.contract import SERVICE_NAME
from lambdad.api.status import REASON_KEY
from lambdad.auth import Identity, KeyRing, allowed, required_role
from lambdad.auth.keys import CLUSTER_ROLE, bearer_credentials, cluster_may_call

log = logging.getLogger("lambdad.api")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
REVOKED = "API key revoked"

if TYPE_CHECKING:  # grpc-stubs makes these generic; at run time they are plain classes
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler


def bearer_token(metadata: Any) -> str:
    for key, item in metadata or ():
        if key == "authorization":
            value = item.decode() if isinstance(item, bytes) else str(item)
            token = bearer_credentials(value)
            if token is not None:
                return token
    return ""


class BearerAuthInterceptor(_Interceptor):
    """On TCP: every RPC but health needs `authorization: Bearer <key>` whose role allows
    the method (invoker < deployer < admin); reflection too unless made open. A streaming
    call ends with UNAUTHENTICATED when its key is revoked (see `_revocable`)."""

    def __init__(self, keys: KeyRing, *, open_reflection: bool = False) -> None:
        self._keys = keys
        self._open_reflection = open_reflection

    def check(self, method: str, metadata: Any) -> Identity | tuple[grpc.StatusCode, str]:
        """The caller when the call may proceed, else the status and why not."""
        if self._open_reflection and method.startswith(REFLECTION_PREFIX):
            return Identity("", "anonymous", "invoker")
        if self._keys.empty:
            return (grpc.StatusCode.UNAUTHENTICATED,
                    "this daemon has no API key configured; TCP access is disabled")
        token = bearer_token(metadata)
        if not token:
            return (grpc.StatusCode.UNAUTHENTICATED,
                    "missing authorization metadata: send 'authorization: Bearer <api-key>'")
        identity = self._keys.resolve(token)
        if identity is None:
            return grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked API key"
        ours = method.startswith(f"/{SERVICE_NAME}/")
        if identity.role == CLUSTER_ROLE:
            if ours and cluster_may_call(method):
                return identity
            return (grpc.StatusCode.PERMISSION_DENIED,
                    f"the cluster key may call only Logs and ListNodes, not "
                    f"{method.rsplit('/', 1)[-1]}")
        needed = required_role(method) if ours else "invoker"
        if not allowed(identity.role, needed):
            return (grpc.StatusCode.PERMISSION_DENIED,
                    f"API key {identity.name!r} has role {identity.role}; "
                    f"{method.rsplit('/', 1)[-1]} needs {needed}")
        return identity

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        outcome = self.check(method, handler_call_details.invocation_metadata)
        if not isinstance(outcome, Identity):
            return _denying(handler, *outcome)
        if outcome.key_id:
            return _revocable(handler, self._keys, outcome.key_id, method)
        return handler


class _Guard:
    """Where a guarded stream is: `inside` its servicer (where a cancellation is safe to
    deliver) or in gRPC's own code, between messages (where it is not: gRPC would then
    end the call without a status and the client would wait forever)."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.inside = False
        self.revoked = False
        self.cancelled = False

    def revoke(self) -> None:
        self.revoked = True
        if self.inside and not self.cancelled:
            self.cancelled = True
            self.task.cancel()


def _revocable(handler: Handler, keys: KeyRing, key_id: str, method: str) -> Handler:
    """The same handler, but a stream (Logs -f, Deploy, reflection) ends with
    UNAUTHENTICATED "API key revoked" as soon as its key is revoked: at once when the
    servicer is waiting (for a log line, an upload chunk, a build), else before its next
    message. Unary calls finish what they started; every later call is refused."""
    stream: Any = handler.unary_stream or handler.stream_stream  # typed for sync contexts
    if stream is None or not inspect.isasyncgenfunction(stream):
        return handler

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]
                      ) -> AsyncIterator[Any]:
        task = asyncio.current_task()
        assert task is not None
        guard = _Guard(task)
        unwatch = keys.watch(key_id, guard.revoke)
        responses: AsyncGenerator[Any, None] = stream(request, context)
        try:
            while not guard.revoked:
                guard.inside = True
                try:
                    message = await anext(responses)
                except StopAsyncIteration:
                    if not guard.cancelled:
                        return
                except asyncio.CancelledError:
                    if not guard.cancelled:
                        raise  # the client went away: not ours to turn into a status
                finally:
                    guard.inside = False
                if guard.cancelled:
                    task.uncancel()
                    break
                yield message
        finally:
            unwatch()
            await responses.aclose()
        log.info("ended %s: API key id=%s was revoked", method.rsplit("/", 1)[-1], key_id)
        context.set_trailing_metadata(((REASON_KEY, "Unauthenticated"),))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REVOKED)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(guarded, **kwargs)
    return grpc.stream_stream_rpc_method_handler(guarded, **kwargs)


def _denying(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    """A handler of the same shape that fails the call (UNAUTHENTICATED, PERMISSION_DENIED)."""
    reason = "Unauthenticated" if code == grpc.StatusCode.UNAUTHENTICATED else "PermissionDenied"

    async def deny(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        context.set_trailing_metadata(((REASON_KEY, reason),))
        await context.abort(code, message)

    async def deny_stream(
        _request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await deny(_request, context)
        yield None  # pragma: no cover - abort raises

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
