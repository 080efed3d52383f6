"""The cluster key over a real gRPC server on loopback TCP, behind the real interceptor and
key ring (the control plane is the in-memory fake): what another node may do with it.

Attacks: the cluster key is a bearer secret every node holds, so whoever reads one node's
cluster_key_file must not deploy, invoke or mint keys anywhere with it; and a peer's Logs
call must never fan out again (two nodes would ask each other forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1.health import aio as health_aio

from lambdad.api.interceptors import BearerAuthInterceptor
from lambdad.api.server import build_server
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.auth import KeyRing
from tests.support.fake_control import FakeControl, sample_log

T = TypeVar("T")
CLUSTER_KEY = secrets.token_urlsafe(32)


@contextlib.asynccontextmanager
async def _served(control: FakeControl, ring: KeyRing) -> AsyncIterator[Any]:
    server = build_server(control, health_aio.HealthServicer(),  # type: ignore[arg-type]
                          interceptors=[BearerAuthInterceptor(ring)], keys=ring)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(None)


def _run(control: FakeControl, call: Callable[[Any], Awaitable[T]],
         ring: KeyRing | None = None) -> T:
    async def scenario() -> T:
        async with _served(control, ring or KeyRing([], cluster_key=CLUSTER_KEY)) as stub:
            return await call(stub)
    return asyncio.run(scenario())


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:  # type: ignore[attr-defined]
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _deploy(stub: Any, token: str) -> grpc.StatusCode:
    header = pb.DeployHeader(name="greet")

    async def requests() -> AsyncIterator[pb.DeployRequest]:
        yield pb.DeployRequest(header=header)  # the gate answers before any chunk

    return await _code(stub.Deploy(requests(), metadata=_auth(token)))


@pytest.mark.parametrize("method", ["Deploy", "CreateKey", "Invoke", "RevokeKey",
                                    "DeleteFunction", "GetFunction", "GetStats"])
def test_the_cluster_key_may_not_deploy_invoke_or_mint_keys(method: str) -> None:
    control = FakeControl()

    async def call(stub: Any) -> grpc.StatusCode:
        meta = _auth(CLUSTER_KEY)
        if method == "Deploy":
            return await _deploy(stub, CLUSTER_KEY)
        requests = {
            "CreateKey": pb.CreateKeyRequest(name="mine", role="admin"),
            "Invoke": pb.InvokeRequest(name="greet", payload=b"{}"),
            "RevokeKey": pb.RevokeKeyRequest(name_or_id="ci"),
            "DeleteFunction": pb.DeleteFunctionRequest(name="greet"),
            "GetFunction": pb.GetFunctionRequest(name="greet"),
            "GetStats": pb.GetStatsRequest(name="greet"),
        }
        return await _code(getattr(stub, method)(requests[method], metadata=meta))

    assert _run(control, call) == grpc.StatusCode.PERMISSION_DENIED
    assert control.calls == []  # refused before the control plane saw anything


def test_a_wrong_cluster_key_is_unauthenticated() -> None:
    control = FakeControl()
    control.replies["nodes"] = ([], "")
    wrong = CLUSTER_KEY[:-1] + ("A" if CLUSTER_KEY[-1] != "A" else "B")

    async def call(stub: Any) -> tuple[grpc.StatusCode, grpc.StatusCode]:
        return (await _code(stub.ListNodes(pb.ListNodesRequest(), metadata=_auth(wrong))),
                await _code(stub.Logs(pb.LogsRequest(name="greet"), metadata=_auth(wrong))))

    assert _run(control, call) == (grpc.StatusCode.UNAUTHENTICATED,
                                   grpc.StatusCode.UNAUTHENTICATED)
    assert control.calls == []


def test_without_a_cluster_key_configured_it_is_no_key_at_all() -> None:
    control = FakeControl()
    ring = KeyRing(["lk_000000000000_" + secrets.token_urlsafe(32)])

    async def call(stub: Any) -> grpc.StatusCode:
        return await _code(stub.Logs(pb.LogsRequest(name="greet"),
                                     metadata=_auth(CLUSTER_KEY)))

    assert _run(control, call, ring) == grpc.StatusCode.UNAUTHENTICATED


def test_a_cluster_call_to_logs_is_forced_local_only() -> None:
    """Even when the request does not ask for it: a peer never fans out again."""
    control = FakeControl()
    control.log_entries = [sample_log("one")]

    async def call(stub: Any) -> list[str]:
        stream = stub.Logs(pb.LogsRequest(name="greet", local_only=False),
                           metadata=_auth(CLUSTER_KEY))
        return [entry.message async for entry in stream]

    assert _run(control, call) == ["one"]
    assert control.called("logs")[0][1] == {"follow": False, "local_only": True}


def test_the_cluster_key_lists_nodes() -> None:
    control = FakeControl()
    control.replies["nodes"] = ([], "")

    async def call(stub: Any) -> grpc.StatusCode:
        return await _code(stub.ListNodes(pb.ListNodesRequest(), metadata=_auth(CLUSTER_KEY)))

    assert _run(control, call) == grpc.StatusCode.OK


def test_a_users_logs_call_fans_out() -> None:
    """An API key's Logs is the cluster-wide one unless it asks local_only itself."""
    ring = KeyRing([token := "lk_000000000000_" + secrets.token_urlsafe(32)],
                   cluster_key=CLUSTER_KEY)
    control = FakeControl()

    async def call(stub: Any) -> None:
        await _code(stub.Logs(pb.LogsRequest(name="greet"), metadata=_auth(token)))
        await _code(stub.Logs(pb.LogsRequest(name="greet", local_only=True),
                              metadata=_auth(token)))

    _run(control, call, ring)
    assert [c[2]["local_only"] for c in control.calls if c[0] == "logs"] == [False, True]


def test_a_cluster_key_alone_keeps_tcp_open_for_peers() -> None:
    assert not KeyRing([], cluster_key=CLUSTER_KEY).empty
    assert KeyRing([]).empty
