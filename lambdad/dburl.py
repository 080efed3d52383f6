"""The `database` setting's value: 'sqlite' or a postgresql:// URL, and the one printable
form of such a URL (`redacted`: no password). Pure, without Peewee or psycopg, so the
config package (and the man page build) can use it."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

SQLITE = "sqlite"
_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(database: str | Path) -> bool:
    return isinstance(database, str) and database.startswith(_SCHEMES)


def parse_setting(text: str) -> str:
    """The `database` setting: 'sqlite' or a postgresql:// URL (checked, not connected)."""
    value = text.strip()
    if value == SQLITE:
        return value
    if not is_postgres(value):
        raise ValueError("expected 'sqlite' or a postgresql://USER@HOST/DBNAME URL, got "
                         f"{redacted(value)!r}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"not a usable PostgreSQL URL ({exc}): {redacted(value)}") from None
    return value


def _passwords(url: str) -> list[str]:
    """The password the URL carries (in its userinfo or as a `password=` parameter), as
    written and decoded."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password" and value:
                found += [value, quote(value, safe="")]
    found += re.findall(r"password\s*=\s*'?([^'\s&]+)", url)
    return sorted({p for p in found if p}, key=len, reverse=True)


def redacted(url: str) -> str:
    """The URL with its password replaced by `***`: the only form logs, errors and
    --check-config show. Any scheme://user:password@ form is redacted (a mistyped
    scheme is printed in an error), and a libpq key=value string's `password=`."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs],
                          safe="/*", quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """`text` (a driver's message) without the URL's password, however it got there."""
    text = text.replace(url, redacted(url))
    for password in _passwords(url):
        text = text.replace(password, "***")
    return text
