from lambdad.gateway.headers import (
    HOP_BY_HOP,
    forward_request_headers,
    response_headers,
    strip_hop_by_hop,
)
from lambdad.runtime.invocation import Headers


def names(headers: Headers) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def get(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def test_strips_every_hop_by_hop_header() -> None:
    headers = [(name, b"x") for name in sorted(HOP_BY_HOP)] + [(b"accept", b"*/*")]
    assert strip_hop_by_hop(headers) == [(b"accept", b"*/*")]


def test_strips_headers_named_by_connection() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Secret ,x-other"),
        (b"connection", b"foo"),
        (b"x-secret", b"1"),
        (b"X-Other", b"2"),
        (b"Foo", b"3"),
        (b"x-kept", b"4"),
        (b"Proxy-Connection", b"keep-alive"),
    ]
    assert strip_hop_by_hop(headers) == [(b"x-kept", b"4")]


def test_connection_cannot_strip_host() -> None:
    headers = [(b"host", b"greet.localhost"), (b"connection", b"host")]
    assert strip_hop_by_hop(headers) == [(b"host", b"greet.localhost")]


def test_forward_keeps_end_to_end_headers_and_host() -> None:
    headers = [
        (b"host", b"greet.localhost:8080"),
        (b"accept", b"text/plain"),
        (b"cookie", b"a=1"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"upgrade", b"websocket"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"keep-alive", b"timeout=5"),
        (b"trailer", b"x-sum"),
        (b"expect", b"100-continue"),
        (b"content-length", b"5"),
    ]
    out = forward_request_headers(headers, "10.0.0.9")
    assert out[:3] == headers[:3]
    assert names(out)[3:] == [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]


def test_forward_strips_lambda_headers() -> None:
    headers = [
        (b"host", b"greet.localhost"),
        (b"lambda-request-id", b"forged"),
        (b"Lambda-Deadline-Ms", b"1"),
        (b"lambda-invocation-type", b"event"),
        (b"lambda-anything", b"x"),
        (b"x-lambda-ok", b"kept"),
    ]
    out = forward_request_headers(headers, "127.0.0.1")
    assert not [n for n in names(out) if n.startswith(b"lambda-")]
    assert get(out, b"x-lambda-ok") == [b"kept"]


def test_forwarded_headers_are_set() -> None:
    out = forward_request_headers([(b"host", b"Greet.localhost:8080")], "127.0.0.1")
    assert get(out, b"x-forwarded-for") == [b"127.0.0.1"]
    assert get(out, b"x-forwarded-proto") == [b"http"]
    assert get(out, b"x-forwarded-host") == [b"Greet.localhost:8080"]
    assert get(out, b"host") == [b"Greet.localhost:8080"]


