"""Whether a request may reach a function: decided on its head alone.

Pure, so the gateway can ask before it answers `Expect: 100-continue` or reads a byte of
the body, and ask again just before the invocation (a deploy may have switched the active
version while the body was uploading).

`auth = "key"` belongs to a version, and versions are immutable, so the rule looks at the
version that will serve the request (`vN.NAME` pins one) and also at the active one: a
function made private by its newest version does not stay public through the pinned URLs
of its older versions, and an older version that wanted a key keeps wanting it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from lambdad import errors
from lambdad.auth.keys import bearer_credentials
from lambdad.functions import FunctionVersion
from lambdad.runtime.invocation import Headers

# (key) -> who it is, or None for an unknown or revoked key
Identify = Callable[[str], object | None]

_BLANKS = re.compile(r"[\s,]+")
_PARAMETER = re.compile(r"[=;\"']+")  # auth-params: key="value", key=value
_MAX_CANDIDATES = 16  # an Authorization value is a scheme and a credential or two


def _bearer_key(value: bytes, identify: Identify) -> bool:
    """`Bearer <a valid API key>`: the scheme in any case (RFC 9110), any blanks after it."""
    token = bearer_credentials(value.decode("latin-1"))
    return token is not None and identify(token) is not None


def _holds_key(value: bytes, identify: Identify) -> bool:
    """Whether an `Authorization` value carries a valid API key in any form a caller might
    send one: Bearer as above, another scheme (`Token <key>`), the bare key, or the user
    or password of Basic. Only Bearer authenticates; any of them is kept from functions."""
    text = value.decode("latin-1")
    words = [w for w in _BLANKS.split(text) if w][:_MAX_CANDIDATES]
    candidates = [*words, *(part for word in words for part in _PARAMETER.split(word))]
    if len(words) == 2 and words[0].lower() == "basic":
        try:
            user, _, password = base64.b64decode(words[1], validate=True).decode(
                "latin-1").partition(":")
            candidates[:0] = [user, password]
        except (binascii.Error, ValueError):
            pass
    # Bounded: a crafted header must not cost more key checks than an honest one.
    unique = [c for c in dict.fromkeys(candidates) if c][:_MAX_CANDIDATES]
    return _bearer_key(value, identify) or any(identify(c) is not None for c in unique)


def admit(
    function: str,
    number: int | None,
    headers: Headers,
    *,
    active: FunctionVersion | None,
    version_of: Callable[[int], FunctionVersion | None],
    identify: Identify,
) -> errors.LambdaError | None:
    """None when the request may go on, else the error to answer with.

    `number` is the pinned version (None: the active one). On success the headers lose
    every `Authorization` that carries a valid API key (in whatever scheme), and, for a
    function that wants one, every `Authorization` at all: no function ever sees a
    lambda key.
    """
    if active is None:
        return errors.NotFound(f"no function named {function!r}")
    served = active
    if number is not None and number != active.number:
        pinned = version_of(number)
        if pinned is None:
            return errors.NotFound(f"function {function!r} has no version {number}")
        if pinned.pruned:
            return errors.NotFound(f"version {number} of {function!r} was pruned: its image "
                                   "was removed by the retention policy")
        served = pinned
    needs_key = "key" in (served.config.auth, active.config.auth)
    authorization = [value for name, value in headers if name.lower() == b"authorization"]
    if needs_key and not any(_bearer_key(value, identify) for value in authorization):
        return errors.Unauthenticated(
            f"function {function!r} needs an API key: send 'Authorization: Bearer <key>'")
    keyed = {value for value in authorization if _holds_key(value, identify)}
    headers[:] = [(name, value) for name, value in headers
                  if name.lower() != b"authorization" or not (needs_key or value in keyed)]
    return None
