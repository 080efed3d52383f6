"""Which headers cross the gateway, in each direction.

Header names are compared lowercase (h11 already lowercases incoming names).
Framing headers are dropped in both directions because each hop does its own
framing: the request body reaches the runtime manager complete, and h11 picks
the response framing for the client.
"""

from __future__ import annotations

from lambdad.runtime.invocation import Headers

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)

# X-Forwarded-For/-Proto/-Host are rewritten by the gateway (a client cannot forge proto
# or host; its X-Forwarded-For chain is kept, the real peer appended). The other ways a
# proxy tells an application the client's address, scheme, host, port or path prefix,
# which frameworks trust behind a proxy (RFC 7239 `Forwarded`, nginx's X-Real-IP, chi's
# True-Client-IP, Rails' X-Forwarded-Ssl, Spring's X-Forwarded-Prefix...), are never set
# by the gateway, so a client's copies are lies: dropped, as is every other X-Forwarded-*.
_PROXY_CLAIMS = frozenset({b"forwarded", b"x-real-ip", b"true-client-ip", b"x-client-ip",
                           b"front-end-https", b"x-url-scheme"})
# The gateway answers `Expect` itself and the body arrives whole, so neither
# means anything to the instance.
_CONSUMED = frozenset({b"expect", b"content-length"})
# Set on responses by the gateway; the instance's copies would be duplicates.
_GATEWAY_RESPONSE = frozenset({b"lambda-request-id", b"lambda-version"})


def strip_hop_by_hop(headers: Headers) -> Headers:
    """Removes headers that describe one connection, not the message."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    drop = HOP_BY_HOP | (named - {b"host"})  # routing needs Host whatever Connection says
    return [(n, v) for n, v in headers if n.lower() not in drop]


def forward_request_headers(headers: Headers, client_ip: str, proto: str = "http") -> Headers:
    """The headers an instance sees: end-to-end ones plus what the gateway knows."""
    hosts = [v for n, v in headers if n.lower() == b"host"]
    chain = [v.strip() for n, v in headers if n.lower() == b"x-forwarded-for" and v.strip()]
    out: Headers = []
    for name, value in strip_hop_by_hop(headers):
        key = name.lower()
        if not (key.startswith((b"lambda-", b"x-forwarded-")) or key in _PROXY_CLAIMS
                or key in _CONSUMED):
            out.append((name, value))
    chain.append(client_ip.encode("ascii", "replace"))
    out.append((b"x-forwarded-for", b", ".join(chain)))
    out.append((b"x-forwarded-proto", proto.encode("ascii")))
    if hosts:
        out.append((b"x-forwarded-host", hosts[0]))
    return out


def response_headers(headers: Headers) -> Headers:
    """The instance's headers a client sees; h11 decides framing from Content-Length."""
    chunked = any(n.lower() == b"transfer-encoding" for n, _ in headers)
    drop = _GATEWAY_RESPONSE | ({b"content-length"} if chunked else set())
    return [(n, v) for n, v in strip_hop_by_hop(headers) if n.lower() not in drop]
