"""The TCP interceptor over a real gRPC server: a revoked key's stream ends, with a status.

The servicer is a plain stream of health messages; the interceptor, the key ring and
gRPC are the real ones. The daemon-level attack is in tests/e2e/test_key_scope.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from lambdad.api.interceptors import REVOKED, BearerAuthInterceptor
from lambdad.auth import ApiKey, KeyRing
from lambdad.auth.keys import digest, new_secret

METHOD = "/test.Stream/Follow"


def _key() -> tuple[ApiKey, str]:
    key_id, token = new_secret()
    salt = secrets.token_hex(16)
    return ApiKey(key_id, "follower", "invoker", salt, digest(salt, token.split("_", 2)[2]),
                  time.time()), token


async def _serve(ring: KeyRing, waiting: asyncio.Event, ended: list[str]) -> tuple[Any, int]:
    async def follow(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            yield health_pb2.HealthCheckResponse(status=1)
            waiting.set()
            await asyncio.sleep(3600)  # a follower waiting for the next line
            yield health_pb2.HealthCheckResponse(status=1)
        finally:
            ended.append("servicer closed")

    handler = grpc.unary_stream_rpc_method_handler(
        follow, request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
    server = grpc.aio.server(interceptors=[BearerAuthInterceptor(ring)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Stream", {"Follow": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _call(channel: Any, token: str) -> Any:
    stream = channel.unary_stream(
        METHOD, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString)
    return stream(health_pb2.HealthCheckRequest(),
                  metadata=(("authorization", f"Bearer {token}"),))


def test_revoking_the_key_ends_the_stream_with_unauthenticated() -> None:
    async def scenario() -> None:
        ring = KeyRing([])
        key, token = _key()
        ring.load([key])
        waiting, ended = asyncio.Event(), []
        server, port = await _serve(ring, waiting, ended)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = _call(channel, token)
                await call.read()
                await asyncio.wait_for(waiting.wait(), 10)
                assert ring.watching() == 1
                ring.put(replace(key, revoked_at=time.time()))
                with pytest.raises(grpc.aio.AioRpcError):
                    await asyncio.wait_for(call.read(), 5)
                assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
                assert await call.details() == REVOKED
                assert ended == ["servicer closed"] and ring.watching() == 0
                # And the key opens no new stream.
                again = _call(channel, token)
                assert await asyncio.wait_for(again.code(), 5) == \
                    grpc.StatusCode.UNAUTHENTICATED
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_stream_the_client_leaves_stops_watching_its_key() -> None:
    async def scenario() -> None:
        ring = KeyRing([])
        key, token = _key()
        ring.load([key])
        waiting, ended = asyncio.Event(), []
        server, port = await _serve(ring, waiting, ended)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = _call(channel, token)
                await call.read()
                await asyncio.wait_for(waiting.wait(), 10)
                call.cancel()
                deadline = time.monotonic() + 10
                while (ring.watching() or not ended) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert ring.watching() == 0 and ended == ["servicer closed"]
        finally:
            await server.stop(None)

    asyncio.run(scenario())
