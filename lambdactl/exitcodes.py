"""The one table from daemon errors to lambdactl exit codes.

Kept free of grpc so the parser (and the man page built from it) can show it.
The daemon's `reason` word (trailing metadata `lambda-error-reason`) decides
first; without a known reason the gRPC status code does. The three codes that
describe the environment rather than the call follow sysexits(3), so scripts can
tell "try again later" (69) from "fix the credentials" (77) or "fix the config" (78).

======  ===========================================================================
 Code   Meaning
======  ===========================================================================
   0    success
   1    failure: the function raised during invoke, an internal daemon error,
        anything not listed below
   2    usage error: bad command line, bad LAMBDA_HOST
   4    not found: no such function (NOT_FOUND)
   5    invalid input: bad arguments, invalid JSON data, bad function folder or
        lambda.toml, payload too large (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
        OUT_OF_RANGE)
   6    the function's image failed to build (reason BuildFailed)
   8    conflict: already exists, wrong state, aborted (ALREADY_EXISTS,
        FAILED_PRECONDITION, ABORTED)
   9    the function could not answer: it timed out, its instance failed, or it
        is throttled (reasons FunctionTimeout, InstanceFailed, Throttled)
  69    lambdad is unreachable (EX_UNAVAILABLE): no socket, connection refused,
        UNAVAILABLE without a reason
  77    authentication (EX_NOPERM): missing/wrong API key, no permission
        (UNAUTHENTICATED, PERMISSION_DENIED)
  78    configuration (EX_CONFIG): a broken lambdactl config file, an unknown
        context, an unreadable API key file or TLS CA file
 130    interrupted (Ctrl-C)
======  ===========================================================================
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 4
    INVALID = 5
    BUILD_FAILED = 6
    CONFLICT = 8
    FUNCTION_FAILED = 9
    UNREACHABLE = 69  # sysexits EX_UNAVAILABLE
    AUTH = 77  # sysexits EX_NOPERM
    CONFIG = 78  # sysexits EX_CONFIG
    INTERRUPTED = 130


# Daemon reasons (lambdad/errors.py `reason` attributes). Subclass reasons are
# listed explicitly because they must win over their parent's status code.
REASON_EXIT: dict[str, ExitCode] = {
    "Internal": ExitCode.FAILURE,
    "InvalidArgument": ExitCode.INVALID,
    "NotFound": ExitCode.NOT_FOUND,
    "AlreadyExists": ExitCode.CONFLICT,
    "FailedPrecondition": ExitCode.CONFLICT,
    "BuildFailed": ExitCode.BUILD_FAILED,
    "ResourceExhausted": ExitCode.INVALID,
    "PayloadTooLarge": ExitCode.INVALID,
    "Throttled": ExitCode.FUNCTION_FAILED,
    "Unauthenticated": ExitCode.AUTH,
    "PermissionDenied": ExitCode.AUTH,
    # The daemon answered, so it is reachable: something behind it is not.
    "Unavailable": ExitCode.FAILURE,
    "InstanceFailed": ExitCode.FUNCTION_FAILED,
    "FunctionTimeout": ExitCode.FUNCTION_FAILED,
}

# gRPC status code names (grpc.StatusCode.X.name), used when there is no known reason.
STATUS_EXIT: dict[str, ExitCode] = {
    "OK": ExitCode.OK,
    "UNAVAILABLE": ExitCode.UNREACHABLE,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "INVALID_ARGUMENT": ExitCode.INVALID,
    "RESOURCE_EXHAUSTED": ExitCode.INVALID,
    "OUT_OF_RANGE": ExitCode.INVALID,
    "UNAUTHENTICATED": ExitCode.AUTH,
    "PERMISSION_DENIED": ExitCode.AUTH,
    "ALREADY_EXISTS": ExitCode.CONFLICT,
    "FAILED_PRECONDITION": ExitCode.CONFLICT,
    "ABORTED": ExitCode.CONFLICT,
    "CANCELLED": ExitCode.INTERRUPTED,
}


def exit_code_for(status: str, reason: str | None = None) -> ExitCode:
    """Exit code for a failed call: the reason if known, else the status name."""
    if reason and reason in REASON_EXIT:
        return REASON_EXIT[reason]
    return STATUS_EXIT.get(status, ExitCode.FAILURE)


EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    failure (the function raised, internal error)
  2    usage error
  4    function not found
  5    invalid input (arguments, JSON data, function folder, payload too large)
  6    image build failed
  8    conflict (already exists, wrong state)
  9    function timed out, its instance failed, or it is throttled
  69   lambdad is not reachable
  77   authentication or permission failure
  78   configuration error (config file, context, key or CA file)
  130  interrupted"""


class CliError(Exception):
    """An expected failure: printed as one `error: ...` line, never as a traceback."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
