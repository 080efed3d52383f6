"""API keys and roles for the TCP control API."""

from lambdad.auth.keys import (
    READ_ENV_ROLE,
    ROLES,
    ApiKey,
    Identity,
    KeyRing,
    allowed,
    new_secret,
    parse_token,
    required_role,
)

__all__ = ["READ_ENV_ROLE", "ROLES", "ApiKey", "Identity", "KeyRing", "allowed", "new_secret",
           "parse_token", "required_role"]
