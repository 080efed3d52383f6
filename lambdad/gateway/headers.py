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

# Rewritten by the gateway; a client must not be able to forge proto or host.
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
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
        if not (key.startswith(b"lambda-") or key in _FORWARDED or key in _CONSUMED):
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
