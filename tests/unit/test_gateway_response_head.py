"""The response head's one-regex validation (`responses.valid_head`): it may only let through
what h11's own per-header checks let through, and it must let the usual heads through (else
it saves nothing). A head it refuses goes through h11's checks, which name the fault."""

from __future__ import annotations

import random
from typing import Any

import h11
import pytest

from lambdad.gateway.responses import response_event, valid_head

ALPHABET = [b"a", b"Z", b"0", b"-", b"!", b"~", b" ", b"\t", b"\x00", b"\n", b"\n", b"\n",
            b"\r", b"\x0b", b"\x0c", b"\x7f", b"\x80", b"\xff", b":", b";", b",", b"\"", b"=",
            b"/", b"\x1f", b"\x85", b"\xa0"]


def random_bytes(rng: random.Random) -> bytes:
    return b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 6)))


def h11_accepts(headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        h11.Response(status_code=200, headers=headers)
    except h11.LocalProtocolError:
        return False
    return True


def test_the_one_regex_check_never_accepts_what_h11_refuses() -> None:
    rng = random.Random(16)
    accepted = 0
    for _ in range(20_000):
        headers = [(random_bytes(rng) if rng.random() < 0.3 else b"x-name",
                    random_bytes(rng)) for _ in range(rng.randrange(1, 4))]
        if valid_head(headers):
            accepted += 1
            assert h11_accepts(headers), headers
            assert response_event(200, headers) == h11.Response(status_code=200,
                                                                headers=headers, reason=b"OK")
    assert accepted > 1000  # the random heads did reach the accepting side


@pytest.mark.parametrize("value", [b"a\nb", b"a\rb", b"a\x00b", b" lead", b"trail ", b"a\x0bb"])
def test_a_bad_value_is_refused_by_both_and_h11_names_it(value: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-bad", value)]
    assert not valid_head(headers)
    with pytest.raises(h11.LocalProtocolError, match="Illegal header value"):
        response_event(200, headers)


def test_a_usual_head_takes_the_quick_way_and_framing_is_still_h11_s() -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", b"28"),
            (b"lambda-request-id", b"0f8e8c1a-4b7e-4d7a-9c1e-2a3b4c5d6e7f"),
            (b"server-timing", b"gateway;dur=0.12, function;dur=0.05"), (b"x-empty", b"")]
    assert valid_head(head)
    assert response_event(200, head).headers == h11.Response(status_code=200,
                                                            headers=head).headers
    assert not valid_head([(b"bad name", b"x")]) and not valid_head([])
    text: Any = [("content-type", "text/plain")]  # str: h11 converts it
    assert not valid_head(text)
    assert response_event(200, text).headers[0] == (
        b"content-type", b"text/plain")
    with pytest.raises(h11.LocalProtocolError, match="Content-Length"):
        response_event(200, [(b"content-length", b"1"), (b"content-length", b"2")])
    with pytest.raises(h11.LocalProtocolError, match="chunked"):
        response_event(200, [(b"transfer-encoding", b"gzip")])
