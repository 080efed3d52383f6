"""The gRPC transport of the control plane: protobuf in, ControlPlane calls, protobuf out.

Two grpc.aio servers share the servicer: one on the Unix socket (its directory's
permissions are the access control) and one on TCP, where an interceptor demands
`authorization: Bearer <key>` on every call but the health check.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lambdad.api.contract import function_status
from lambdad.api.status import REASON_KEY, grpc_code
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.auth import READ_ENV_ROLE, ApiKey, Identity, KeyRing, allowed, required_role
from lambdad.auth.keys import bearer_credentials
from lambdad.control import (
    BuildOutput,
    ControlPlane,
    DaemonInfo,
    DeployHeader,
    DeployResult,
    FunctionView,
    Progress,
)
from lambdad.errors import InvalidArgument, LambdaError, PermissionDenied
from lambdad.functions import Activation, FunctionConfig, FunctionVersion, Overrides
from lambdad.logs import LogQuery
from lambdad.metrics import Metrics
from lambdad.queue.model import AsyncInvocation
from lambdad.scheduler.cron import Schedule, next_runs

log = logging.getLogger("lambdad.api")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a 6 MiB invoke payload plus framing
MAX_CHUNK_BYTES = 1024 * 1024
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
REVOKED = "API key revoked"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FunctionService"].full_name

R = TypeVar("R")

if TYPE_CHECKING:  # grpc-stubs makes these generic; at run time they are plain classes
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: LambdaError) -> None:
    context.set_trailing_metadata(((REASON_KEY, exc.reason),))
    await context.abort(grpc_code(exc), exc.message)


def _unary(
    method: Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
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
        self,
        request_iterator: AsyncIterator[pb.DeployRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeployResponse]:
        code = "UNKNOWN"
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("kind") != "header":
                raise InvalidArgument("the first Deploy message must be the header")
            async for event in self._control.deploy(
                _header(first.header), _chunks(request_iterator),
                deployed_by=_caller(context, self._keys),
            ):
                yield _deploy_response(event)
            code = "OK"
        except LambdaError as exc:
            code = grpc_code(exc).name
            log.warning("deploy failed reason=%s message=%s", exc.reason,
                        exc.message.splitlines()[0] if exc.message else "")
            await _abort(context, exc)
        finally:
            self._count("Deploy", code)

    @_unary
    async def Invoke(
        self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.InvokeResponse:
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
        self, request: pb.ListFunctionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFunctionsResponse:
        views = await self._control.list_functions()
        return pb.ListFunctionsResponse(functions=[_function(view) for view in views])

    @_unary
    async def GetFunction(
        self, request: pb.GetFunctionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Function:
        if request.show_env:
            # Refused rather than masked: `get --show-env` printing "****" would look like
            # the values; an invoker still sees the names (masked) without show_env.
            name, role = _identity(context, self._keys)
            if not allowed(role, READ_ENV_ROLE):
                raise PermissionDenied(
                    f"API key {name!r} has role {role}; reading environment values "
                    f"(show_env) needs {READ_ENV_ROLE}")
        return _function(await self._control.get_function(request.name),
                         show_env=request.show_env)

    @_unary
    async def DeleteFunction(
        self, request: pb.DeleteFunctionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteFunctionResponse:
        versions, instances = await self._control.delete(request.name)
        return pb.DeleteFunctionResponse(
            name=request.name, versions_removed=versions, instances_removed=instances
        )

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.LogEntry]:
        since = (datetime.now(UTC) - timedelta(seconds=request.since_seconds)
                 if request.since_seconds else None)
        query = LogQuery(function=request.name, since=since, request_id=request.request_id,
                         version=request.version, tail=request.tail)
        code = "UNKNOWN"
        try:
            async for entry in self._control.logs(query, follow=request.follow):
                yield pb.LogEntry(
                    time=_timestamp(entry.time), function=entry.function,
                    version=entry.version, instance=entry.instance, stream=entry.stream,
                    request_id=entry.request_id, message=entry.message,
                )
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
    async def GetStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStatsResponse:
        functions, cells = await self._control.stats(request.name or None)
        return pb.GetStatsResponse(functions=[
            pb.FunctionStats(name=name, instances_now=now, memory_bytes=memory, windows=[
                pb.WindowStats(window=w.window, invocations=w.invocations,
                               error_rate=w.error_rate, p50_seconds=w.p50, p95_seconds=w.p95,
                               p99_seconds=w.p99, cold_start_rate=w.cold_start_rate,
                               instances_max=w.instances_max)
                for w in windows
            ])
            for name, windows, now, memory in functions
        ], cell_pool=[
            pb.CellPoolClass(resource_class=c.cell_class.label(), ready=c.ready,
                             starting=c.starting, memory_bytes=memory)
            for c, memory in cells
        ])

    @_unary
    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreatedKey:
        key, secret = await self._control.create_key(request.name, request.role or "invoker")
        return pb.CreatedKey(key=_key(key), secret=secret)

    @_unary
    async def ListKeys(
        self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListKeysResponse:
        return pb.ListKeysResponse(keys=[_key(k) for k in await self._control.list_keys()])

    @_unary
    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.KeyInfo:
        return _key(await self._control.revoke_key(request.name_or_id))

    @_unary
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleInfo:
        schedule = await self._control.create_schedule(
            request.name, request.cron, request.tz, bytes(request.data), request.overlap)
        return _schedule(schedule, next_runs(schedule.cron, schedule.tz, time.time(), 3), "")

    @_unary
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSchedulesResponse:
        found = await self._control.schedules(request.name)
        return pb.ListSchedulesResponse(schedules=[
            _schedule(schedule, [next_run] if next_run else [], status)
            for schedule, next_run, status in found
        ])

    @_unary
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ScheduleInfo:
        return _schedule(await self._control.delete_schedule(request.id), [], "")

    @_unary
    async def ListInvocations(
        self, request: pb.ListInvocationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListInvocationsResponse:
        found = await self._control.invocations(request.name, request.status, request.limit)
        return pb.ListInvocationsResponse(invocations=[_invocation(i) for i in found])

    @_unary
    async def GetInvocation(
        self, request: pb.GetInvocationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.InvocationInfo:
        return _invocation(await self._control.invocation(request.id))

    @_unary
    async def Redrive(
        self, request: pb.RedriveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RedriveResponse:
        count = await self._control.redrive(request.id, request.all_failed_of)
        return pb.RedriveResponse(redriven=count)

    @_unary
    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListVersionsResponse:
        versions, history, active = await self._control.versions(request.name)
        return pb.ListVersionsResponse(versions=[
            _version_info(version, history, active) for version in versions
        ])

    @_unary
    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RollbackResponse:
        version, previous = await self._control.rollback(
            request.name, request.to_version or None
        )
        return pb.RollbackResponse(name=request.name, version=version,
                                   previous_version=previous, url=self._control.url(request.name))

    @_unary
    async def UpdateConfig(
        self, request: pb.UpdateConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeployResult:
        result = await self._control.update_config(request.name, _overrides(request.overrides))
        return pb.DeployResult(name=result.name, version=result.version, image=result.image,
                               url=result.url)

    @_unary
    async def GetVersion(
        self, request: pb.GetVersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DaemonInfo:
        return _daemon_info(self._control.info)


def _daemon_info(info: DaemonInfo) -> pb.DaemonInfo:
    return pb.DaemonInfo(
        version=info.version, api_version=info.api_version,
        python_version=info.python_version, docker_version=info.docker_version,
        started_at=_timestamp(info.started_at), domain=info.domain,
        url_template=info.url_template,
    )


def _identity(
    context: grpc.aio.ServicerContext[Any, Any], keys: KeyRing | None
) -> tuple[str, str]:
    """(caller, role): `local` with every right on the Unix socket (its file permissions
    are the access control), else the API key's name and role."""
    if context.peer().startswith("unix:") or keys is None:
        return "local", "admin"
    identity = keys.identify(bearer_token(context.invocation_metadata()))
    # The interceptor let the call in, so the key was valid; revoked since: least role.
    return identity if identity else ("api-key", "invoker")


