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
from collections.abc import Callable
from dataclasses import dataclass

ROLES = ("invoker", "deployer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_TOKEN = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})\Z")

# The least role each control API method needs; anything unlisted needs admin. Reading
# environment values (GetFunction with show_env) needs deployer too: see READ_ENV_ROLE.
METHOD_ROLES = {
    "Invoke": "invoker", "ListFunctions": "invoker", "GetFunction": "invoker",
    "Logs": "invoker", "GetStats": "invoker", "ListVersions": "invoker",
    "ListInvocations": "invoker", "GetInvocation": "invoker", "ListSchedules": "invoker",
    "GetVersion": "invoker", "ListNodes": "invoker",
    "Deploy": "deployer", "DeleteFunction": "deployer", "Rollback": "deployer",
    "UpdateConfig": "deployer", "Redrive": "deployer", "CreateSchedule": "deployer",
    "DeleteSchedule": "deployer",
    "CreateKey": "admin", "ListKeys": "admin", "RevokeKey": "admin",
}
# Environment values are where secrets go, and whoever can deploy can read them anyway
# (a deployed handler can print its environment); an invoker sees only the names.
READ_ENV_ROLE = "deployer"
# Cluster mode: the other nodes call with the shared cluster key (cluster_key_file), as
# this role. It is outside the invoker < deployer < admin ranks: it may read this node's
# own log lines (Logs, forced local_only by the servicer, so a peer never fans out again)
# and the nodes table, and nothing else. A leaked cluster key reads logs; it deploys,
# invokes and mints keys nowhere.
CLUSTER_ROLE = "cluster"
CLUSTER_METHODS = frozenset({"Logs", "ListNodes"})


@dataclass(frozen=True)
class Identity:
    """Who a valid token belongs to. `key_id` is "" for --api-key-file keys, which are
    not in the key table and cannot be revoked (only removed from the file)."""

    key_id: str
    name: str
    role: str


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


def bearer_credentials(value: str) -> str | None:
    """The credentials of an `Authorization` value in the Bearer scheme, else None.

    Auth schemes are case-insensitive (RFC 9110 11.1), and the blanks between the
    scheme and its token are taken as they come (spaces, tabs, several of them).
    """
    parts = value.strip().split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return None


def parse_token(token: str) -> tuple[str, str] | None:
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def required_role(method: str) -> str:
    """`/lambdad.api.v1.FunctionService/Deploy` -> "deployer"."""
    return METHOD_ROLES.get(method.rsplit("/", 1)[-1], "admin")


def allowed(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


def cluster_may_call(method: str) -> bool:
    """`/lambdad.api.v1.FunctionService/Logs` -> True: the cluster role's only methods."""
    return method.rsplit("/", 1)[-1] in CLUSTER_METHODS


class KeyRing:
    """The keys the daemon accepts on TCP, in memory: checking one costs no SQLite.

    Calls that outlive their authorization check (a followed log, a deploy) `watch`
    their key; revoking it calls them back at once, so they can end.
    """

    def __init__(self, bootstrap: list[str], *, cluster_key: str | None = None) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._bootstrap = [token.encode() for token in bootstrap]
        self._cluster_key = cluster_key.encode() if cluster_key else None
        self._watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._next_watch = 0

    def load(self, keys: list[ApiKey]) -> None:
        """Replaces every key by the stored ones (at start, and in cluster mode whenever
        another node changed them): calls watching a key now revoked, or gone, end."""
        self._keys = {key.id: key for key in keys}
        for key_id in list(self._watchers):
            key = self._keys.get(key_id)
            if key is None or key.revoked_at is not None:
                for on_revoke in list(self._watchers.pop(key_id, {}).values()):
                    on_revoke()

    def put(self, key: ApiKey) -> None:
        self._keys[key.id] = key
        if key.revoked_at is not None:
            for on_revoke in list(self._watchers.pop(key.id, {}).values()):
                on_revoke()

    def watch(self, key_id: str, on_revoke: Callable[[], None]) -> Callable[[], None]:
        """Calls `on_revoke` once if the key is revoked; returns the function that stops
        watching. A key already revoked calls back at once."""
        key = self._keys.get(key_id)
        if key is not None and key.revoked_at is not None:
            on_revoke()
            return lambda: None
        token = self._next_watch
        self._next_watch += 1
        self._watchers.setdefault(key_id, {})[token] = on_revoke

        def unwatch() -> None:
            watchers = self._watchers.get(key_id)
            if watchers is not None:
                watchers.pop(token, None)
                if not watchers:
                    del self._watchers[key_id]

        return unwatch

    def watching(self) -> int:
        """How many calls watch a key (for tests and leak checks)."""
        return sum(len(w) for w in self._watchers.values())

    @property
    def empty(self) -> bool:
        return (not self._bootstrap and self._cluster_key is None
                and not any(k.revoked_at is None for k in self._keys.values()))

    def identify(self, token: str) -> tuple[str, str] | None:
        """(key name, role) for a valid, unrevoked token; None otherwise."""
        identity = self.resolve(token)
        return None if identity is None else (identity.name, identity.role)

    def resolve(self, token: str) -> Identity | None:
        """The identity of a valid, unrevoked token; None otherwise."""
        raw = token.encode()
        for bootstrap in self._bootstrap:  # --api-key-file keys act as admin
            if hmac.compare_digest(raw, bootstrap):
                return Identity("", "bootstrap", "admin")
        if self._cluster_key is not None and hmac.compare_digest(raw, self._cluster_key):
            return Identity("", "cluster", CLUSTER_ROLE)
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = self._keys.get(parsed[0])
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(digest(key.salt, parsed[1]), key.digest):
            return None
        return Identity(key.id, key.name, key.role)
