"""FunctionServicer over a real grpc.aio server and the generated stub, with the control
plane faked (tests/support/fake_control.py): each RPC's request becomes the right
control call, its result the right reply, and each daemon error the right status.

The Unix socket is the daemon's own transport (the caller is `local`, an admin); the
TCP cases add the real interceptor and key ring to see who the servicer thinks calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1.health import aio as health_aio

from lambdad import errors
from lambdad.api.interceptors import BearerAuthInterceptor
from lambdad.api.server import build_server
from lambdad.api.servicer import MAX_CHUNK_BYTES
from lambdad.api.status import GRPC_CODES, REASON_KEY
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.auth import ApiKey, KeyRing
from lambdad.auth.keys import digest, new_secret
from lambdad.control import DeployHeader, DeployResult, DirectResult
from lambdad.functions import Activation, Overrides
from lambdad.metrics import Metrics
from lambdad.metrics.stats import WindowStats
from lambdad.runtime.cells import CellClass, ClassStats
from tests.support.fake_control import (
    WHEN,
    FakeControl,
    sample_invocation,
    sample_key,
    sample_log,
    sample_schedule,
    sample_version,
    sample_view,
)

T = TypeVar("T")
Stub = pb_grpc.FunctionServiceStub


@contextlib.asynccontextmanager
async def _served(control: FakeControl, *, metrics: Metrics | None = None,
                  keys: KeyRing | None = None) -> AsyncIterator[tuple[Stub, str]]:
    """The stub over a Unix socket, or over loopback TCP behind the key check with `keys`.
    Yields the stub and the channel target."""
    interceptors = [BearerAuthInterceptor(keys)] if keys is not None else None
    server = build_server(control, health_aio.HealthServicer(),  # type: ignore[arg-type]
                          interceptors=interceptors, metrics=metrics, keys=keys)
    # A short folder: a Unix socket's path must fit in 108 bytes, tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="api-", dir="/tmp") as folder:
        if keys is None:
            target = f"unix:{Path(folder) / 'api.sock'}"
            server.add_insecure_port(target)
        else:
            target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                yield pb_grpc.FunctionServiceStub(channel), target
        finally:
            await server.stop(None)


def _run(control: FakeControl, call: Callable[[Stub], Awaitable[T]], **served: Any) -> T:
    async def scenario() -> T:
        async with _served(control, **served) as (stub, _):
            return await call(stub)
    return asyncio.run(scenario())


def _rpc_error(control: FakeControl, call: Callable[[Stub], Awaitable[Any]],
               **served: Any) -> tuple[grpc.StatusCode, str, str]:
    """(code, details, lambda-error-reason) of a call that must fail."""
    async def scenario() -> tuple[grpc.StatusCode, str, str]:
        async with _served(control, **served) as (stub, _):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(stub)
            exc = failed.value
            trailing = dict(exc.trailing_metadata() or ())
            return exc.code(), exc.details() or "", str(trailing.get(REASON_KEY, ""))
    return asyncio.run(scenario())


# Invoke


def test_invoke_passes_name_payload_and_pinned_version_and_returns_the_result() -> None:
    control = FakeControl()
    control.replies["invoke"] = DirectResult(request_id="r-1", status=201, payload=b'{"ok": 1}',
                                             function_error="Unhandled", version=3,
                                             cold_start=True)
    reply = _run(control, lambda stub: stub.Invoke(
        pb.InvokeRequest(name="greet", payload=b'{"a": 1}', version=3)))
    assert control.called("invoke") == [(("greet", b'{"a": 1}'), {"version": 3})]
    assert (reply.status_code, reply.payload, reply.function_error, reply.request_id,
            reply.executed_version, reply.cold_start) == (201, b'{"ok": 1}', "Unhandled",
                                                          "r-1", 3, True)


def test_invoke_without_version_calls_the_active_one() -> None:
    control = FakeControl()
    control.replies["invoke"] = DirectResult("r", 200, b"{}", "", 1, False)
    _run(control, lambda stub: stub.Invoke(pb.InvokeRequest(name="greet")))
    assert control.called("invoke") == [(("greet", b""), {"version": None})]


def test_an_event_invoke_is_queued_and_answered_202_with_its_id() -> None:
    control = FakeControl()
    control.replies["enqueue"] = "inv-42"
    reply = _run(control, lambda stub: stub.Invoke(pb.InvokeRequest(
        name="greet", payload=b"{}", type=pb.INVOCATION_TYPE_EVENT)))
    assert control.called("enqueue") == [(("greet", b"{}"), {"source": "api"})]
    assert not control.called("invoke")
    assert (reply.status_code, reply.request_id) == (202, "inv-42")


# Functions


def test_get_function_carries_every_field_and_masks_env_values() -> None:
    control = FakeControl()
    control.replies["get_function"] = sample_view(active=sample_version(4))
    fn = _run(control, lambda stub: stub.GetFunction(pb.GetFunctionRequest(name="greet")))
    assert control.called("get_function") == [(("greet",), {})]
    assert (fn.name, fn.status, fn.url, fn.version, fn.image, fn.code_sha256, fn.code_size) == (
        "greet", pb.FUNCTION_STATUS_READY, "http://greet.localhost:8080", 4, "lambda/greet:4",
        "ab" * 32, 4321)
    assert fn.deployed_at.ToDatetime(tzinfo=UTC) == WHEN
    i = fn.instances
    assert (i.running, i.busy, i.starting, i.draining, i.queued) == (5, 2, 1, 3, 6)
    c = fn.config
    assert (c.runtime, c.handler, c.timeout_seconds, c.memory_mb, c.network, c.cpu,
            c.pids_limit) == ("python3.11", "app.main", 17, 256, "bridge", 0.5, 99)
    s = c.scaling
    assert (s.concurrency, s.min_instances, s.max_instances, s.idle_timeout_seconds,
            s.queue_timeout_seconds) == (3, 1, 7, 45, 12)
    assert dict(c.env) == {"TOKEN": "****"}


def test_get_function_show_env_on_the_socket_shows_the_values() -> None:
    control = FakeControl()
    control.replies["get_function"] = sample_view(active=sample_version(4))
    fn = _run(control, lambda stub: stub.GetFunction(
        pb.GetFunctionRequest(name="greet", show_env=True)))
    assert dict(fn.config.env) == {"TOKEN": "s3cret"}


def test_list_functions_maps_each_view_and_one_never_deployed_has_no_version() -> None:
    control = FakeControl()
    control.replies["list_functions"] = [
        sample_view("greet", active=sample_version(2)),
        sample_view("fresh", status="deploying"),
    ]
    reply = _run(control, lambda stub: stub.ListFunctions(pb.ListFunctionsRequest()))
    greet, fresh = reply.functions
    assert (greet.name, greet.version, greet.status) == ("greet", 2, pb.FUNCTION_STATUS_READY)
    assert (fresh.name, fresh.version, fresh.status) == ("fresh", 0,
                                                         pb.FUNCTION_STATUS_DEPLOYING)
    assert not fresh.HasField("config") and not fresh.HasField("deployed_at")


def test_delete_function_reports_what_was_removed() -> None:
    control = FakeControl()
    control.replies["delete"] = (3, 2)
    reply = _run(control, lambda stub: stub.DeleteFunction(
        pb.DeleteFunctionRequest(name="greet")))
    assert control.called("delete") == [(("greet",), {})]
    assert (reply.name, reply.versions_removed, reply.instances_removed) == ("greet", 3, 2)


def test_get_stats_maps_windows_and_cells_and_empty_name_means_all() -> None:
    control = FakeControl()
    window = WindowStats(window="5m", invocations=9, error_rate=0.25, p50=0.01, p95=0.2,
                         p99=0.5, cold_start_rate=0.125, instances_max=4)
    cells = ClassStats(CellClass(128, "none", 1.0, 256), ready=2, starting=1)
    control.replies["stats"] = ([("greet", [window], 3, 1024)], [(cells, 2048)])
    reply = _run(control, lambda stub: stub.GetStats(pb.GetStatsRequest()))
    assert control.called("stats") == [((None,), {})]
    (fn,) = reply.functions
    assert (fn.name, fn.instances_now, fn.memory_bytes) == ("greet", 3, 1024)
    (w,) = fn.windows
    assert (w.window, w.invocations, w.error_rate, w.p50_seconds, w.p95_seconds,
            w.p99_seconds, w.cold_start_rate, w.instances_max) == (
        "5m", 9, 0.25, 0.01, 0.2, 0.5, 0.125, 4)
    (c,) = reply.cell_pool
    assert (c.resource_class, c.ready, c.starting, c.memory_bytes) == (
        cells.cell_class.label(), 2, 1, 2048)
    _run(control, lambda stub: stub.GetStats(pb.GetStatsRequest(name="greet")))
    assert control.called("stats")[-1] == (("greet",), {})


# Versions and config


def test_list_versions_marks_the_active_one_and_its_periods() -> None:
    control = FakeControl()
    later = WHEN + timedelta(hours=1)
    history = [Activation(1, WHEN, "deploy"), Activation(2, later, "config")]
    control.replies["versions"] = (
        [sample_version(1), sample_version(2, pruned=True, source_version=1)], history, 2)
    reply = _run(control, lambda stub: stub.ListVersions(pb.ListVersionsRequest(name="greet")))
    assert control.called("versions") == [(("greet",), {})]
    one, two = reply.versions
    assert (one.number, one.active, one.pruned, one.source_version) == (1, False, False, 0)
    assert (two.number, two.active, two.pruned, two.source_version) == (2, True, True, 1)
    assert (one.image, one.image_id, one.code_sha256, one.code_size, one.deployed_by) == (
        "lambda/greet:1", f"sha256:{1:064d}", "ab" * 32, 4321, "ci")
    assert dict(one.config.env) == {"TOKEN": "****"}
    (period,) = one.active_periods
    assert period.reason == "deploy"
    assert getattr(period, "from").ToDatetime(tzinfo=UTC) == WHEN
    assert period.until.ToDatetime(tzinfo=UTC) == later
    (current,) = two.active_periods
    assert current.reason == "config" and not current.HasField("until")


def test_rollback_maps_version_zero_to_the_previous_one_and_answers_the_url() -> None:
    control = FakeControl()
    control.replies["rollback"] = (2, 3)
    reply = _run(control, lambda stub: stub.Rollback(pb.RollbackRequest(name="greet")))
    assert control.called("rollback") == [(("greet", None), {})]
    assert (reply.name, reply.version, reply.previous_version, reply.url) == (
        "greet", 2, 3, "http://greet.localhost:8080")
    _run(control, lambda stub: stub.Rollback(pb.RollbackRequest(name="greet", to_version=1)))
    assert control.called("rollback")[-1] == (("greet", 1), {})


def test_update_config_passes_only_the_fields_set() -> None:
    control = FakeControl()
    control.replies["update_config"] = DeployResult("greet", 5, "lambda/greet:2", "http://u")
    overrides = pb.ConfigOverrides(timeout_seconds=9, min_instances=0, cpu=0.25,
                                   network="none", env={"A": "1"})
    reply = _run(control, lambda stub: stub.UpdateConfig(
        pb.UpdateConfigRequest(name="greet", overrides=overrides)))
    # min_instances=0 is set (proto3 optional), the other settings are not.
    assert control.called("update_config") == [(("greet", Overrides(
        timeout_s=9, min_instances=0, cpu=0.25, network="none", env={"A": "1"})), {})]
    assert (reply.name, reply.version, reply.image, reply.url) == (
        "greet", 5, "lambda/greet:2", "http://u")


def test_every_config_override_reaches_the_control_plane() -> None:
    control = FakeControl()
    control.replies["update_config"] = DeployResult("greet", 5, "i", "u")
    overrides = pb.ConfigOverrides(
        handler="app.run", timeout_seconds=9, memory_mb=512, env={"B": "2"}, network="bridge",
        cpu=2.0, concurrency=4, min_instances=1, max_instances=8, idle_timeout_seconds=60)
    _run(control, lambda stub: stub.UpdateConfig(
        pb.UpdateConfigRequest(name="greet", overrides=overrides)))
    ((_, given), _) = control.called("update_config")[0]
    assert given == Overrides(handler="app.run", timeout_s=9, memory_mb=512, env={"B": "2"},
                              network="bridge", cpu=2.0, concurrency=4, min_instances=1,
                              max_instances=8, idle_timeout_s=60)


def test_get_version_answers_the_daemon_info() -> None:
    control = FakeControl()
    info = _run(control, lambda stub: stub.GetVersion(pb.GetVersionRequest()))
    assert (info.version, info.api_version, info.python_version, info.docker_version,
            info.domain, info.url_template) == ("9.8.7", "v1", "3.11.2", "24.0.5", "localhost",
                                                "http://{name}.localhost:8080")
    assert info.started_at.ToDatetime(tzinfo=UTC) == WHEN


# Keys, schedules, asynchronous invocations


def test_keys_are_created_listed_and_revoked_without_their_secret_digest() -> None:
    control = FakeControl()
    revoked = sample_key(revoked_at=1_700_000_100.5)
    control.replies.update(create_key=(sample_key(), "lk_secret"), list_keys=[sample_key()],
                           revoke_key=revoked)

    async def calls(stub: Stub) -> tuple[Any, Any, Any, Any]:
        return (await stub.CreateKey(pb.CreateKeyRequest(name="ci", role="deployer")),
                await stub.CreateKey(pb.CreateKeyRequest(name="ro")),
                await stub.ListKeys(pb.ListKeysRequest()),
                await stub.RevokeKey(pb.RevokeKeyRequest(name_or_id="ci")))

    created, default_role, listed, gone = _run(control, calls)
    assert control.called("create_key") == [(("ci", "deployer"), {}), (("ro", "invoker"), {})]
    assert control.called("revoke_key") == [(("ci",), {})]
    assert created.secret == "lk_secret"
    key = created.key
    assert (key.id, key.name, key.role) == ("k1d", "ci", "deployer")
    assert key.created_at.ToDatetime(tzinfo=UTC).timestamp() == 1_700_000_000.25
    assert not key.HasField("revoked_at") and "ff" not in str(key)
    assert [k.name for k in listed.keys] == ["ci"]
    assert gone.revoked_at.ToDatetime(tzinfo=UTC).timestamp() == 1_700_000_100.5
    assert default_role.key.name == "ci"


def test_schedules_are_created_with_their_next_three_runs_listed_and_deleted() -> None:
    control = FakeControl()
    control.replies.update(
        create_schedule=sample_schedule(),
        schedules=[(sample_schedule(), 1_700_000_600.0, "succeeded"),
                   (sample_schedule(id="sch2", last_run=None), None, "")],
        delete_schedule=sample_schedule(),
    )

    async def calls(stub: Stub) -> tuple[Any, Any, Any]:
        return (await stub.CreateSchedule(pb.CreateScheduleRequest(
                    name="greet", cron="*/5 * * * *", tz="Europe/Paris", data=b'{"a": 1}',
                    overlap="replace")),
                await stub.ListSchedules(pb.ListSchedulesRequest(name="greet")),
                await stub.DeleteSchedule(pb.DeleteScheduleRequest(id="sch")))

    before = time.time()
    created, listed, deleted = _run(control, calls)
    assert control.called("create_schedule") == [
        (("greet", "*/5 * * * *", "Europe/Paris", b'{"a": 1}', "replace"), {})]
    assert control.called("schedules") == [(("greet",), {})]
    assert control.called("delete_schedule") == [(("sch",), {})]
    assert (created.id, created.function, created.cron, created.tz, created.data,
            created.overlap, created.last_result, created.last_invocation) == (
        "sch1", "greet", "*/5 * * * *", "Europe/Paris", b'{"a": 1}', "replace", "ok", "inv9")
    runs = [stamp.ToDatetime(tzinfo=UTC).timestamp() for stamp in created.next_runs]
    assert len(runs) == 3 and before < runs[0] < runs[1] < runs[2]
    assert all(run % 300 == 0 for run in runs)  # every five minutes, on the minute
    assert created.last_run.ToDatetime(tzinfo=UTC).timestamp() == 1_700_000_300.5
    first, second = listed.schedules
    assert [s.ToDatetime(tzinfo=UTC).timestamp() for s in first.next_runs] == [1_700_000_600.0]
    assert first.last_invocation_status == "succeeded"
    assert (second.id, list(second.next_runs), second.HasField("last_run")) == ("sch2", [],
                                                                                 False)
    assert (deleted.id, list(deleted.next_runs)) == ("sch1", [])


def test_invocations_are_listed_shown_and_redriven() -> None:
    control = FakeControl()
    queued = sample_invocation(id="inv2", status="queued", started_at=None, finished_at=None,
                               status_code=None, result=None, last_error="")
    control.replies.update(invocations=[sample_invocation(), queued],
                           invocation=sample_invocation(), redrive=7)

    async def calls(stub: Stub) -> tuple[Any, Any, Any]:
        return (await stub.ListInvocations(pb.ListInvocationsRequest(
                    name="greet", status="failed", limit=20)),
                await stub.GetInvocation(pb.GetInvocationRequest(id="inv")),
                await stub.Redrive(pb.RedriveRequest(all_failed_of="greet")))

    listed, shown, redriven = _run(control, calls)
    assert control.called("invocations") == [(("greet", "failed", 20), {})]
    assert control.called("invocation") == [(("inv",), {})]
    assert control.called("redrive") == [(("", "greet"), {})]
    assert redriven.redriven == 7
    assert (shown.id, shown.function, shown.status, shown.attempts, shown.source,
            shown.payload, shown.result, shown.last_error, shown.status_code) == (
        "inv1", "greet", "failed", 3, "schedule", b'{"x": 2}', b'{"error": "boom"}', "boom", 500)
    assert [shown.created_at.seconds, shown.next_attempt_at.seconds, shown.started_at.seconds,
            shown.finished_at.seconds] == [1_700_000_000, 1_700_000_060, 1_700_000_001,
                                           1_700_000_002]
    fresh = listed.invocations[1]
    assert (fresh.id, fresh.result, fresh.status_code) == ("inv2", b"", 0)
    assert not fresh.HasField("started_at") and not fresh.HasField("finished_at")


# Deploy: a client stream in, a server stream out


def _upload(header: pb.DeployHeader, *chunks: bytes) -> list[pb.DeployRequest]:
    return [pb.DeployRequest(header=header), *(pb.DeployRequest(chunk=c) for c in chunks)]


async def _deploy(stub: Stub, requests: list[pb.DeployRequest]) -> list[pb.DeployResponse]:
    return [reply async for reply in stub.Deploy(iter(requests))]


def test_deploy_hands_header_and_chunks_over_and_streams_progress_back() -> None:
    control = FakeControl()
    header = pb.DeployHeader(name="greet", size=6, sha256="ABCDEF", no_cache=True,
                             overrides=pb.ConfigOverrides(memory_mb=64, env={"K": "v"}))
    replies = _run(control, lambda stub: _deploy(stub, _upload(header, b"abc", b"def")))
    assert control.called("deploy") == [((DeployHeader(
        name="greet", size=6, sha256="abcdef", overrides=Overrides(memory_mb=64, env={"K": "v"}),
        no_cache=True),), {"deployed_by": "local"})]
    assert control.received == [b"abc", b"def"]
    kinds = [reply.WhichOneof("kind") for reply in replies]
    assert kinds == ["progress", "build_output", "progress", "result"]
    started, output, done, result = replies
    assert (started.progress.step, started.progress.total_steps, started.progress.title,
            started.progress.state) == (2, 3, "Building image", pb.DeployProgress.STATE_STARTED)
    assert done.progress.state == pb.DeployProgress.STATE_DONE
    assert output.build_output == "Step 1/3"
    r = result.result
    assert (r.name, r.version, r.image, r.url) == (
        "greet", 4, "lambda/greet:4", "http://greet.localhost:8080")


def test_deploy_must_start_with_the_header() -> None:
    control = FakeControl()
    code, details, reason = _rpc_error(control, lambda stub: _deploy(
        stub, [pb.DeployRequest(chunk=b"abc")]))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument")
    assert "header" in details and not control.calls


def test_deploy_accepts_only_chunks_after_the_header() -> None:
    control = FakeControl()
    header = pb.DeployHeader(name="greet", size=3)
    code, details, _ = _rpc_error(control, lambda stub: _deploy(
        stub, [*_upload(header, b"abc"), pb.DeployRequest(header=header)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "only chunk" in details
    assert control.received == [b"abc"]


def test_deploy_refuses_a_chunk_over_the_limit() -> None:
    control = FakeControl()
    header = pb.DeployHeader(name="greet", size=MAX_CHUNK_BYTES + 1)
    code, details, _ = _rpc_error(control, lambda stub: _deploy(
        stub, _upload(header, b"x" * (MAX_CHUNK_BYTES + 1))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and str(MAX_CHUNK_BYTES) in details
    assert control.received == []


def test_a_failed_build_ends_the_deploy_with_its_reason() -> None:
    control = FakeControl()
    control.errors["deploy"] = errors.BuildFailed("pip failed\nERROR: no such package")
    code, details, reason = _rpc_error(control, lambda stub: _deploy(
        stub, _upload(pb.DeployHeader(name="greet"), b"abc")))
    assert (code, details, reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                       "pip failed\nERROR: no such package", "BuildFailed")


# Logs: a server stream


def test_logs_turns_the_request_into_a_query_and_streams_the_entries() -> None:
    control = FakeControl()
    control.log_entries = [sample_log("one"), sample_log("two", stream="stdout")]
    before = datetime.now(UTC)

    async def read(stub: Stub) -> list[pb.LogEntry]:
        request = pb.LogsRequest(name="greet", since_seconds=600, request_id="req-1",
                                 version=4, tail=10)
        return [entry async for entry in stub.Logs(request)]

    entries = _run(control, read)
    ((query,), kwargs) = control.called("logs")[0]
    assert kwargs == {"follow": False, "local_only": False}
    assert (query.function, query.request_id, query.version, query.tail) == (
        "greet", "req-1", 4, 10)
    assert query.since is not None
    assert before - timedelta(seconds=601) < query.since < datetime.now(UTC) - timedelta(
        seconds=599)
    assert [(e.message, e.stream) for e in entries] == [("one", "stderr"), ("two", "stdout")]
    e = entries[0]
    assert (e.function, e.version, e.instance, e.request_id) == ("greet", 4, "i-1", "req-1")
    assert e.time.ToDatetime(tzinfo=UTC) == WHEN


def test_logs_without_since_reads_everything() -> None:
    control = FakeControl()
    _run(control, lambda stub: _drain(stub.Logs(pb.LogsRequest(name="greet"))))
    ((query,), _) = control.called("logs")[0]
    assert query.since is None


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


def test_following_logs_stream_lines_until_the_client_leaves() -> None:
    control = FakeControl()
    control.log_entries = [sample_log("backlog")]
    control.follow = asyncio.Event()  # never set: a follower waits for more

    async def follow(stub: Stub) -> str:
        call = stub.Logs(pb.LogsRequest(name="greet", follow=True))
        first = await asyncio.wait_for(call.read(), 10)
        call.cancel()
        return str(first.message)

    assert _run(control, follow) == "backlog"
    assert control.called("logs")[0][1] == {"follow": True, "local_only": False}


def test_logs_of_an_unknown_function_end_with_not_found() -> None:
    control = FakeControl()
    control.errors["logs"] = errors.NotFound("function 'nope' not found")
    code, details, reason = _rpc_error(control, lambda stub: _drain(
        stub.Logs(pb.LogsRequest(name="nope"))))
    assert (code, details, reason) == (grpc.StatusCode.NOT_FOUND, "function 'nope' not found",
                                       "NotFound")


# Errors: each class of the hierarchy, through a unary call, as its status


ERROR_CLASSES = [*GRPC_CODES, errors.BuildFailed, errors.PayloadTooLarge, errors.Throttled,
                 errors.Overloaded, errors.InstanceFailed, errors.LambdaError]
EXPECTED = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BuildFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Throttled: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.UNAVAILABLE,
    errors.InstanceFailed: grpc.StatusCode.UNAVAILABLE,
    errors.FunctionTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.LambdaError: grpc.StatusCode.INTERNAL,
}


@pytest.mark.parametrize("error", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_a_daemon_error_becomes_its_status_with_message_and_reason(
    error: type[errors.LambdaError],
) -> None:
    control = FakeControl()
    control.errors["invoke"] = error("it went wrong")
    code, details, reason = _rpc_error(control, lambda stub: stub.Invoke(
        pb.InvokeRequest(name="greet")))
    assert (code, details, reason) == (EXPECTED[error], "it went wrong", error.reason)


@pytest.mark.parametrize("rpc", [
    ("ListFunctions", "list_functions", pb.ListFunctionsRequest()),
    ("GetFunction", "get_function", pb.GetFunctionRequest(name="x")),
    ("DeleteFunction", "delete", pb.DeleteFunctionRequest(name="x")),
    ("GetStats", "stats", pb.GetStatsRequest()),
    ("CreateKey", "create_key", pb.CreateKeyRequest(name="x")),
    ("ListKeys", "list_keys", pb.ListKeysRequest()),
    ("RevokeKey", "revoke_key", pb.RevokeKeyRequest(name_or_id="x")),
    ("CreateSchedule", "create_schedule", pb.CreateScheduleRequest(name="x")),
    ("ListSchedules", "schedules", pb.ListSchedulesRequest()),
    ("DeleteSchedule", "delete_schedule", pb.DeleteScheduleRequest(id="x")),
    ("ListInvocations", "invocations", pb.ListInvocationsRequest(name="x")),
    ("GetInvocation", "invocation", pb.GetInvocationRequest(id="x")),
    ("Redrive", "redrive", pb.RedriveRequest(id="x")),
    ("ListVersions", "versions", pb.ListVersionsRequest(name="x")),
    ("Rollback", "rollback", pb.RollbackRequest(name="x")),
    ("UpdateConfig", "update_config", pb.UpdateConfigRequest(name="x")),
    ("Invoke", "enqueue", pb.InvokeRequest(name="x", type=pb.INVOCATION_TYPE_EVENT)),
], ids=lambda rpc: rpc[0] + ":" + rpc[1])
def test_every_unary_rpc_maps_its_errors(rpc: tuple[str, str, Any]) -> None:
    method, control_method, request = rpc
    control = FakeControl()
    control.errors[control_method] = errors.NotFound("no such thing")
    code, details, reason = _rpc_error(control, lambda stub: getattr(stub, method)(request))
    assert (code, details, reason) == (grpc.StatusCode.NOT_FOUND, "no such thing", "NotFound")
    assert [name for name, _, _ in control.calls] == [control_method]


def test_calls_are_counted_by_method_and_status_code() -> None:
    control = FakeControl()
    control.replies["list_keys"] = []
    control.errors["invoke"] = errors.NotFound("gone")
    metrics = Metrics()

    async def calls(stub: Stub) -> None:
        await stub.ListKeys(pb.ListKeysRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Invoke(pb.InvokeRequest(name="greet"))
        await _deploy(stub, _upload(pb.DeployHeader(name="greet"), b"abc"))

    _run(control, calls, metrics=metrics)

    def count(method: str, code: str) -> float | None:
        return metrics.registry.get_sample_value(
            "lambdad_grpc_requests_total", {"method": method, "code": code})

    assert count("ListKeys", "OK") == 1
    assert count("Invoke", "NOT_FOUND") == 1
    assert count("Deploy", "OK") == 1


# Over TCP: who the servicer thinks is calling


def _ring(role: str) -> tuple[KeyRing, str]:
    key_id, token = new_secret()
    salt = secrets.token_hex(16)
    ring = KeyRing([])
    ring.load([ApiKey(key_id, f"{role}-key", role, salt,
                      digest(salt, token.split("_", 2)[2]), time.time())])
    return ring, token


def test_over_tcp_an_invoker_may_not_read_environment_values() -> None:
    control = FakeControl()
    control.replies["get_function"] = sample_view(active=sample_version(4))
    ring, token = _ring("invoker")
    auth = (("authorization", f"Bearer {token}"),)
    code, details, reason = _rpc_error(control, lambda stub: stub.GetFunction(
        pb.GetFunctionRequest(name="greet", show_env=True), metadata=auth), keys=ring)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied")
    assert "invoker-key" in details and not control.calls
    masked = _run(control, lambda stub: stub.GetFunction(
        pb.GetFunctionRequest(name="greet"), metadata=auth), keys=ring)
    assert dict(masked.config.env) == {"TOKEN": "****"}


def test_over_tcp_a_deploy_is_recorded_as_the_key_that_made_it() -> None:
    control = FakeControl()
    ring, token = _ring("deployer")
    _run(control, lambda stub: _drain(stub.Deploy(
        iter(_upload(pb.DeployHeader(name="greet"), b"abc")),
        metadata=(("authorization", f"Bearer {token}"),))), keys=ring)
    ((_, kwargs),) = control.called("deploy")
    assert kwargs == {"deployed_by": "deployer-key"}
    shown = FakeControl()
    shown.replies["get_function"] = sample_view(active=sample_version(4))
    fn = _run(shown, lambda stub: stub.GetFunction(
        pb.GetFunctionRequest(name="greet", show_env=True),
        metadata=(("authorization", f"Bearer {token}"),)), keys=ring)
    assert dict(fn.config.env) == {"TOKEN": "s3cret"}