def _caller(context: grpc.aio.ServicerContext[Any, Any], keys: KeyRing | None) -> str:
    """Who deploys: `local` on the Unix socket, else the API key's name."""
    return _identity(context, keys)[0]


def _header(header: pb.DeployHeader) -> DeployHeader:
    return DeployHeader(
        name=header.name,
        size=header.size,
        sha256=header.sha256.lower(),
        overrides=_overrides(header.overrides),
        no_cache=header.no_cache,
    )


def _overrides(o: pb.ConfigOverrides) -> Overrides:
    return Overrides(
            handler=o.handler if o.HasField("handler") else None,
            timeout_s=o.timeout_seconds if o.HasField("timeout_seconds") else None,
            memory_mb=o.memory_mb if o.HasField("memory_mb") else None,
            env=dict(o.env),
            network=o.network if o.HasField("network") else None,
            cpu=o.cpu if o.HasField("cpu") else None,
            concurrency=o.concurrency if o.HasField("concurrency") else None,
            min_instances=o.min_instances if o.HasField("min_instances") else None,
            max_instances=o.max_instances if o.HasField("max_instances") else None,
            idle_timeout_s=(o.idle_timeout_seconds if o.HasField("idle_timeout_seconds")
                            else None),
    )


async def _chunks(requests: AsyncIterator[pb.DeployRequest]) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.WhichOneof("kind") != "chunk":
            raise InvalidArgument("after the header, Deploy accepts only chunk messages")
        if len(message.chunk) > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"a deploy chunk is larger than {MAX_CHUNK_BYTES} bytes")
        yield bytes(message.chunk)


