"""The control API's RPC handlers: each turns its request into one ControlPlane call and
the result into its reply (lambdad/api/convert.py), and a LambdaError into a status.

Errors travel as the status code from api/status.py plus the error's reason in the
trailing metadata, so the CLI tells a failed build from other FAILED_PRECONDITIONs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from lambdad.api import convert
from lambdad.api.interceptors import bearer_token
from lambdad.api.status import REASON_KEY, grpc_code
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.auth import READ_ENV_ROLE, KeyRing, allowed
from lambdad.auth.keys import CLUSTER_ROLE
from lambdad.control import ControlPlane
from lambdad.errors import InvalidArgument, LambdaError, PermissionDenied
from lambdad.logs import LogQuery
from lambdad.metrics import Metrics
from lambdad.scheduler.cron import next_runs

log = logging.getLogger("lambdad.api")

MAX_CHUNK_BYTES = 1024 * 1024

R = TypeVar("R")

if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is a plain class
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


async def _abort(context: Context, exc: LambdaError) -> None:
    context.set_trailing_metadata(((REASON_KEY, exc.reason),))
    await context.abort(grpc_code(exc), exc.message)


def _unary(
    method: Callable[[Any, Any, Context], Awaitable[R]],
) -> Callable[[Any, Any, Context], Awaitable[R]]:
    """A unary handler whose LambdaError becomes its status, and which is counted."""
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        code = "UNKNOWN"
        try:
            result = await method(self, request, context)
            code = "OK"
            return result
        except LambdaError as exc:
            code = grpc_code(exc).name
            await _abort(context, exc)
            raise AssertionError("unreachable") from None
        finally:
            self._count(method.__name__, code)

    return wrapper


class FunctionServicer(pb_grpc.FunctionServiceServicer):
    def __init__(self, control: ControlPlane, metrics: Metrics | None = None,
                 keys: KeyRing | None = None) -> None:
        self._control = control
        self._metrics = metrics
        self._keys = keys

    def _count(self, method: str, code: str) -> None:
        if self._metrics is not None:
            self._metrics.grpc_requests.labels(method, code).inc()

    async def Deploy(
        self, request_iterator: AsyncIterator[pb.DeployRequest], context: Context,
    ) -> AsyncIterator[pb.DeployResponse]:
        code = "UNKNOWN"
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("kind") != "header":
                raise InvalidArgument("the first Deploy message must be the header")
            async for event in self._control.deploy(
                convert.deploy_header(first.header), _chunks(request_iterator),
                deployed_by=_identity(context, self._keys)[0],
            ):
                yield convert.deploy_response(event)
            code = "OK"
        except LambdaError as exc:
            code = grpc_code(exc).name
            log.warning("deploy failed reason=%s message=%s", exc.reason,
                        exc.message.splitlines()[0] if exc.message else "")
            await _abort(context, exc)
        finally:
            self._count("Deploy", code)

    @_unary
    async def Invoke(self, request: pb.InvokeRequest, context: Context) -> pb.InvokeResponse:
        if request.type == pb.INVOCATION_TYPE_EVENT:
            invocation_id = await self._control.enqueue(
                request.name, bytes(request.payload), source="api")
            return pb.InvokeResponse(status_code=202, request_id=invocation_id)
        result = await self._control.invoke(
            request.name, bytes(request.payload), version=request.version or None
        )
        return pb.InvokeResponse(
            status_code=result.status, payload=result.payload,
            function_error=result.function_error, request_id=result.request_id,
            executed_version=result.version, cold_start=result.cold_start,
        )

    @_unary
    async def ListFunctions(
        self, request: pb.ListFunctionsRequest, context: Context
    ) -> pb.ListFunctionsResponse:
        views = await self._control.list_functions()
        return pb.ListFunctionsResponse(functions=[convert.function(view) for view in views])

    @_unary
    async def GetFunction(self, request: pb.GetFunctionRequest, context: Context) -> pb.Function:
        if request.show_env:
            # Refused rather than masked: `get --show-env` printing "****" would look like
            # the values; an invoker still sees the names (masked) without show_env.
            name, role = _identity(context, self._keys)
            if not allowed(role, READ_ENV_ROLE):
                raise PermissionDenied(
                    f"API key {name!r} has role {role}; reading environment values "
                    f"(show_env) needs {READ_ENV_ROLE}")
        return convert.function(await self._control.get_function(request.name),
                                show_env=request.show_env)

    @_unary
    async def DeleteFunction(
        self, request: pb.DeleteFunctionRequest, context: Context
    ) -> pb.DeleteFunctionResponse:
        versions, instances = await self._control.delete(request.name)
        return pb.DeleteFunctionResponse(
            name=request.name, versions_removed=versions, instances_removed=instances
        )

    async def Logs(self, request: pb.LogsRequest, context: Context) -> AsyncIterator[pb.LogEntry]:
        since = (datetime.now(UTC) - timedelta(seconds=request.since_seconds)
                 if request.since_seconds else None)
        query = LogQuery(function=request.name, since=since, request_id=request.request_id,
                         version=request.version, tail=request.tail)
        # The cluster key (another node) gets this node's lines only: no fan-out again.
        local_only = request.local_only or _identity(context, self._keys)[1] == CLUSTER_ROLE
        code = "UNKNOWN"
        try:
            async for entry in self._control.logs(query, follow=request.follow,
                                                  local_only=local_only):
                yield convert.log_entry(entry)
            code = "OK"
        except LambdaError as exc:
            code = grpc_code(exc).name
            await _abort(context, exc)
        except asyncio.CancelledError:
            code = "CANCELLED"  # the follower went away: the stream just ends
            raise
        finally:
            self._count("Logs", code)

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        functions, cells = await self._control.stats(request.name or None)
        return convert.stats(functions, cells)

    @_unary
    async def CreateKey(self, request: pb.CreateKeyRequest, context: Context) -> pb.CreatedKey:
        key, secret = await self._control.create_key(request.name, request.role or "invoker")
        return pb.CreatedKey(key=convert.key(key), secret=secret)

    @_unary
    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        return pb.ListKeysResponse(keys=[convert.key(k) for k in await self._control.list_keys()])

    @_unary
    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: Context) -> pb.KeyInfo:
        return convert.key(await self._control.revoke_key(request.name_or_id))

    @_unary
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.ScheduleInfo:
        schedule = await self._control.create_schedule(
            request.name, request.cron, request.tz, bytes(request.data), request.overlap)
        runs = next_runs(schedule.cron, schedule.tz, time.time(), 3)
        return convert.schedule(schedule, runs, "")

    @_unary
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        found = await self._control.schedules(request.name)
        return pb.ListSchedulesResponse(schedules=[
            convert.schedule(schedule, [next_run] if next_run else [], status)
            for schedule, next_run, status in found
        ])

    @_unary
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Context
    ) -> pb.ScheduleInfo:
        return convert.schedule(await self._control.delete_schedule(request.id), [], "")

    @_unary
    async def ListInvocations(
        self, request: pb.ListInvocationsRequest, context: Context
    ) -> pb.ListInvocationsResponse:
        found = await self._control.invocations(request.name, request.status, request.limit)
        return pb.ListInvocationsResponse(invocations=[convert.invocation(i) for i in found])

    @_unary
    async def GetInvocation(
        self, request: pb.GetInvocationRequest, context: Context
    ) -> pb.InvocationInfo:
        return convert.invocation(await self._control.invocation(request.id))

    @_unary
    async def Redrive(self, request: pb.RedriveRequest, context: Context) -> pb.RedriveResponse:
        count = await self._control.redrive(request.id, request.all_failed_of)
        return pb.RedriveResponse(redriven=count)

    @_unary
    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Context
    ) -> pb.ListVersionsResponse:
        versions, history, active = await self._control.versions(request.name)
        return pb.ListVersionsResponse(versions=[
            convert.version_info(version, history, active) for version in versions
        ])

    @_unary
    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        version, previous = await self._control.rollback(
            request.name, request.to_version or None
        )
        return pb.RollbackResponse(name=request.name, version=version,
                                   previous_version=previous, url=self._control.url(request.name))

    @_unary
    async def UpdateConfig(
        self, request: pb.UpdateConfigRequest, context: Context
    ) -> pb.DeployResult:
        result = await self._control.update_config(
            request.name, convert.overrides(request.overrides))
        return convert.deploy_result(result)

    @_unary
    async def GetVersion(self, request: pb.GetVersionRequest, context: Context) -> pb.DaemonInfo:
        return convert.daemon_info(self._control.info)


    @_unary
    async def ListNodes(self, request: pb.ListNodesRequest,
                        context: Context) -> pb.ListNodesResponse:
        rows, leader = await self._control.nodes()
        return convert.nodes(rows, leader, self._control.node_id)


def _identity(context: Context, keys: KeyRing | None) -> tuple[str, str]:
    """(caller, role): `local` with every right on the Unix socket (its file permissions
    are the access control), else the API key's name and role."""
    if context.peer().startswith("unix:") or keys is None:
        return "local", "admin"
    identity = keys.identify(bearer_token(context.invocation_metadata()))
    # The interceptor let the call in, so the key was valid; revoked since: least role.
    return identity if identity else ("api-key", "invoker")


async def _chunks(requests: AsyncIterator[pb.DeployRequest]) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.WhichOneof("kind") != "chunk":
            raise InvalidArgument("after the header, Deploy accepts only chunk messages")
        if len(message.chunk) > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"a deploy chunk is larger than {MAX_CHUNK_BYTES} bytes")
        yield bytes(message.chunk)
