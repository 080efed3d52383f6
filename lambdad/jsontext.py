"""Parsing JSON that someone else wrote: a client, a deployer, a function.

`json.loads` fails in two ways: ValueError (and UnicodeDecodeError, one of them) for
text that is not JSON, and RecursionError for JSON nested deeper than the
interpreter's recursion limit (200,000 `[` in an anonymous event). Code that caught
only ValueError let the second escape: the gateway dropped the connection without
an answer and logged a traceback per request. Every parse of JSON from outside goes
through `parse_json`, which turns both into one InvalidArgument (400 at the gateway,
INVALID_ARGUMENT over gRPC, exit 5 in lambdactl).
"""

from __future__ import annotations

import json
from typing import Any

from lambdad.errors import InvalidArgument


def parse_json(data: bytes | str, what: str) -> Any:
    """The value `data` holds; InvalidArgument naming `what` if it is not usable JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidArgument(f"{what} must be JSON: it is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise InvalidArgument(f"{what} must be JSON: {exc}") from None
