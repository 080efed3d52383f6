"""Unit tests of the pure HTTP <-> Lambda event mapping in the in-image Python runtime."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

from lambda_runtime import events
from lambda_runtime.context import ContextFactory, LambdaContext

NOW_MS = 1584039838123  # 2020-03-12T19:03:58.123Z


def ev(
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    method: str = "GET",
) -> dict[str, object]:
    return events.http_event(method, target, headers or [], body, "req-1", NOW_MS)


# --- http_event -----------------------------------------------------------------------------


def test_http_event_basic_shape() -> None:
    e = ev("/hello/world", [("Host", "fn.example.com:8080"), ("User-Agent", "curl/8")])
    assert e["version"] == "2.0"
    assert e["routeKey"] == "$default"
    assert e["rawPath"] == "/hello/world"
    assert e["rawQueryString"] == ""
    assert e["isBase64Encoded"] is False
    assert "body" not in e
    assert "cookies" not in e
    assert "queryStringParameters" not in e
    assert e["requestContext"] == {
        "accountId": "anonymous",
        "apiId": "fn",
        "domainName": "fn.example.com",
        "domainPrefix": "fn",
        "http": {
            "method": "GET",
            "path": "/hello/world",
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "curl/8",
        },
        "requestId": "req-1",
        "routeKey": "$default",
        "stage": "$default",
        "time": "12/Mar/2020:19:03:58 +0000",
        "timeEpoch": NOW_MS,
    }
    json.dumps(e)  # must be serializable as-is


def test_method_is_uppercased() -> None:
    e = ev(method="post")
    assert e["requestContext"]["http"]["method"] == "POST"  # type: ignore[index]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1", {"a": "1"}),
        ("a=1&b=2", {"a": "1", "b": "2"}),
        ("a=1&a=2&a=3", {"a": "1,2,3"}),
        ("a=&b", {"a": "", "b": ""}),
        ("name=J%C3%BCrgen&x=a%26b", {"name": "Jürgen", "x": "a&b"}),
        ("q=hello+world", {"q": "hello world"}),
        ("a=1&&b=2", {"a": "1", "b": "2"}),
    ],
)
def test_query_parameters(query: str, expected: dict[str, str]) -> None:
    e = ev(f"/p?{query}")
    assert e["rawQueryString"] == query
    assert e["queryStringParameters"] == expected
    assert e["rawPath"] == "/p"


def test_empty_query_omits_parameters() -> None:
    e = ev("/p?")
    assert e["rawQueryString"] == ""
    assert "queryStringParameters" not in e


def test_raw_path_is_not_decoded() -> None:
    e = ev("/a%20b/c?x=1")
    assert e["rawPath"] == "/a%20b/c"
    assert e["requestContext"]["http"]["path"] == "/a%20b/c"  # type: ignore[index]


def test_absolute_form_target() -> None:
    e = ev("http://host.example/p/q?x=1")
    assert e["rawPath"] == "/p/q"
    assert e["rawQueryString"] == "x=1"


def test_headers_lowercased_and_repeats_joined() -> None:
    e = ev(headers=[("X-Thing", "a"), ("x-thing", "b"), ("Accept", "*/*"), ("X-Empty", "")])
    assert e["headers"] == {"x-thing": "a,b", "accept": "*/*", "x-empty": ""}


def test_internal_and_hop_headers_are_dropped() -> None:
    e = ev(
        headers=[
            ("Lambda-Request-Id", "r"),
            ("Lambda-Deadline-Ms", "1"),
            ("Lambda-Invocation-Type", "http"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive"),
            ("X-Kept", "yes"),
        ]
    )
    assert e["headers"] == {"x-kept": "yes"}


def test_cookies_are_split_and_removed_from_headers() -> None:
    e = ev(headers=[("Cookie", "a=1; b=2"), ("cookie", "c=3;"), ("X", "y")])
    assert e["cookies"] == ["a=1", "b=2", "c=3"]
    assert "cookie" not in e["headers"]  # type: ignore[operator]


def test_empty_cookie_header_omits_cookies() -> None:
    assert "cookies" not in ev(headers=[("Cookie", " ; ")])


@pytest.mark.parametrize(
    ("xff", "ip"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("10.0.0.1, 198.51.100.2", "198.51.100.2"),
        ("spoofed, 10.0.0.1 ,192.0.2.9 ", "192.0.2.9"),
        ("", "127.0.0.1"),
    ],
)
def test_source_ip_is_last_forwarded_for(xff: str, ip: str) -> None:
    e = ev(headers=[("X-Forwarded-For", xff)])
    assert e["requestContext"]["http"]["sourceIp"] == ip  # type: ignore[index]


def test_forwarded_for_repeated_headers_use_last() -> None:
    e = ev(headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    assert e["requestContext"]["http"]["sourceIp"] == "2.2.2.2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("host", "domain", "prefix"),
    [
        ("api.example.com", "api.example.com", "api"),
        ("localhost:8080", "localhost", "localhost"),
        ("[::1]:8080", "[::1]", "[::1]"),
        ("127.0.0.1", "127.0.0.1", "127"),
    ],
)
def test_domain_name_and_prefix(host: str, domain: str, prefix: str) -> None:
    ctx = ev(headers=[("Host", host)])["requestContext"]
    assert ctx["domainName"] == domain  # type: ignore[index]
    assert ctx["domainPrefix"] == prefix  # type: ignore[index]


def test_missing_host_and_user_agent() -> None:
    ctx = ev()["requestContext"]
    assert ctx["domainName"] == "localhost"  # type: ignore[index]
    assert ctx["http"]["userAgent"] == ""  # type: ignore[index]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/html; charset=utf-8",
        "application/json",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "application/xml",
        "",
    ],
)
def test_textual_body_stays_text(content_type: str | None) -> None:
    headers = [] if content_type is None else [("Content-Type", content_type)]
    e = ev(headers=headers, body="héllo {}".encode(), method="POST")
    assert e["body"] == "héllo {}"
    assert e["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n\x00"),
        ("application/octet-stream", b"plain ascii but binary type"),
        ("application/json", b"\xff\xfe not utf-8"),
        (None, b"\xff\x00"),
    ],
)
def test_binary_body_is_base64(content_type: str | None, body: bytes) -> None:
    headers = [] if content_type is None else [("Content-Type", content_type)]
    e = ev(headers=headers, body=body, method="POST")
    assert e["isBase64Encoded"] is True
    assert base64.b64decode(e["body"]) == body  # type: ignore[arg-type]


def test_time_format_is_locale_free_and_padded() -> None:
    e = events.http_event("GET", "/", [], b"", "r", 1704085205000)  # 2024-01-01T05:00:05Z
    assert e["requestContext"]["time"] == "01/Jan/2024:05:00:05 +0000"


# --- http_response --------------------------------------------------------------------------


def test_status_headers_body() -> None:
    status, headers, body = events.http_response(
        {"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-A": 1}, "body": "hi"}
    )
    assert status == 201
    assert headers == [("Content-Type", "text/plain"), ("X-A", "1")]
    assert body == b"hi"


def test_default_content_type_is_json() -> None:
    _, headers, _ = events.http_response({"statusCode": 200, "body": "{}"})
    assert headers == [("Content-Type", "application/json")]


def test_content_type_detection_is_case_insensitive() -> None:
    _, headers, _ = events.http_response(
        {"statusCode": 200, "headers": {"content-type": "text/html"}}
    )
    assert headers == [("content-type", "text/html")]


def test_status_without_body_is_empty() -> None:
    assert events.http_response({"statusCode": 204})[::2] == (204, b"")
    assert events.http_response({"statusCode": 302, "body": None})[2] == b""


def test_string_status_code_accepted() -> None:
    assert events.http_response({"statusCode": "404"})[0] == 404


def test_cookies_become_set_cookie() -> None:
    _, headers, _ = events.http_response({"statusCode": 200, "cookies": ["a=1; Path=/", "b=2"]})
    assert ("Set-Cookie", "a=1; Path=/") in headers
    assert ("Set-Cookie", "b=2") in headers


def test_base64_body_is_decoded() -> None:
    raw = bytes(range(256))
    result = {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
    }
    assert events.http_response(result)[2] == raw


def test_invalid_base64_body_is_marshal_error() -> None:
    with pytest.raises(events.MarshalError):
        events.http_response({"statusCode": 200, "body": "!!!", "isBase64Encoded": True})


def test_unicode_body_is_utf8() -> None:
    assert events.http_response({"statusCode": 200, "body": "ünï"})[2] == "ünï".encode()


def test_non_string_body_is_json() -> None:
    assert json.loads(events.http_response({"statusCode": 200, "body": {"a": 1}})[2]) == {"a": 1}


def test_multi_value_headers_ignored() -> None:
    _, headers, _ = events.http_response({"statusCode": 200, "multiValueHeaders": {"X": ["1"]}})
    assert all(name != "X" for name, _ in headers)


def test_framing_headers_from_handler_are_dropped() -> None:
    _, headers, _ = events.http_response(
        {
            "statusCode": 200,
            "headers": {"Content-Length": "99", "Transfer-Encoding": "chunked", "X-Ok": "1"},
        }
    )
    assert [n for n, _ in headers] == ["X-Ok", "Content-Type"]


def test_boolean_header_value() -> None:
    _, headers, _ = events.http_response({"statusCode": 200, "headers": {"X-B": True}})
    assert ("X-B", "true") in headers


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": 99},
        {"statusCode": 600},
        {"statusCode": True},
        {"statusCode": "abc"},
        {"statusCode": None},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"X": "a\r\nInjected: 1"}},
        {"statusCode": 200, "headers": {"Bad:Name": "v"}},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": {"x": object()}},
    ],
)
def test_invalid_results_are_marshal_errors(result: dict[str, object]) -> None:
    with pytest.raises(events.MarshalError):
        events.http_response(result)


@pytest.mark.parametrize(
    "value",
    [{"message": "hi"}, {}, [1, 2], "text", 42, 1.5, True, None],
)
def test_other_values_are_json_200(value: object) -> None:
    status, headers, body = events.http_response(value)
    assert status == 200
    assert headers == [("Content-Type", "application/json")]
    assert json.loads(body) == value


def test_unserializable_value_is_marshal_error() -> None:
    with pytest.raises(events.MarshalError) as info:
        events.http_response({"when": object()})
    assert json.loads(events.error_body(info.value))["errorType"] == "Runtime.MarshalError"


# --- direct invocation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {}),
        (b"  \n", {}),
        (b'{"a": [1, 2]}', {"a": [1, 2]}),
        (b"[1]", [1]),
        (b'"s"', "s"),
        (b"null", None),
        ('{"ü": 1}'.encode(), {"ü": 1}),
    ],
)
def test_direct_event(body: bytes, expected: object) -> None:
    assert events.direct_event(body) == expected


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"{} extra"])
def test_direct_event_invalid(body: bytes) -> None:
    with pytest.raises(events.InvalidPayload) as info:
        events.direct_event(body)
    assert info.value.status == 400
    decoded = json.loads(events.error_body(info.value))
    assert decoded["errorType"] == "Runtime.InvalidPayload"
    assert decoded["errorMessage"]


@pytest.mark.parametrize(
    ("value", "text"), [(None, b"null"), ({"a": 1}, b'{"a": 1}'), ("x", b'"x"'), (3, b"3")]
)
def test_direct_response(value: object, text: bytes) -> None:
    assert events.direct_response(value) == (200, [("Content-Type", "application/json")], text)


def test_direct_response_marshal_error() -> None:
    with pytest.raises(events.MarshalError):
        events.direct_response({1, 2})


# --- errors and context ---------------------------------------------------------------------


def test_error_body_for_handler_exception() -> None:
    assert json.loads(events.error_body(KeyError("k"))) == {
        "errorMessage": "'k'",
        "errorType": "KeyError",
    }


def test_error_body_for_custom_exception() -> None:
    class MyError(Exception):
        pass

    assert json.loads(events.error_body(MyError("bad thing"))) == {
        "errorMessage": "bad thing",
        "errorType": "MyError",
    }


def test_context_attributes() -> None:
    factory = ContextFactory(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "greet",
            "AWS_LAMBDA_FUNCTION_VERSION": "3",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        }
    )
    ctx = factory.make("rid", 0)
    assert isinstance(ctx, LambdaContext)
    assert ctx.aws_request_id == "rid"
    assert ctx.function_name == "greet"
    assert ctx.function_version == "3"
    assert ctx.memory_limit_in_mb == 256
    assert ctx.invoked_function_arn == "arn:aws:lambda:local:000000000000:function:greet"
    assert ctx.log_group_name == "/aws/lambda/greet"
    assert "[3]" in ctx.log_stream_name
    assert ctx.get_remaining_time_in_millis() == 0  # deadline in the past is clamped


def test_context_remaining_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lambda_runtime.context.time.time", lambda: 1000.0)
    ctx = ContextFactory({}).make("r", 1_002_500)
    assert ctx.get_remaining_time_in_millis() == 2500
    assert ctx.function_version == "$LATEST"
    assert ctx.memory_limit_in_mb == 128
