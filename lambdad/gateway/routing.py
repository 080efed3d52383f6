"""Maps a Host header to a function (and optionally a pinned version).

Pure and strict on purpose: anything that is not exactly `<name>.<domain>` or
`v<N>.<name>.<domain>` routes nowhere, so odd Host headers can never reach a
function by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# No leading zeros: one version has exactly one spelling.
_VERSION = re.compile(r"v([1-9][0-9]{0,9})")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Route:
    function: str
    version: int | None = None  # None: the active version


def is_function_name(label: str) -> bool:
    """A DNS label in lowercase, so every function name is a valid subdomain."""
    return _NAME.fullmatch(label) is not None


def _normalize(name: str) -> str:
    return name.lower().strip().removesuffix(".").removeprefix(".")


def subdomain(host: str | None, domain: str) -> str | None:
    """The lowercase part of `host` before `.domain`, port and trailing dot ignored."""
    if not host or host.startswith("["):  # absent, or an IPv6 literal
        return None
    name, sep, port = host.rpartition(":")
    if sep:
        if not _PORT.fullmatch(port):
            return None  # also rejects unbracketed IPv6 literals
        host = name
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    suffix = "." + _normalize(domain)
    if not host.endswith(suffix) or len(host) == len(suffix):
        return None
    return host[: -len(suffix)]


def route(host: str | None, domain: str) -> Route | None:
    """Returns where a request for `host` goes, or None if it goes nowhere."""
    prefix = subdomain(host, domain)
    if prefix is None:
        return None
    labels = prefix.split(".")
    if len(labels) == 1 and is_function_name(labels[0]):
        return Route(labels[0])
    if len(labels) == 2 and is_function_name(labels[1]):
        pinned = _VERSION.fullmatch(labels[0])
        if pinned:
            return Route(labels[1], int(pinned.group(1)))
    return None
