"""Function names are DNS labels because each one becomes a subdomain of the gateway."""

from __future__ import annotations

import re

from lambdad.errors import InvalidArgument

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def is_valid_name(name: str) -> bool:
    return bool(_LABEL.match(name))


def validate_name(name: str) -> str:
    if not name:
        raise InvalidArgument("function name is empty")
    if not is_valid_name(name):
        raise InvalidArgument(
            f"invalid function name {name[:80]!r}: use 1-63 lowercase letters, digits and "
            "dashes, not starting or ending with a dash (it becomes a DNS label)"
        )
    return name
