"""Value parsers: text in (a flag, a variable, or a TOML value turned into text), value
out. They raise ValueError with a message that reads well after "SOURCE: "."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lambdad.config import MIB, Listen, Raw


def mib(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a size in MiB, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive size in MiB, got {text!r}")
    return int(value * MIB)


def mib_or_zero(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a size in MiB, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"expected a size in MiB >= 0, got {text!r}")
    return int(value * MIB)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise ValueError(f"expected a number of seconds > 0, got {text!r}")
    return value


def count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def port(text: str) -> int:
    value = count(1)(text)
    if value > 65535:
        raise ValueError(f"expected a port 1-65535, got {text!r}")
    return value


def optional_listen(text: str) -> Listen | None:
    return None if text.lower() in ("", "none", "off", "false") else Listen.parse(text)


def path(text: str) -> Path:
    if not text:
        raise ValueError("expected a path, got an empty string")
    return Path(text).expanduser()


NO_FILE = "none"


def path_or_none(text: str) -> str:
    """A path, or NO_FILE for 'none' (kept apart from unset, whose default is derived)."""
    if text.strip().lower() in ("none", "off", "false"):
        return NO_FILE
    return str(path(text))


_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def domain(text: str) -> str:
    domain = text.strip(".").lower()
    if not domain or len(domain) > 253 or not all(_LABEL.match(p) for p in domain.split(".")):
        raise ValueError(f"expected a DNS name such as example.com, got {text!r}")
    return domain


def image_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*(:[\w][\w.-]{0,127})?", text):
        raise ValueError(f"expected a Docker image name, got {text!r}")
    return text


def node_name(text: str) -> str:
    """A node's name: shown in tables and log tags, so short and printable."""
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62})", text):
        raise ValueError(f"expected a name of letters, digits, '.', '_' and '-' (at most 63), "
                         f"got {text!r}")
    return text


def host_port(text: str) -> str:
    """HOST:PORT another node can dial (kept as text; parsed as a listen address)."""
    from lambdad.config import Listen

    address = Listen.parse(text)
    if address.host in ("0.0.0.0", "::") or address.port == 0:
        raise ValueError(f"expected an address other nodes can dial, not a wildcard, "
                         f"got {text!r}")
    return text


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def as_text(value: Raw) -> str:
    """A TOML value as the text its parser reads (2.0 as "2")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
