"""JSON from outside: every way it can fail is one InvalidArgument, RecursionError included."""

from __future__ import annotations

import pytest

from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json


def test_valid_json_is_parsed() -> None:
    assert parse_json(b'{"a": [1, 2]}', "the payload") == {"a": [1, 2]}
    assert parse_json("[" * 100 + "]" * 100, "the payload") is not None


@pytest.mark.parametrize(("data", "reason"), [
    (b"[" * 200_000, "nested too deeply"),  # RecursionError, not a ValueError
    (b'{"a":' * 100_000, "nested too deeply"),
    (b"{nope", "Expecting property name"),
    (b"\xff\xfe{}", "must be JSON"),  # not UTF-8 (UnicodeDecodeError)
    (b"", "Expecting value"),
])
def test_every_failure_is_invalid_argument_naming_what(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_json(data, "the payload")
    assert raised.value.message.startswith("the payload must be JSON")
    assert reason in raised.value.message
