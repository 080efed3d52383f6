"""The one table from daemon errors to gRPC status codes.

The error's `reason` travels as trailing metadata `lambda-error-reason`, so the CLI
can tell a failed build from other FAILED_PRECONDITIONs without parsing messages.
"""

from __future__ import annotations

import grpc

from lambdad import errors

REASON_KEY = "lambda-error-reason"

GRPC_CODES: dict[type[errors.LambdaError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.FunctionTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(exc: errors.LambdaError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = GRPC_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
