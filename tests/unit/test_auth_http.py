"""The HTTP key check (pure): which `Authorization` forms authenticate, which never reach
a function, and that the caller's headers are returned cleaned, never rewritten."""

from __future__ import annotations

import base64

import pytest

from lambdad import errors
from lambdad.auth.http import authorize
from lambdad.runtime.invocation import Headers

KEY = "lk_0123456789ab_" + "s" * 32


def check(headers: Headers, *, needs_key: bool) -> Headers | errors.Unauthenticated:
    before = list(headers)
    result = authorize("fn", headers, needs_key=needs_key,
                       identify=lambda token: ("caller", "invoker") if token == KEY else None)
    assert headers == before  # the caller's list is left as it was
    return result


def with_key(key: str = KEY, scheme: str = "Bearer") -> Headers:
    return [(b"host", b"fn.localhost"), (b"authorization", f"{scheme} {key}".encode())]


def test_a_key_is_needed_and_a_valid_bearer_key_is_taken_out() -> None:
    refused = check([(b"host", b"fn.localhost")], needs_key=True)
    assert isinstance(refused, errors.Unauthenticated)
    assert "needs an API key" in refused.message and "'fn'" in refused.message
    wrong = check(with_key(key="lk_0123456789ab_" + "x" * 32), needs_key=True)
    assert isinstance(wrong, errors.Unauthenticated)
    assert check(with_key(), needs_key=True) == [(b"host", b"fn.localhost")]


def test_a_public_function_never_sees_a_valid_api_key_but_keeps_its_own_tokens() -> None:
    headers = [*with_key(scheme="bearer"), (b"authorization", b"Bearer app-token"),
               (b"authorization", b"Basic dXNlcjpwYXNz")]
    assert check(headers, needs_key=False) == [
        (b"host", b"fn.localhost"), (b"authorization", b"Bearer app-token"),
        (b"authorization", b"Basic dXNlcjpwYXNz")]


def test_a_key_function_gets_no_authorization_header_at_all() -> None:
    headers = [*with_key(), (b"authorization", b"Bearer something-else")]
    assert check(headers, needs_key=True) == [(b"host", b"fn.localhost")]
    refused = check([(b"authorization", b"Basic " + KEY.encode())], needs_key=True)
    assert isinstance(refused, errors.Unauthenticated)  # a key needs the Bearer scheme


# Ways a caller may send its key: the scheme in any case (RFC 9110), any blanks after it.
BEARER_FORMS = [f"bearer {KEY}", f"BEARER {KEY}", f"Bearer\t{KEY}", f"bEaReR  \t {KEY}  ",
                f"  Bearer {KEY}"]
# Not Bearer, so not a way to authenticate, but a key all the same: kept from functions.
OTHER_FORMS = [KEY, f"Token {KEY}", f"Basic {KEY}", f"ApiKey key={KEY}",
               "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode(),
               "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(), f"Bearer {KEY}, x",
               # Basic with its padding stripped, or in base64url: the key went through.
               "Basic " + base64.b64encode(f"u:{KEY}".encode()).decode().rstrip("="),
               "Basic " + base64.urlsafe_b64encode(f"\xfb\xff:{KEY}".encode("latin-1")).decode()]


@pytest.mark.parametrize("value", BEARER_FORMS)
def test_bearer_is_recognised_in_any_case_and_with_any_blanks(value: str) -> None:
    headers: Headers = [(b"host", b"fn.localhost"), (b"authorization", value.encode())]
    assert check(headers, needs_key=True) == [(b"host", b"fn.localhost")]
    headers = [(b"authorization", value.encode()), (b"authorization", b"bearer app-token")]
    assert check(headers, needs_key=False) == [(b"authorization", b"bearer app-token")]


@pytest.mark.parametrize("value", OTHER_FORMS)
def test_a_key_in_another_scheme_never_reaches_a_function_and_does_not_authenticate(
    value: str,
) -> None:
    assert check([(b"authorization", value.encode())], needs_key=False) == []
    assert isinstance(check([(b"authorization", value.encode())], needs_key=True),
                      errors.Unauthenticated)


def test_other_tokens_of_the_same_shape_reach_public_functions() -> None:
    unknown = "lk_0123456789ab_" + "u" * 32  # not a key the daemon knows
    values = [f"bearer\t{unknown}", "Token abc", unknown,
              "Basic " + base64.b64encode(b"user:password").decode(), "Basic !!notbase64"]
    headers: Headers = [(b"authorization", v.encode()) for v in values]
    cleaned = check(headers, needs_key=False)
    assert not isinstance(cleaned, errors.LambdaError)
    assert [v.decode() for _, v in cleaned] == values


def test_a_crafted_header_costs_a_bounded_number_of_key_checks() -> None:
    looked_up: list[str] = []

    def identify(token: str) -> object | None:
        looked_up.append(token)
        return None

    value = " ".join(f"w{i}=a;b" for i in range(1000)).encode()
    assert authorize("fn", [(b"authorization", value)], needs_key=False,
                     identify=identify) == [(b"authorization", value)]
    assert len(looked_up) <= 16 + 1  # the bounded candidates, plus the Bearer check


def test_the_cluster_key_opens_no_function_and_is_kept_from_all() -> None:
    """The nodes' shared secret authenticates node-to-node Logs calls only: a real KeyRing
    recognizes it (so no function ever sees it) but it is no API key on the gateway."""
    from lambdad.auth.keys import KeyRing

    cluster_key = "c" * 40
    ring = KeyRing([], cluster_key=cluster_key)
    headers = [(b"host", b"fn.localhost"), (b"authorization", f"Bearer {cluster_key}".encode())]
    refused = authorize("fn", headers, needs_key=True, identify=ring.identify)
    assert isinstance(refused, errors.Unauthenticated)
    assert authorize("fn", headers, needs_key=False, identify=ring.identify) == headers[:1]
