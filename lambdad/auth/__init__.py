"""API keys and roles: the TCP control API's (`keys.py`) and the gateway's key check (`http.py`)."""

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
