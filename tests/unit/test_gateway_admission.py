"""The gateway's admission rule (pure): which version decides auth, and what a function sees.

The key check itself (which `Authorization` forms authenticate, which are kept from
functions) is tested in test_auth_http.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambdad import errors
from lambdad.functions import FunctionConfig, FunctionVersion
from lambdad.gateway.admission import admit
from lambdad.runtime.invocation import Headers

KEY = "lk_0123456789ab_" + "s" * 32


def version(number: int, auth: str = "none", *, pruned: bool = False) -> FunctionVersion:
    return FunctionVersion(
        function="fn", number=number, image=f"lambda-fn/fn:v{number}", image_id="sha256:x",
        config=FunctionConfig(auth=auth), code_sha256="0" * 64, code_size=1,
        created_at=datetime.now(UTC), pruned=pruned)


def decide(versions: dict[int, FunctionVersion], active: int | None, pinned: int | None,
           headers: Headers) -> Headers | errors.LambdaError:
    return admit("fn", pinned, headers,
                 active=versions[active] if active is not None else None,
                 version_of=versions.get,
                 identify=lambda token: ("caller", "invoker") if token == KEY else None)


def with_key(key: str = KEY, scheme: str = "Bearer") -> Headers:
    return [(b"host", b"fn.localhost"), (b"authorization", f"{scheme} {key}".encode())]


# v1 wanted a key, v2 (active) does not: the pinned v1 still does.
OLD_PRIVATE = {1: version(1, "key"), 2: version(2, "none")}
# v1 was public, v2 (active) wants a key: the pinned v1 does too now.
NEW_PRIVATE = {1: version(1, "none"), 2: version(2, "key")}


@pytest.mark.parametrize(("versions", "pinned", "needs_key"), [
    (OLD_PRIVATE, 1, True),  # the bypass: the active version used to decide
    (OLD_PRIVATE, 2, False),
    (OLD_PRIVATE, None, False),
    (NEW_PRIVATE, None, True),
    (NEW_PRIVATE, 2, True),
    (NEW_PRIVATE, 1, True),  # an old public version does not reopen a private function
])
def test_auth_is_decided_by_the_served_version_and_the_active_one(
    versions: dict[int, FunctionVersion], pinned: int | None, needs_key: bool
) -> None:
    anonymous: Headers = [(b"host", b"fn.localhost")]
    refused = decide(versions, 2, pinned, anonymous)
    if needs_key:
        assert isinstance(refused, errors.Unauthenticated)
    else:
        assert refused == anonymous
    assert isinstance(decide(versions, 2, pinned, with_key(key="lk_0123456789ab_" + "x" * 32)),
                      errors.Unauthenticated) is needs_key
    headers = with_key()
    assert decide(versions, 2, pinned, headers) == [(b"host", b"fn.localhost")]  # no key
    assert headers == with_key()  # the caller's list is not rewritten


def test_unknown_function_version_and_pruned_version_are_not_found() -> None:
    versions = {1: version(1, pruned=True), 2: version(2)}
    for active, pinned, text in [(None, None, "no function named 'fn'"),
                                 (2, 7, "has no version 7"), (2, 1, "was pruned")]:
        refused = decide(versions, active, pinned, [])
        assert isinstance(refused, errors.NotFound) and text in refused.message


def test_a_key_function_gets_no_authorization_header_at_all() -> None:
    versions = {1: version(1, "key")}
    headers = [*with_key(), (b"authorization", b"Bearer something-else")]
    assert decide(versions, 1, None, headers) == [(b"host", b"fn.localhost")]
    refused = decide(versions, 1, None, [(b"authorization", b"Basic " + KEY.encode())])
    assert isinstance(refused, errors.Unauthenticated)  # a key needs the Bearer scheme


def test_pinning_the_active_version_is_the_active_version() -> None:
    versions = {3: version(3, "key")}
    assert isinstance(decide(versions, 3, 3, []), errors.Unauthenticated)
    assert decide(versions, 3, 3, with_key()) == [(b"host", b"fn.localhost")]
