"""The one table from gRPC status / daemon reason to exit codes."""

from __future__ import annotations

import inspect

import grpc
import pytest

import lambdad.errors
from lambdactl.exitcodes import REASON_EXIT, STATUS_EXIT, ExitCode, exit_code_for


def test_every_daemon_reason_has_an_exit_code() -> None:
    reasons = {
        cls.reason
        for _, cls in inspect.getmembers(lambdad.errors, inspect.isclass)
        if issubclass(cls, lambdad.errors.LambdaError)
    }
    assert reasons <= set(REASON_EXIT), reasons - set(REASON_EXIT)


def test_status_names_are_real_grpc_codes() -> None:
    assert set(STATUS_EXIT) <= {code.name for code in grpc.StatusCode}


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("UNAVAILABLE", None, 69),
        ("UNAVAILABLE", "Unavailable", 1),
        ("UNAVAILABLE", "InstanceFailed", 9),
        ("NOT_FOUND", "NotFound", 4),
        ("NOT_FOUND", None, 4),
        ("INVALID_ARGUMENT", None, 5),
        ("INVALID_ARGUMENT", "InvalidArgument", 5),
        ("RESOURCE_EXHAUSTED", "PayloadTooLarge", 5),
        ("RESOURCE_EXHAUSTED", None, 5),
        ("RESOURCE_EXHAUSTED", "Throttled", 9),
        ("OUT_OF_RANGE", None, 5),
        ("FAILED_PRECONDITION", "BuildFailed", 6),
        ("FAILED_PRECONDITION", None, 8),
        ("ALREADY_EXISTS", "AlreadyExists", 8),
        ("ABORTED", None, 8),
        ("UNAUTHENTICATED", None, 77),
        ("PERMISSION_DENIED", "PermissionDenied", 77),
        ("DEADLINE_EXCEEDED", "FunctionTimeout", 9),
        ("DEADLINE_EXCEEDED", None, 1),
        ("INTERNAL", "Internal", 1),
        ("UNKNOWN", None, 1),
        ("UNIMPLEMENTED", None, 1),
        ("NOT_FOUND", "SomeFutureReason", 4),  # unknown reason: the status decides
        ("CANCELLED", None, 130),
    ],
)
def test_exit_code_for(status: str, reason: str | None, expected: int) -> None:
    assert exit_code_for(status, reason) == expected


def test_codes_are_stable() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 4, 5, 6, 8, 9, 69, 77, 78, 130]