def _deploy_response(event: Progress | BuildOutput | DeployResult) -> pb.DeployResponse:
    if isinstance(event, Progress):
        state = pb.DeployProgress.STATE_DONE if event.done else pb.DeployProgress.STATE_STARTED
        return pb.DeployResponse(progress=pb.DeployProgress(
            step=event.step, total_steps=event.total, title=event.title, state=state))
    if isinstance(event, BuildOutput):
        return pb.DeployResponse(build_output=event.line)
    return pb.DeployResponse(result=pb.DeployResult(
        name=event.name, version=event.version, image=event.image, url=event.url))


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _config(config: FunctionConfig, *, show_env: bool) -> pb.FunctionConfig:
    scaling = config.scaling
    env = dict(config.env) if show_env else {key: "****" for key in config.env}
    return pb.FunctionConfig(
        runtime=config.runtime, handler=config.handler, timeout_seconds=config.timeout_s,
        memory_mb=config.memory_mb, env=env, network=config.network,
        cpu=config.cpu, pids_limit=config.pids_limit,
        scaling=pb.Scaling(
            concurrency=scaling.concurrency, min_instances=scaling.min_instances,
            max_instances=scaling.max_instances, idle_timeout_seconds=scaling.idle_timeout_s,
            queue_timeout_seconds=config.queue_timeout_s,
        ),
    )


def _function(view: FunctionView, *, show_env: bool = False) -> pb.Function:
    record = view.record
    counts = view.instances
    message = pb.Function(
        name=record.name, status=function_status(view.status), url=view.url,
        instances=pb.InstanceCounts(running=counts.running, busy=counts.busy,
                                    starting=counts.starting, draining=counts.draining,
                                    queued=counts.queued),
    )
    active = record.active
    if active is not None:
        message.version = active.number
        message.deployed_at.CopyFrom(_timestamp(active.created_at))
        message.image = active.image
        message.code_sha256 = active.code_sha256
        message.code_size = active.code_size
        message.config.CopyFrom(_config(active.config, show_env=show_env))
    return message


def _epoch(seconds: float | None) -> Timestamp | None:
    return None if seconds is None else _timestamp(datetime.fromtimestamp(seconds, UTC))


def _key(key: ApiKey) -> pb.KeyInfo:
    info = pb.KeyInfo(id=key.id, name=key.name, role=key.role)
    created = _epoch(key.created_at)
    assert created is not None
    info.created_at.CopyFrom(created)
    revoked = _epoch(key.revoked_at)
    if revoked is not None:
        info.revoked_at.CopyFrom(revoked)
    return info


def _schedule(schedule: Schedule, runs: list[float], status: str) -> pb.ScheduleInfo:
    info = pb.ScheduleInfo(
        id=schedule.id, function=schedule.function, cron=schedule.cron, tz=schedule.tz,
        data=schedule.data, overlap=schedule.overlap, last_result=schedule.last_result,
        last_invocation=schedule.last_invocation, last_invocation_status=status,
    )
    for when in runs:
        stamp = _epoch(when)
        assert stamp is not None
        info.next_runs.append(stamp)
    last = _epoch(schedule.last_run)
    if last is not None:
        info.last_run.CopyFrom(last)
    return info


def _invocation(invocation: AsyncInvocation) -> pb.InvocationInfo:
    info = pb.InvocationInfo(
        id=invocation.id, function=invocation.function, status=invocation.status,
        attempts=invocation.attempts, source=invocation.source, payload=invocation.payload,
        result=invocation.result or b"", last_error=invocation.last_error,
        status_code=invocation.status_code or 0,
    )
    for field_name, value in (("created_at", invocation.created_at),
                              ("next_attempt_at", invocation.next_attempt_at),
                              ("started_at", invocation.started_at),
                              ("finished_at", invocation.finished_at)):
        stamp = _epoch(value)
        if stamp is not None:
            getattr(info, field_name).CopyFrom(stamp)
    return info


def _version_info(
    version: FunctionVersion, history: list[Activation], active: int
) -> pb.VersionInfo:
    info = pb.VersionInfo(
        number=version.number, image=version.image, image_id=version.image_id,
        config=_config(version.config, show_env=False), code_sha256=version.code_sha256,
        code_size=version.code_size, created_at=_timestamp(version.created_at),
        deployed_by=version.deployed_by, active=version.number == active,
        pruned=version.pruned, source_version=version.source_version or 0,
    )
    for index, activation in enumerate(history):
        if activation.version != version.number:
            continue
        period = pb.ActivePeriod(reason=activation.reason)
        getattr(period, "from").CopyFrom(_timestamp(activation.activated_at))
        if index + 1 < len(history):
            period.until.CopyFrom(_timestamp(history[index + 1].activated_at))
        info.active_periods.append(period)
    return info


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
        needed = required_role(method) if method.startswith(f"/{SERVICE_NAME}/") else "invoker"
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


def build_server(
    control: ControlPlane,
    health_servicer: Any,  # grpc_health.v1.health.aio.HealthServicer (untyped)
    *,
    interceptors: list[Any] | None = None,
    metrics: Metrics | None = None,
    keys: KeyRing | None = None,
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=interceptors or (),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_FunctionServiceServicer_to_server(  # type: ignore[no-untyped-call]
        FunctionServicer(control, metrics, keys), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    return server
