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

from collections.abc import Callable

from lambdad import errors
from lambdad.functions import FunctionVersion
from lambdad.runtime.invocation import Headers

# (key) -> who it is, or None for an unknown or revoked key
Identify = Callable[[str], object | None]


def _bearer_key(value: bytes, identify: Identify) -> bool:
    """`Bearer <a valid API key>` (the scheme is case-insensitive, RFC 9110)."""
    if value[:7].lower() != b"bearer ":
        return False
    return identify(value[7:].decode("latin-1").strip()) is not None


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
    every `Authorization` that carries a valid API key, and, for a function that wants
    one, every `Authorization` at all: no function ever sees a lambda key.
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
    keyed = {value for name, value in headers
             if name.lower() == b"authorization" and _bearer_key(value, identify)}
    if needs_key and not keyed:
        return errors.Unauthenticated(
            f"function {function!r} needs an API key: send 'Authorization: Bearer <key>'")
    headers[:] = [(name, value) for name, value in headers
                  if name.lower() != b"authorization" or not (needs_key or value in keyed)]
    return None
