"""How long a cold start's import took: read from the runtime's answer to POST /init, and
shown in Server-Timing apart from lambdad's share of the start."""

from __future__ import annotations

import pytest

from lambdad.gateway.client import _server_timing
from lambdad.runtime.invocation import InvocationResponse
from lambdad.runtime.readiness import init_duration, init_error


@pytest.mark.parametrize(("reply", "ms"), [
    (b'{"initDurationMs": 1503.27}', 1503.27),
    (b'{"initDurationMs": 7}', 7.0),
    (b"{}", 0.0),  # an older runtime image: nothing to show
    (b"", 0.0),
    (b"not json", 0.0),
    (b'{"initDurationMs": "12"}', 0.0),
    (b'{"initDurationMs": true}', 0.0),
    (b'{"initDurationMs": -1}', 0.0),
    (b'{"initDurationMs": 1e308}', 0.0),
    (b"[1]", 0.0),
    # A hostile runtime's numbers (json reads NaN and Infinity) and nesting: ignored, never
    # an exception out of the start (RecursionError is none of ValueError's kin).
    (b'{"initDurationMs": NaN}', 0.0),
    (b'{"initDurationMs": Infinity}', 0.0),
    (b'{"initDurationMs": 1e999}', 0.0),
    (b'{"initDurationMs": ' + b"9" * 5000 + b"}", 0.0),
    (b"[" * 100_000, 0.0),
    (b'{"initDurationMs": ' + b"[" * 100_000, 0.0),
])
def test_init_duration_from_the_init_reply(reply: bytes, ms: float) -> None:
    assert init_duration(reply) == ms


def _response(init_ms: float = 0.0, import_ms: float = 0.0) -> InvocationResponse:
    return InvocationResponse(status=200, headers=[], version=1, cold_start=bool(init_ms),
                              function_ms=2.0, init_ms=init_ms, import_ms=import_ms)


def test_a_warm_request_has_no_init_and_no_import() -> None:
    assert _server_timing(3.5, _response()) == b"gateway;dur=1.50, function;dur=2.00"


def test_a_cold_start_that_imported_shows_the_import_within_init() -> None:
    timing = _server_timing(1560.0, _response(init_ms=1550.0, import_ms=1503.25))
    assert timing == (b"gateway;dur=8.00, function;dur=2.00, init;dur=1550.00, "
                      b"import;dur=1503.25")


def test_a_cold_start_without_an_import_time_shows_init_alone() -> None:
    """A Dockerfile function's start, or a runtime that does not say."""
    assert _server_timing(40.0, _response(init_ms=30.0)) == (
        b"gateway;dur=8.00, function;dur=2.00, init;dur=30.00")


def test_the_import_never_shows_longer_than_the_start_it_is_part_of() -> None:
    """Two clocks (the runtime's and lambdad's): import is capped at init."""
    assert _server_timing(40.0, _response(init_ms=30.0, import_ms=30.4)).endswith(
        b"init;dur=30.00, import;dur=30.00")


def test_a_deeply_nested_init_error_reply_is_shown_raw_not_raised() -> None:
    reply = b'{"errorType": ' + b"[" * 100_000
    assert init_error(reply) == reply.decode()[:500]


def test_a_start_that_fetched_its_artifact_shows_fetch_within_init() -> None:
    """Cluster mode: a node that first fetched the version's artifact (or built its image)
    says how long that took; part of init, so never longer than it."""
    response = _response(init_ms=300.0, import_ms=100.0)
    response.fetch_ms = 150.0
    assert _server_timing(310.0, response) == (
        b"gateway;dur=8.00, function;dur=2.00, init;dur=300.00, import;dur=100.00, "
        b"fetch;dur=150.00")
    response.fetch_ms = 400.0
    assert _server_timing(310.0, response).endswith(b"fetch;dur=300.00")
    warm = _response()
    warm.fetch_ms = 5.0  # never without a start
    assert b"fetch" not in _server_timing(3.5, warm)
