"""The one table from daemon errors to HTTP responses: the gateway answers with it, and the
control plane records invocations with the status a caller saw (a use case must not depend on
the HTTP transport for it)."""

from __future__ import annotations

import json
import logging
import math

from lambdad import errors
from lambdad.runtime.invocation import Headers

log = logging.getLogger("lambdad.gateway")

# Looked up along the exception's MRO, so subclasses (InstanceFailed is an
# Unavailable) find their own row first and unknown subclasses their parent's.
STATUS: dict[type[errors.LambdaError], tuple[int, str]] = {
    errors.InvalidArgument: (400, "bad_request"),
    errors.Unauthenticated: (401, "unauthenticated"),
    errors.PermissionDenied: (403, "forbidden"),
    errors.NotFound: (404, "not_found"),
    errors.PayloadTooLarge: (413, "payload_too_large"),
    errors.Throttled: (429, "throttled"),
    errors.ResourceExhausted: (429, "resource_exhausted"),
    errors.InstanceFailed: (502, "bad_gateway"),
    errors.Unavailable: (503, "unavailable"),
    errors.FunctionTimeout: (504, "gateway_timeout"),
}
DEFAULT_RETRY_AFTER = 1  # seconds, when a Throttled or Overloaded error does not say


def status_for(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, "internal"


def json_error(
    status: int, code: str, message: str, request_id: str | None
) -> tuple[int, Headers, bytes]:
    """A complete JSON error response; also used for statuses no exception maps to (408)."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if request_id:
        headers.append((b"lambda-request-id", request_id.encode()))
    return status, headers, body


def error_response(exc: BaseException, request_id: str | None) -> tuple[int, Headers, bytes]:
    """Daemon errors carry a message meant for the caller; anything else is a bug."""
    status, code = status_for(exc)
    if isinstance(exc, errors.LambdaError):
        message = exc.message
        if status == 500:
            log.warning("request %s: unmapped %s: %s", request_id, exc.reason, message)
    else:
        message = f"internal error; the daemon log has the details for request {request_id}"
        log.error("request %s: unexpected error", request_id, exc_info=exc)
    status, headers, body = json_error(status, code, message, request_id)
    if isinstance(exc, errors.Throttled | errors.Overloaded):
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, int | float) or retry_after < 0:
            retry_after = DEFAULT_RETRY_AFTER
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    return status, headers, body
