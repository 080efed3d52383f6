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
from lambdad.auth.http import Identify, authorize
from lambdad.functions import FunctionVersion
from lambdad.runtime.invocation import Headers


def admit(
    function: str,
    number: int | None,
    headers: Headers,
    *,
    active: FunctionVersion | None,
    version_of: Callable[[int], FunctionVersion | None],
    identify: Identify,
) -> Headers | errors.LambdaError:
    """The headers the request goes on with, else the error to answer with.

    `number` is the pinned version (None: the active one). The key rule itself, and which
    `Authorization` headers are kept from the function, is `auth.http.authorize`'s; the
    caller's `headers` are not changed.
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
    return authorize(function, headers, needs_key=needs_key, identify=identify)
