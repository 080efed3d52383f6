"""The gateway's own refusals: what a request head alone decides, and the answers it
makes itself (a body too large, the body budget spent, too slow, malformed).

Pure: `check_head` looks at one parsed head and says where the request goes or how it is
refused, before a `100 Continue` or a byte of its body. Admission (the function and
version exist, the API key) and the body budget come after it, in the connection.
"""

from __future__ import annotations

import http
from dataclasses import dataclass

import h11

from lambdad import errors
from lambdad.gateway.responses import Reply
from lambdad.gateway.routing import route, subdomain
from lambdad.httpstatus import error_response, json_error

BODY_RETRY_AFTER = 2  # seconds: Retry-After when the body budget is spent


@dataclass(slots=True)
class Target:
    """Where a request goes: the function, a pinned version, whether it is an event."""

    function: str
    version: int | None
    event: bool
    length: int | None  # the declared Content-Length; None for chunked or no body


@dataclass(frozen=True)
class Refusal:
    """The answer to a refused head. `close`: close after it whatever the body; else the
    connection is kept when there is no body to skip."""

    reply: Reply
    close: bool
    version: int | None = None


def check_head(request: h11.Request, request_id: str, *, domain: str, max_header_bytes: int,
               max_body_bytes: int, events: bool) -> Target | Refusal:
    """Everything the head decides, in order; `events`: whether `Lambda-Invocation-Type:
    Event` requests are queued (else they are ordinary requests). One pass over the
    headers collects what the rules look at (h11 has lowercased the names)."""
    host: str | None = None
    hosts = 0
    head_size = len(request.target)
    length: int | None = None
    chunked = False
    is_event = False
    for name, value in request.headers:
        head_size += len(name) + len(value) + 4
        if name == b"host":
            hosts += 1
            if host is None:
                host = value.decode("latin-1")
        elif name == b"content-length":
            if length is None:
                length = int(value)  # h11 checked it is digits, and one value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"lambda-invocation-type" and value.strip().lower() == b"event":
            is_event = events
    if hosts > 1:
        return Refusal(error_response(errors.InvalidArgument("more than one Host header"),
                                      request_id), close=True)
    # h11 bounds only a head that arrives in pieces; one that arrives whole is checked here.
    if head_size > max_header_bytes:
        return Refusal(json_error(
            431, "request_header_fields_too_large",
            f"the request head is larger than {max_header_bytes} bytes", request_id), close=True)
    if chunked and length is not None:  # RFC 9112 lets TE win; refusing cannot be smuggled
        return Refusal(error_response(errors.InvalidArgument(
            "the request has both Content-Length and Transfer-Encoding"), request_id), close=True)
    target = route(host, domain)
    version = target.version if target else None
    if request.method == b"CONNECT":
        msg = "CONNECT is not supported by the gateway"
        return Refusal(json_error(405, "method_not_allowed", msg, request_id), close=True)
    if length is not None and length > max_body_bytes:
        return Refusal(error_response(too_large(max_body_bytes), request_id), close=True,
                       version=version)
    if target is None:
        return Refusal(error_response(_no_route(host, domain), request_id), close=False)
    if is_event and version is not None:
        return Refusal(error_response(errors.InvalidArgument(
            "asynchronous invocations run the active version: send them to "
            f"{target.function}.{domain}, not to a pinned version"), request_id), close=False)
    return Target(target.function, version, is_event, length)


def _no_route(host: str | None, domain: str) -> errors.NotFound:
    name = subdomain(host, domain)
    if name is not None:
        return errors.NotFound(f"no function named '{name}'")
    if host:
        return errors.NotFound(f"no function at host '{host}'")
    return errors.NotFound("the request has no Host header naming a function")


def too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"the request body is larger than the {limit} byte limit")


def overloaded() -> errors.Overloaded:
    return errors.Overloaded(
        "the gateway is holding as many request bodies as it may (max_buffered_bodies); "
        "try again shortly", retry_after=BODY_RETRY_AFTER)


def too_slow(request_id: str | None) -> Reply:
    return json_error(408, "request_timeout", "the request was not received in time", request_id)


def malformed(exc: h11.RemoteProtocolError, request_id: str | None) -> Reply:
    status = exc.error_status_hint
    code = "bad_request" if status == 400 else http.HTTPStatus(status).phrase.lower()
    message = f"malformed HTTP request: {exc}"
    return json_error(status, code.replace(" ", "_"), message, request_id)

