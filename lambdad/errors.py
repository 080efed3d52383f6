"""The daemon's one exception hierarchy.

Every failure a client can see is one of these. The control API maps them to gRPC
status codes in one table (`lambdad.api.status`), the gateway to HTTP status codes
in another (`lambdad.httpstatus`); nothing else decides how an error looks.
`reason` is a stable machine-readable word the CLI turns into exit codes.
"""

from __future__ import annotations


class LambdaError(Exception):
    reason = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LambdaError):
    reason = "InvalidArgument"


class NotFound(LambdaError):
    reason = "NotFound"


class AlreadyExists(LambdaError):
    reason = "AlreadyExists"


class FailedPrecondition(LambdaError):
    reason = "FailedPrecondition"


class BuildFailed(FailedPrecondition):
    """The function's image did not build; the message carries the last build lines."""

    reason = "BuildFailed"


class ResourceExhausted(LambdaError):
    reason = "ResourceExhausted"


class PayloadTooLarge(ResourceExhausted):
    reason = "PayloadTooLarge"


class Throttled(ResourceExhausted):
    """Too much at once; `retry_after` (seconds) becomes the gateway's Retry-After."""

    reason = "Throttled"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthenticated(LambdaError):
    reason = "Unauthenticated"


class PermissionDenied(LambdaError):
    reason = "PermissionDenied"


class Unavailable(LambdaError):
    reason = "Unavailable"


class Overloaded(Unavailable):
    """The daemon is short of something every request shares (memory for request
    bodies): HTTP 503 with Retry-After, gRPC UNAVAILABLE; `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(Unavailable):
    """The store's database cannot be reached (PostgreSQL down, restarted, or the
    connection cut): gRPC UNAVAILABLE. The message names the database by its redacted
    URL; the next call reconnects on its own. Its reason stays "Unavailable": clients
    retry it as any other."""


class BlobRefused(Unavailable):
    """A blob fetched from the shared database is not what it should be (its size or
    sha256 differs, or a member is a link, a device, absolute or leaves its folder): it
    is refused before anything is extracted, and the start that needed it fails (503).
    Its reason stays "Unavailable"."""


class InstanceFailed(Unavailable):
    """The instance serving a request died or broke the protocol (HTTP 502)."""

    reason = "InstanceFailed"


class FunctionTimeout(LambdaError):
    """The function gave no answer within its timeout (HTTP 504)."""

    reason = "FunctionTimeout"
