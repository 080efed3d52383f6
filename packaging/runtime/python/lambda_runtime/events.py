"""Pure mapping between HTTP messages and Lambda events/results (no I/O, so it is unit-testable).

The shapes follow AWS's Function URL / API Gateway HTTP API payload format 2.0 so existing
handlers run unchanged.
"""

from __future__ import annotations

import json
import time

# typing, urllib.parse and base64 are not imported at run time: every cold start would pay
# for them before the socket opens (mypy reads the block below; Python skips it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Headers = list[tuple[str, str]]
Response = tuple[int, Headers, bytes]

JSON_TYPE = "application/json"
# Set by the daemon for the runtime only; handlers never saw them on AWS either.
INTERNAL_HEADERS = frozenset({"lambda-request-id", "lambda-deadline-ms", "lambda-invocation-type"})
# They describe the daemon-to-runtime hop (the body is already de-chunked), not the client request.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer"})
# Framing is the server's job; a handler-supplied value would corrupt the connection.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class RuntimeFault(Exception):
    """An error the runtime reports itself, with an AWS-style `Runtime.*` errorType."""

    error_type = "Runtime.Error"
    status = 500


class NotInitialized(RuntimeFault):
    """A stem cell got a request before the daemon specialized it."""

    error_type = "Runtime.NotInitialized"
    status = 503


class ShuttingDown(RuntimeFault):
    """A request reached an instance that is stopping."""

    error_type = "Runtime.ShuttingDown"
    status = 503


class LogChannelOff(RuntimeFault):
    """lambdad asked for the log channel of a runtime started without it."""

    error_type = "Runtime.LogChannelOff"
    status = 404


class AfterRestoreError(RuntimeFault):
    """A worker's after-restore hook raised (snapshot_restore_py): its first request fails,
    as the function's error (like a crash: 502, Lambda-Function-Error: Unhandled)."""

    error_type = "Runtime.AfterRestoreError"
    status = 502


class InvalidPayload(RuntimeFault):
    error_type = "Runtime.InvalidPayload"
    status = 400


class MarshalError(RuntimeFault):
    error_type = "Runtime.MarshalError"
    status = 500


_clf_last: list[Any] = [None, ""]  # (second, its text): a worker formats each second once


def _clf_time(now_ms: int) -> str:
    """Formats by hand because strftime's %b follows the locale and AWS's format does not."""
    second = now_ms // 1000
    if _clf_last[0] == second:
        text: str = _clf_last[1]
        return text
    t = time.gmtime(second)
    text = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    _clf_last[:] = [second, text]
    return text


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


def _unquote_ascii(text: str) -> str:
    parts = text.encode("ascii").split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        pair = part[:2]
        if len(pair) == 2 and not pair.translate(None, _HEX_DIGITS):
            out.append(int(pair, 16))
            out += part[2:]
        else:  # not an escape: kept literally
            out += b"%"
            out += part
    return out.decode("utf-8", "replace")


def unquote(text: str) -> str:
    """Percent-decodes as UTF-8 (invalid sequences become U+FFFD), like urllib.parse.unquote."""
    if "%" not in text:
        return text
    if text.isascii():
        return _unquote_ascii(text)
    # Only ASCII runs hold escapes; other characters pass through unchanged.
    out: list[str] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or text[i].isascii() != text[start].isascii():
            run = text[start:i]
            out.append(_unquote_ascii(run) if run.isascii() else run)
            start = i
    return "".join(out)


def parse_query(query: str) -> list[tuple[str, str]]:
    """Pairs of an `a=1&b` query in order, '+' as space, blank values kept (parse_qsl's rules)."""
    pairs: list[tuple[str, str]] = []
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def origin_form(target: str) -> str:
    """`/path?query` of an absolute-form request-target such as `http://host/p?q#f`."""
    url = target
    colon = url.find(":")
    if (
        colon > 0
        and url[0].isascii()
        and url[0].isalpha()
        and _SCHEME_CHARS.issuperset(url[:colon])
    ):
        url = url[colon + 1 :]
    if url.startswith("//"):  # skip the authority, which ends at the first '/', '?' or '#'
        ends = [i for i in (url.find("/", 2), url.find("?", 2), url.find("#", 2)) if i >= 0]
        url = url[min(ends) :] if ends else ""
    path, _, query = url.partition("#")[0].partition("?")
    return (path or "/") + (f"?{query}" if query else "")


def encode_body(body: bytes, content_type: str | None) -> tuple[str, bool]:
    """Text stays text so handlers can json.loads(event["body"]); anything else is base64."""
    if _is_textual(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    import base64  # binary bodies only

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
        target = origin_form(target)
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
        for key, value in parse_query(raw_query):
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
            import base64
            import binascii

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
