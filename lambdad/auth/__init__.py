"""API keys and roles for the TCP control API."""

from lambdad.auth.keys import (
    ROLES,
    ApiKey,
    KeyRing,
    allowed,
    new_secret,
    parse_token,
    required_role,
)

__all__ = ["ROLES", "ApiKey", "KeyRing", "allowed", "new_secret", "parse_token",
           "required_role"]
