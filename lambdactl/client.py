"""Thin wrapper over the generated gRPC stubs: channel, metadata, error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, cast

import grpc

from lambdactl.exitcodes import CliError, ExitCode, exit_code_for
from lambdactl.target import Target
from lambdad.api.status import REASON_KEY
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc

CHUNK_SIZE = 64 * 1024
DEPLOY_TIMEOUT = 300.0  # a rollback or config change starts an instance
CONTROL_TIMEOUT = 120.0  # list/get/delete; deploy and invoke are bounded by the daemon
MAX_MESSAGE = 64 * 1024 * 1024  # invoke responses can be larger than grpc's 4 MiB default


def deploy_requests(header: pb.DeployHeader, code: IO[bytes]) -> Iterator[pb.DeployRequest]:
    """The deploy stream: the header, then the tarball in 64 KiB chunks."""
    yield pb.DeployRequest(header=header)
    while chunk := code.read(CHUNK_SIZE):
        yield pb.DeployRequest(chunk=chunk)


def error_from_rpc(exc: grpc.RpcError, target: Target) -> CliError:
    """Turn a failed call into the CLI's one-line error and exit code."""
    call = cast(grpc.Call, exc)
    code = call.code()
    details = (call.details() or "").strip()
    reason = None
    for key, value in call.trailing_metadata() or ():
        if key == REASON_KEY:
            reason = value if isinstance(value, str) else value.decode()
    exit_code = exit_code_for(code.name, reason)
    message = details or code.name.lower().replace("_", " ")
    if exit_code is ExitCode.UNREACHABLE:
        message = f"cannot reach lambdad at {target.address}: {message}"
    elif exit_code is ExitCode.AUTH and not target.is_unix and target.api_key is None:
        message += " (no API key: set LAMBDA_API_KEY or --api-key-file)"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and reason is None:
        message = f"lambdad did not answer in time: {message}"
    return CliError(message, exit_code)


