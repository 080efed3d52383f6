"""Protobuf to the control plane's types and back: pure functions, no gRPC.

The servicer calls these on the way in (a deploy header, config overrides) and on the
way out (functions, versions, keys, schedules, invocations, stats); each knows one
message, so a field added to the proto is added in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from lambdad.api.contract import function_status
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.auth import ApiKey
from lambdad.cluster.table import NodeRow
from lambdad.control import (
    BuildOutput,
    DaemonInfo,
    DeployHeader,
    DeployResult,
    FunctionView,
    Progress,
)
from lambdad.functions import Activation, FunctionConfig, FunctionVersion, Overrides
from lambdad.functions.overrides import SETTING_FIELDS
from lambdad.logs import LogEntry
from lambdad.metrics.stats import WindowStats
from lambdad.queue.model import AsyncInvocation
from lambdad.runtime.cells import ClassStats
from lambdad.scheduler.cron import Schedule

# What ControlPlane.stats returns: per function (name, windows, instances now, memory),
# and per stem-cell class (its counts, memory).
FunctionStatsRow = tuple[str, list[WindowStats], int, int]
CellStatsRow = tuple[ClassStats, int]


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def epoch(seconds: float) -> Timestamp:
    """A Unix time (the store's and the queue's) as a Timestamp."""
    return timestamp(datetime.fromtimestamp(seconds, UTC))


def _set_times(message: Message, **times: float | None) -> None:
    """Sets each Timestamp field whose time is known; an unknown one stays unset."""
    for name, seconds in times.items():
        if seconds is not None:
            getattr(message, name).CopyFrom(epoch(seconds))


# In: requests to the control plane's types.

def deploy_header(header: pb.DeployHeader) -> DeployHeader:
    return DeployHeader(
        name=header.name,
        size=header.size,
        sha256=header.sha256.lower(),
        overrides=overrides(header.overrides),
        no_cache=header.no_cache,
        prewarm=header.prewarm,
    )


def overrides(message: pb.ConfigOverrides) -> Overrides:
    """The fields the caller set (proto3 `optional`: unset is not zero) and the env."""
    given = {f.attr: getattr(message, f.field) for f in SETTING_FIELDS
             if message.HasField(f.field)}
    return Overrides(env=dict(message.env), **given)


# Out: the control plane's results to replies.

def deploy_response(event: Progress | BuildOutput | DeployResult) -> pb.DeployResponse:
    if isinstance(event, Progress):
        state = pb.DeployProgress.STATE_DONE if event.done else pb.DeployProgress.STATE_STARTED
        return pb.DeployResponse(progress=pb.DeployProgress(
            step=event.step, total_steps=event.total, title=event.title, state=state))
    if isinstance(event, BuildOutput):
        return pb.DeployResponse(build_output=event.line)
    return pb.DeployResponse(result=deploy_result(event))


def deploy_result(result: DeployResult) -> pb.DeployResult:
    return pb.DeployResult(name=result.name, version=result.version, image=result.image,
                           url=result.url)


def daemon_info(info: DaemonInfo) -> pb.DaemonInfo:
    return pb.DaemonInfo(
        version=info.version, api_version=info.api_version,
        python_version=info.python_version, docker_version=info.docker_version,
        started_at=timestamp(info.started_at), domain=info.domain,
        url_template=info.url_template,
    )


def log_entry(entry: LogEntry) -> pb.LogEntry:
    return pb.LogEntry(
        time=timestamp(entry.time), function=entry.function, version=entry.version,
        instance=entry.instance, stream=entry.stream, request_id=entry.request_id,
        message=entry.message, node=entry.node,
    )


def from_log_entry(message: pb.LogEntry, node: str) -> LogEntry:
    """A peer's line (its own node's, since it was asked local_only), tagged with the
    peer's name as this node's table knows it."""
    return LogEntry(
        time=message.time.ToDatetime(tzinfo=UTC), function=message.function,
        version=message.version, instance=message.instance, stream=message.stream,
        request_id=message.request_id, message=message.message, node=node)


def nodes(rows: list[NodeRow], leader: str, self_id: str) -> pb.ListNodesResponse:
    return pb.ListNodesResponse(nodes=[
        pb.NodeInfo(id=r.id, name=r.name, state=r.state, grpc_address=r.grpc_address,
                    gateway_address=r.gateway_address, version=r.software_version,
                    instances=r.instances, cells=r.cells, load=r.load,
                    last_seen=timestamp(r.heartbeat_at), started_at=timestamp(r.started_at),
                    leader=r.id == leader, self=r.id == self_id)
        for r in rows])


def stats(functions: list[FunctionStatsRow], cells: list[CellStatsRow]) -> pb.GetStatsResponse:
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


def config(config: FunctionConfig, *, show_env: bool) -> pb.FunctionConfig:
    """Environment values are masked unless `show_env` (the caller's role was checked)."""
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


def function(view: FunctionView, *, show_env: bool = False) -> pb.Function:
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
        message.deployed_at.CopyFrom(timestamp(active.created_at))
        message.image = active.image
        message.code_sha256 = active.code_sha256
        message.code_size = active.code_size
        message.config.CopyFrom(config(active.config, show_env=show_env))
    return message


def key(key: ApiKey) -> pb.KeyInfo:
    """Never the secret or its digest: only what names and dates the key."""
    info = pb.KeyInfo(id=key.id, name=key.name, role=key.role)
    _set_times(info, created_at=key.created_at, revoked_at=key.revoked_at)
    return info


def schedule(schedule: Schedule, runs: list[float], status: str) -> pb.ScheduleInfo:
    info = pb.ScheduleInfo(
        id=schedule.id, function=schedule.function, cron=schedule.cron, tz=schedule.tz,
        data=schedule.data, overlap=schedule.overlap, last_result=schedule.last_result,
        last_invocation=schedule.last_invocation, last_invocation_status=status,
    )
    info.next_runs.extend(epoch(when) for when in runs)
    _set_times(info, last_run=schedule.last_run)
    return info


def invocation(invocation: AsyncInvocation) -> pb.InvocationInfo:
    info = pb.InvocationInfo(
        id=invocation.id, function=invocation.function, status=invocation.status,
        attempts=invocation.attempts, source=invocation.source, payload=invocation.payload,
        result=invocation.result or b"", last_error=invocation.last_error,
        status_code=invocation.status_code or 0,
    )
    _set_times(info, created_at=invocation.created_at,
               next_attempt_at=invocation.next_attempt_at, started_at=invocation.started_at,
               finished_at=invocation.finished_at)
    return info


def version_info(
    version: FunctionVersion, history: list[Activation], active: int
) -> pb.VersionInfo:
    """A version and the periods it was live: each activation of it until the next one."""
    info = pb.VersionInfo(
        number=version.number, image=version.image, image_id=version.image_id,
        config=config(version.config, show_env=False), code_sha256=version.code_sha256,
        code_size=version.code_size, created_at=timestamp(version.created_at),
        deployed_by=version.deployed_by, active=version.number == active,
        pruned=version.pruned, source_version=version.source_version or 0,
    )
    for index, activation in enumerate(history):
        if activation.version != version.number:
            continue
        period = pb.ActivePeriod(reason=activation.reason)
        getattr(period, "from").CopyFrom(timestamp(activation.activated_at))
        if index + 1 < len(history):
            period.until.CopyFrom(timestamp(history[index + 1].activated_at))
        info.active_periods.append(period)
    return info
