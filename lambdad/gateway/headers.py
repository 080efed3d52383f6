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
# Set on responses by the gateway; the instance's copies would be duplicates (or lies about
# how it started). A function's own Server-Timing metrics are kept: that header is a list.
_GATEWAY_RESPONSE = frozenset({b"lambda-request-id", b"lambda-version", b"lambda-cold-start"})
# The standard runtime's word to lambdad (runtime/hop.py), taken off before the gateway sees
# a response; a function's own copies (a Dockerfile function's) are never relayed either.
_RUNTIME_CONTROL = frozenset({b"lambda-workers", b"lambda-wait-timeout"})


def _named(value: bytes) -> set[bytes]:
    """The header names a Connection value lists."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def strip_hop_by_hop(headers: Headers) -> Headers:
    """Removes headers that describe one connection, not the message."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named |= _named(value)
    drop = HOP_BY_HOP | (named - {b"host"})  # routing needs Host whatever Connection says
    return [(n, v) for n, v in headers if n.lower() not in drop]


# Never forwarded to an instance, whatever their value; Lambda-* and X-Forwarded-* too.
_NOT_FORWARDED = HOP_BY_HOP | _PROXY_CLAIMS | _CONSUMED
_OURS = (b"lambda-", b"x-forwarded-")


def forward_request_headers(headers: Headers, client_ip: str, proto: str = "http") -> Headers:
    """The headers an instance sees: end-to-end ones plus what the gateway knows.

    One pass on the request path; a Connection header (rare) costs a second pass over
    what was kept, for the names it lists."""
    out: Headers = []
    chain: list[bytes] = []
    host: bytes | None = None
    named: set[bytes] | None = None
    for name, value in headers:
        key = name.lower()
        if key in _NOT_FORWARDED:
            if key == b"connection":
                named = _named(value) | (named or set())
        elif key.startswith(_OURS):
            if key == b"x-forwarded-for":
                hop = value.strip()
                if hop:
                    chain.append(hop)
        else:
            if key == b"host" and host is None:
                host = value
            out.append((name, value))
    if named:
        named.discard(b"host")  # routing needs Host whatever Connection says
        out = [(n, v) for n, v in out if n.lower() not in named]
    chain.append(client_ip.encode("ascii", "replace"))
    out.append((b"x-forwarded-for", b", ".join(chain)))
    out.append((b"x-forwarded-proto", proto.encode("ascii")))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    return out


_NOT_RELAYED = HOP_BY_HOP | _GATEWAY_RESPONSE | _RUNTIME_CONTROL


def response_headers(headers: Headers) -> Headers:
    """The instance's headers a client sees; h11 decides framing from Content-Length.

    One pass, like `forward_request_headers`."""
    out: Headers = []
    named: set[bytes] | None = None
    chunked = False
    for name, value in headers:
        key = name.lower()
        if key in _NOT_RELAYED:
            if key == b"connection":
                named = _named(value) | (named or set())
            elif key == b"transfer-encoding":
                chunked = True
        else:
            out.append((name, value))
    if chunked:
        named = (named or set()) | {b"content-length"}
    if named:
        named.discard(b"host")
        out = [(n, v) for n, v in out if n.lower() not in named]
    return out