class Client:
    def __init__(self, target: Target) -> None:
        self.target = target
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        if target.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=target.tls_ca)
            self._channel = grpc.secure_channel(target.address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target.address, options=options)
        # The generated stub is untyped; every method on it is Any.
        self._stub: Any = functions_pb2_grpc.FunctionServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = target.metadata()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._channel.close()

    def deploy(self, header: pb.DeployHeader, code: IO[bytes]) -> Any:
        """Start the deploy stream; the result iterates DeployResponse and has cancel()."""
        return self._stub.Deploy(deploy_requests(header, code), metadata=self._metadata)

    def invoke(self, name: str, payload: bytes, version: int = 0,
               event: bool = False) -> pb.InvokeResponse:
        kind = pb.INVOCATION_TYPE_EVENT if event else pb.INVOCATION_TYPE_REQUEST_RESPONSE
        return cast(
            pb.InvokeResponse,
            self._stub.Invoke(
                pb.InvokeRequest(name=name, payload=payload, version=version, type=kind),
                metadata=self._metadata,
            ),
        )

    def create_key(self, name: str, role: str) -> pb.CreatedKey:
        return cast(pb.CreatedKey, self._stub.CreateKey(
            pb.CreateKeyRequest(name=name, role=role), metadata=self._metadata,
            timeout=CONTROL_TIMEOUT))

    def list_keys(self) -> list[pb.KeyInfo]:
        reply = self._stub.ListKeys(pb.ListKeysRequest(), metadata=self._metadata,
                                    timeout=CONTROL_TIMEOUT)
        return list(reply.keys)

    def revoke_key(self, name_or_id: str) -> pb.KeyInfo:
        return cast(pb.KeyInfo, self._stub.RevokeKey(
            pb.RevokeKeyRequest(name_or_id=name_or_id), metadata=self._metadata,
            timeout=CONTROL_TIMEOUT))

    def create_schedule(self, request: pb.CreateScheduleRequest) -> pb.ScheduleInfo:
        return cast(pb.ScheduleInfo, self._stub.CreateSchedule(
            request, metadata=self._metadata, timeout=CONTROL_TIMEOUT))

    def list_schedules(self, name: str) -> list[pb.ScheduleInfo]:
        reply = self._stub.ListSchedules(pb.ListSchedulesRequest(name=name),
                                         metadata=self._metadata, timeout=CONTROL_TIMEOUT)
        return list(reply.schedules)

    def delete_schedule(self, schedule_id: str) -> pb.ScheduleInfo:
        return cast(pb.ScheduleInfo, self._stub.DeleteSchedule(
            pb.DeleteScheduleRequest(id=schedule_id), metadata=self._metadata,
            timeout=CONTROL_TIMEOUT))

    def list_invocations(self, name: str, status: str) -> list[pb.InvocationInfo]:
        reply = self._stub.ListInvocations(
            pb.ListInvocationsRequest(name=name, status=status), metadata=self._metadata,
            timeout=CONTROL_TIMEOUT)
        return list(reply.invocations)

    def get_invocation(self, invocation_id: str) -> pb.InvocationInfo:
        return cast(pb.InvocationInfo, self._stub.GetInvocation(
            pb.GetInvocationRequest(id=invocation_id), metadata=self._metadata,
            timeout=CONTROL_TIMEOUT))

    def redrive(self, invocation_id: str, all_failed_of: str) -> int:
        reply = self._stub.Redrive(
            pb.RedriveRequest(id=invocation_id, all_failed_of=all_failed_of),
            metadata=self._metadata, timeout=CONTROL_TIMEOUT)
        return int(reply.redriven)

    def get_version(self) -> pb.DaemonInfo:
        return cast(pb.DaemonInfo, self._stub.GetVersion(
            pb.GetVersionRequest(), metadata=self._metadata, timeout=CONTROL_TIMEOUT))

    def list_nodes(self) -> list[pb.NodeInfo]:
        reply = self._stub.ListNodes(pb.ListNodesRequest(), metadata=self._metadata,
                                     timeout=CONTROL_TIMEOUT)
        return list(reply.nodes)

    def list_functions(self) -> list[pb.Function]:
        reply = self._stub.ListFunctions(
            pb.ListFunctionsRequest(), metadata=self._metadata, timeout=CONTROL_TIMEOUT
        )
        return list(cast(pb.ListFunctionsResponse, reply).functions)

    def get_function(self, name: str, show_env: bool = False) -> pb.Function:
        return cast(
            pb.Function,
            self._stub.GetFunction(
                pb.GetFunctionRequest(name=name, show_env=show_env), metadata=self._metadata,
                timeout=CONTROL_TIMEOUT,
            ),
        )

    def logs(self, request: pb.LogsRequest) -> Any:
        """A server stream of LogEntry; with follow it ends only when cancelled."""
        return self._stub.Logs(request, metadata=self._metadata)

    def stats(self, name: str) -> tuple[list[pb.FunctionStats], list[pb.CellPoolClass]]:
        reply = self._stub.GetStats(
            pb.GetStatsRequest(name=name), metadata=self._metadata, timeout=CONTROL_TIMEOUT
        )
        return list(reply.functions), list(reply.cell_pool)

    def list_versions(self, name: str) -> list[pb.VersionInfo]:
        reply = self._stub.ListVersions(
            pb.ListVersionsRequest(name=name), metadata=self._metadata, timeout=CONTROL_TIMEOUT
        )
        return list(reply.versions)

    def rollback(self, name: str, to_version: int) -> pb.RollbackResponse:
        return cast(
            pb.RollbackResponse,
            self._stub.Rollback(
                pb.RollbackRequest(name=name, to_version=to_version), metadata=self._metadata,
                timeout=DEPLOY_TIMEOUT,
            ),
        )

    def update_config(self, name: str, overrides: pb.ConfigOverrides) -> pb.DeployResult:
        return cast(
            pb.DeployResult,
            self._stub.UpdateConfig(
                pb.UpdateConfigRequest(name=name, overrides=overrides), metadata=self._metadata,
                timeout=DEPLOY_TIMEOUT,
            ),
        )

    def delete_function(self, name: str) -> pb.DeleteFunctionResponse:
        return cast(
            pb.DeleteFunctionResponse,
            self._stub.DeleteFunction(
                pb.DeleteFunctionRequest(name=name),
                metadata=self._metadata,
                timeout=CONTROL_TIMEOUT,
            ),
        )