def test_forwarded_for_appends_to_existing_chain() -> None:
    headers = [
        (b"host", b"greet.localhost"),
        (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"),
        (b"x-forwarded-for", b"3.3.3.3"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"evil.example"),
    ]
    out = forward_request_headers(headers, "::1")
    assert get(out, b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"]
    assert get(out, b"x-forwarded-proto") == [b"http"]
    assert get(out, b"x-forwarded-host") == [b"greet.localhost"]


def test_other_proxy_claims_from_clients_are_dropped() -> None:
    """Frameworks behind a proxy trust these for the client's address, scheme or host;
    the gateway is that proxy and sets none of them, so a client's copies never pass."""
    claims = [
        (b"forwarded", b"for=10.0.0.1;proto=https;host=admin.example"),
        (b"x-real-ip", b"10.0.0.1"), (b"true-client-ip", b"10.0.0.1"),
        (b"x-client-ip", b"10.0.0.1"), (b"x-forwarded-port", b"443"),
        (b"x-forwarded-ssl", b"on"), (b"x-forwarded-scheme", b"https"),
        (b"x-forwarded-prefix", b"/admin"), (b"X-Forwarded-Server", b"evil"),
        (b"front-end-https", b"on"), (b"x-url-scheme", b"https"),
    ]
    out = forward_request_headers([(b"host", b"greet.localhost"), (b"x-kept", b"1"), *claims],
                                  "192.0.2.7")
    assert names(out) == [b"host", b"x-kept", b"x-forwarded-for", b"x-forwarded-proto",
                          b"x-forwarded-host"]
    assert get(out, b"x-forwarded-for") == [b"192.0.2.7"]


def test_forwarded_for_survives_connection_naming_it() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1"), (b"connection", b"x-forwarded-for")]
    out = forward_request_headers(headers, "127.0.0.1")
    assert get(out, b"x-forwarded-for") == [b"1.1.1.1, 127.0.0.1"]
    assert get(out, b"x-forwarded-host") == []


def test_response_headers_drop_hop_by_hop_and_gateway_headers() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"connection", b"close, x-internal"),
        (b"x-internal", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"lambda-request-id", b"forged"),
        (b"lambda-version", b"99"),
        (b"Lambda-Cold-Start", b"none"),  # a function cannot claim how it started
        (b"lambda-workers", b"1"),  # the runtime's word to lambdad, never relayed
        (b"Lambda-Wait-Timeout", b"1"),
        (b"server-timing", b"db;dur=3"),  # its own metrics are its to give
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"12"),
    ]
    assert response_headers(headers) == [
        (b"content-type", b"text/plain"),
        (b"server-timing", b"db;dur=3"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"12"),
    ]


def test_response_headers_drop_content_length_next_to_chunked() -> None:
    headers = [(b"transfer-encoding", b"chunked"), (b"content-length", b"12"), (b"x", b"y")]
    assert response_headers(headers) == [(b"x", b"y")]


# The one-pass versions against the rules as first written (three passes each), over
# random header lists drawn from names that every rule touches.
def _reference_forward(headers: Headers, client_ip: str) -> Headers:
    from lambdad.gateway.headers import _CONSUMED, _PROXY_CLAIMS
    hosts = [v for n, v in headers if n.lower() == b"host"]
    chain = [v.strip() for n, v in headers if n.lower() == b"x-forwarded-for" and v.strip()]
    out: Headers = []
    for name, value in strip_hop_by_hop(headers):
        key = name.lower()
        if not (key.startswith((b"lambda-", b"x-forwarded-")) or key in _PROXY_CLAIMS
                or key in _CONSUMED):
            out.append((name, value))
    chain.append(client_ip.encode())
    out.append((b"x-forwarded-for", b", ".join(chain)))
    out.append((b"x-forwarded-proto", b"http"))
    if hosts:
        out.append((b"x-forwarded-host", hosts[0]))
    return out


def _reference_response(headers: Headers) -> Headers:
    chunked = any(n.lower() == b"transfer-encoding" for n, _ in headers)
    drop = {b"lambda-request-id", b"lambda-version", b"lambda-cold-start"} | (
        {b"content-length"} if chunked else set())
    return [(n, v) for n, v in strip_hop_by_hop(headers) if n.lower() not in drop]


def test_one_pass_header_rules_match_the_rules_as_first_written() -> None:
    import random
    rng = random.Random(16)
    names = [b"host", b"Host", b"connection", b"Connection", b"keep-alive", b"te",
             b"transfer-encoding", b"content-length", b"expect", b"x-forwarded-for",
             b"X-Forwarded-Host", b"lambda-request-id", b"lambda-version", b"Lambda-Foo",
             b"forwarded", b"x-real-ip", b"authorization", b"accept", b"x-kept", b"upgrade"]
    values = [b"", b" ", b"a", b"10.0.0.1", b"greet.localhost", b"chunked", b"5",
              b"x-kept, Host", b"close", b"keep-alive, x-forwarded-for", b"accept,,te",
              b"X-Kept", b"content-length"]
    for _ in range(5000):
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(8))]
        assert forward_request_headers(headers, "10.9.8.7") == _reference_forward(
            headers, "10.9.8.7"), headers
        assert response_headers(headers) == _reference_response(headers), headers
