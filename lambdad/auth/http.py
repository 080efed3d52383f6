"""The API-key rule of the HTTP gateway: who may call a function that says `auth = "key"`,
and which `Authorization` headers a function never sees.

Pure: it is given a request's headers and a way to identify a key, and returns the
headers the function may see (a new list; the caller's is left as it was) or the
refusal. Which version decides whether a key is needed is the gateway's rule
(`gateway/admission.py`); this module only knows keys.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence

from lambdad import errors
from lambdad.auth.keys import CLUSTER_ROLE, bearer_credentials

# (key) -> who it is, or None for an unknown or revoked key
Identify = Callable[[str], object | None]
Header = tuple[bytes, bytes]

_BLANKS = re.compile(r"[\s,]+")
_PARAMETER = re.compile(r"[=;\"']+")  # auth-params: key="value", key=value
_MAX_CANDIDATES = 16  # an Authorization value is a scheme and a credential or two


def bearer_key(value: bytes, identify: Identify) -> bool:
    """`Bearer <a valid API key>`: the scheme in any case (RFC 9110), any blanks after it."""
    token = bearer_credentials(value.decode("latin-1"))
    return token is not None and identify(token) is not None


def opens(value: bytes, identify: Identify) -> bool:
    """`Bearer <an API key that may invoke>`: the cluster key (the nodes' shared secret,
    role `cluster`) is recognized, so it is kept from functions, but it invokes nothing."""
    token = bearer_credentials(value.decode("latin-1"))
    who = identify(token) if token is not None else None
    return who is not None and not (isinstance(who, tuple) and CLUSTER_ROLE in who[1:])


def holds_key(value: bytes, identify: Identify) -> bool:
    """Whether an `Authorization` value carries a valid API key in any form a caller might
    send one: Bearer as above, another scheme (`Token <key>`), the bare key, or the user
    or password of Basic. Only Bearer authenticates; any of them is kept from functions."""
    text = value.decode("latin-1")
    words = [w for w in _BLANKS.split(text) if w][:_MAX_CANDIDATES]
    candidates = [*words, *(part for word in words for part in _PARAMETER.split(word))]
    if len(words) == 2 and words[0].lower() == "basic":
        candidates[:0] = _basic_credentials(words[1])
    # Bounded: a crafted header must not cost more key checks than an honest one.
    unique = [c for c in dict.fromkeys(candidates) if c][:_MAX_CANDIDATES]
    return bearer_key(value, identify) or any(identify(c) is not None for c in unique)


def _basic_credentials(token: str) -> list[str]:
    """The user and password of a Basic credential, its padding stripped or not, in either
    base64 alphabet: a client that strips the `=` (or uses base64url) must not get its key
    past the check as text that does not decode."""
    padded = token + "=" * (-len(token) % 4)
    for altchars in (None, b"-_"):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        user, _, password = decoded.decode("latin-1").partition(":")
        return [user, password]
    return []


def authorize(
    function: str, headers: Sequence[Header], *, needs_key: bool, identify: Identify
) -> list[Header] | errors.Unauthenticated:
    """The headers `function` may see, or the refusal when it needs a key and none came.

    A function that needs a key sees no `Authorization` at all; any other loses every
    `Authorization` that carries a valid API key (in whatever scheme) and keeps its own
    tokens: no function ever sees a lambda key.
    """
    authorization = [value for name, value in headers if name.lower() == b"authorization"]
    if needs_key and not any(opens(value, identify) for value in authorization):
        return errors.Unauthenticated(
            f"function {function!r} needs an API key: send 'Authorization: Bearer <key>'")
    keyed = {value for value in authorization if holds_key(value, identify)}
    return [(name, value) for name, value in headers
            if name.lower() != b"authorization" or not (needs_key or value in keyed)]
