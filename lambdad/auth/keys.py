"""API keys: `lk_<id>_<secret>`, stored as a salted SHA-256 of the secret, never in clear.

The secret is 32 random bytes, so a fast salted hash is enough (slow KDFs exist for
guessable passwords); comparison is constant-time. The id is visible so a key can be
listed and revoked without its secret. Roles nest: invoker < deployer < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

ROLES = ("invoker", "deployer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_TOKEN = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})\Z")

# The least role each control API method needs; anything unlisted needs admin.
METHOD_ROLES = {
    "Invoke": "invoker", "ListFunctions": "invoker", "GetFunction": "invoker",
    "Logs": "invoker", "GetStats": "invoker", "ListVersions": "invoker",
    "ListInvocations": "invoker", "GetInvocation": "invoker", "ListSchedules": "invoker",
    "GetVersion": "invoker",
    "Deploy": "deployer", "DeleteFunction": "deployer", "Rollback": "deployer",
    "UpdateConfig": "deployer", "Redrive": "deployer", "CreateSchedule": "deployer",
    "DeleteSchedule": "deployer",
    "CreateKey": "admin", "ListKeys": "admin", "RevokeKey": "admin",
}


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    salt: str
    digest: str
    created_at: float
    revoked_at: float | None = None


def new_secret() -> tuple[str, str]:
    """(key id, full token to show once)."""
    key_id = secrets.token_hex(6)
    return key_id, f"lk_{key_id}_{secrets.token_urlsafe(32)}"


def digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def required_role(method: str) -> str:
    """`/lambdad.api.v1.FunctionService/Deploy` -> "deployer"."""
    return METHOD_ROLES.get(method.rsplit("/", 1)[-1], "admin")


def allowed(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


class KeyRing:
    """The keys the daemon accepts on TCP, in memory: checking one costs no SQLite."""

    def __init__(self, bootstrap: list[str]) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._bootstrap = [token.encode() for token in bootstrap]

    def load(self, keys: list[ApiKey]) -> None:
        self._keys = {key.id: key for key in keys}

    def put(self, key: ApiKey) -> None:
        self._keys[key.id] = key

    @property
    def empty(self) -> bool:
        return not self._bootstrap and not any(k.revoked_at is None for k in self._keys.values())

    def identify(self, token: str) -> tuple[str, str] | None:
        """(key name, role) for a valid, unrevoked token; None otherwise."""
        raw = token.encode()
        for bootstrap in self._bootstrap:  # --api-key-file keys act as admin
            if hmac.compare_digest(raw, bootstrap):
                return "bootstrap", "admin"
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = self._keys.get(parsed[0])
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(digest(key.salt, parsed[1]), key.digest):
            return None
        return key.name, key.role
