import json
import logging

import pytest

from lambdad import errors
from lambdad.httpstatus import error_response, status_for


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.InvalidArgument("bad"), 400, "bad_request"),
        (errors.Unauthenticated("who"), 401, "unauthenticated"),
        (errors.PermissionDenied("no"), 403, "forbidden"),
        (errors.NotFound("no function named 'x'"), 404, "not_found"),
        (errors.PayloadTooLarge("big"), 413, "payload_too_large"),
        (errors.Throttled("slow down"), 429, "throttled"),
        (errors.ResourceExhausted("full"), 429, "resource_exhausted"),
        (errors.InstanceFailed("died"), 502, "bad_gateway"),
        (errors.Unavailable("none"), 503, "unavailable"),
        (errors.FunctionTimeout("late"), 504, "gateway_timeout"),
        (errors.AlreadyExists("dup"), 500, "internal"),
        (errors.BuildFailed("broken"), 500, "internal"),
        (RuntimeError("bug"), 500, "internal"),
    ],
)
def test_status_table(exc: Exception, status: int, code: str) -> None:
    assert status_for(exc) == (status, code)
    got_status, headers, body = error_response(exc, "rid-1")
    assert got_status == status
    assert json.loads(body)["error"] == code
    assert (b"content-type", b"application/json") in headers
    assert (b"lambda-request-id", b"rid-1") in headers
    assert (b"content-length", str(len(body)).encode()) in headers


def test_daemon_error_message_is_passed_on() -> None:
    _, _, body = error_response(errors.NotFound("no function named 'x'"), "r")
    assert json.loads(body) == {"error": "not_found", "message": "no function named 'x'"}


def test_unexpected_error_is_generic_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="lambdad.gateway"):
        _, _, body = error_response(RuntimeError("secret detail"), "rid-9")
    assert b"secret detail" not in body
    assert b"rid-9" in body
    assert caplog.records and caplog.records[0].exc_info is not None


def test_throttled_has_retry_after() -> None:
    _, headers, _ = error_response(errors.Throttled("slow down"), "r")
    assert (b"retry-after", b"1") in headers
    exc = errors.Throttled("slow down")
    exc.retry_after = 2.5  # type: ignore[attr-defined]
    _, headers, _ = error_response(exc, "r")
    assert (b"retry-after", b"3") in headers
    _, headers, _ = error_response(errors.ResourceExhausted("full"), "r")
    assert not [v for n, v in headers if n == b"retry-after"]


def test_no_request_id_header_when_unknown() -> None:
    _, headers, _ = error_response(errors.InvalidArgument("bad"), None)
    assert not [v for n, v in headers if n == b"lambda-request-id"]
