"""Pure mapping between HTTP messages and Lambda events/results (no I/O, so it is unit-testable).

The shapes follow AWS's Function URL / API Gateway HTTP API payload format 2.0 so existing
handlers run unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

Headers = list[tuple[str, str]]
Response = tuple[int, Headers, bytes]

JSON_TYPE = "application/json"
# Set by the daemon for the runtime only; handlers never saw them on AWS either.
INTERNAL_HEADERS = frozenset({"lambda-request-id", "lambda-deadline-ms", "lambda-invocation-type"})
# They describe the daemon-to-runtime hop (the body is already de-chunked), not the client request.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer"})
# Framing is the server's job; a handler-supplied value would corrupt the connection.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class RuntimeFault(Exception):
    """An error the runtime reports itself, with an AWS-style `Runtime.*` errorType."""

    error_type = "Runtime.Error"
    status = 500


class InvalidPayload(RuntimeFault):
    error_type = "Runtime.InvalidPayload"
    status = 400


class MarshalError(RuntimeFault):
    error_type = "Runtime.MarshalError"
    status = 500


def _clf_time(now_ms: int) -> str:
    """Formats by hand because strftime's %b follows the locale and AWS's format does not."""
    t = time.gmtime(now_ms // 1000)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _is_textual(content_type: str | None) -> bool:
    if content_type is None:
        return True
    ct = content_type.split(";", 1)[0].strip().lower()
    if not ct or ct.startswith("text/"):
        return True
    return any(k in ct for k in ("json", "xml", "javascript", "x-www-form-urlencoded"))


def _host_parts(host: str) -> tuple[str, str]:
    """Returns (domainName, domainPrefix); the port is not part of AWS's domainName."""
    host = host.strip()
    if host.startswith("["):  # IPv6 literal: "[::1]:8080"
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name, name.split(".", 1)[0]


def encode_body(body: bytes, content_type: str | None) -> tuple[str, bool]:
    """Text stays text so handlers can json.loads(event["body"]); anything else is base64."""
    if _is_textual(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def http_event(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    request_id: str,
    now_ms: int,
) -> dict[str, Any]:
    """Builds a payload-v2 event from a gateway request (`target` is the request-target)."""
    if not target.startswith("/"):  # absolute-form, e.g. "http://host/p?q"
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path, _, raw_query = target.partition("?")
    path = path or "/"

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.strip().lower()
        if key in INTERNAL_HEADERS or key in HOP_HEADERS:
            continue
        if key == "cookie":  # AWS moves cookies out of the headers into their own list
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value

    forwarded = [a.strip() for a in merged.get("x-forwarded-for", "").split(",") if a.strip()]
    domain, prefix = _host_parts(merged.get("host", "localhost"))

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        if params:
            event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": "anonymous",
        "apiId": prefix,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": forwarded[-1] if forwarded else "127.0.0.1",
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _clf_time(now_ms),
        "timeEpoch": now_ms,
    }
    is_b64 = False
    if body:
        event["body"], is_b64 = encode_body(body, merged.get("content-type"))
    event["isBase64Encoded"] = is_b64
    return event


def _dumps(value: object) -> bytes:
    try:
        return json.dumps(value).encode("utf-8")
    except (TypeError, ValueError) as exc:  # ValueError: circular references, NaN policies
        raise MarshalError(f"Unable to marshal response: {exc}") from exc


def _header_value(name: str, value: object) -> tuple[str, str]:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if not name or any(c in name for c in "\r\n:") or "\r" in text or "\n" in text:
        raise MarshalError(f"Invalid response header {name!r}")
    return name, text


def http_response(result: object) -> Response:
    """Maps a handler result to (status, headers, body) the way AWS Function URLs do."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return 200, [("Content-Type", JSON_TYPE)], _dumps(result)

    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise MarshalError(f"Invalid statusCode {status!r}")

    headers: Headers = []
    raw_headers = result.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise MarshalError("'headers' must be an object")
    for name, value in raw_headers.items():
        if str(name).lower() not in FRAMING_HEADERS:
            headers.append(_header_value(str(name), value))
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list):
        raise MarshalError("'cookies' must be a list")
    headers.extend(_header_value("Set-Cookie", c) for c in cookies)
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", JSON_TYPE))

    body = result.get("body")
    data: bytes
    if body is None:
        data = b""
    elif isinstance(body, str):
        if result.get("isBase64Encoded"):
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MarshalError(f"Invalid base64 body: {exc}") from exc
        else:
            data = body.encode("utf-8")
    else:  # lenient: a handler returning a dict body surely meant JSON
        data = _dumps(body)
    return status, headers, data


def direct_event(body: bytes) -> object:
    """Direct and async invocations pass the JSON payload itself; empty means `{}`."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidPayload(f"Could not parse request body into json: {exc}") from exc


def direct_response(result: object) -> Response:
    return 200, [("Content-Type", JSON_TYPE)], _dumps(result)


def error_type(exc: BaseException) -> str:
    return exc.error_type if isinstance(exc, RuntimeFault) else type(exc).__name__


def error_body(exc: BaseException) -> bytes:
    """AWS's error shape, so callers can tell runtime faults from handler exceptions."""
    return json.dumps({"errorMessage": str(exc), "errorType": error_type(exc)}).encode("utf-8")
