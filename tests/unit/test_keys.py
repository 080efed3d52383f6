"""The key ring in memory: identities, roles, and revocation call-backs for open streams."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

from lambdad.auth import READ_ENV_ROLE, ApiKey, Identity, KeyRing, allowed, required_role
from lambdad.auth.keys import digest, new_secret


def _key(name: str, role: str) -> tuple[ApiKey, str]:
    key_id, token = new_secret()
    salt = secrets.token_hex(16)
    return ApiKey(key_id, name, role, salt, digest(salt, token.split("_", 2)[2]),
                  time.time()), token


def test_resolve_tells_revocable_keys_from_bootstrap_ones() -> None:
    ring = KeyRing(["bootstrap-secret-0123456789"])
    key, token = _key("ci", "deployer")
    ring.load([key])
    assert ring.resolve(token) == Identity(key.id, "ci", "deployer")
    assert ring.resolve("bootstrap-secret-0123456789") == Identity("", "bootstrap", "admin")
    assert ring.identify(token) == ("ci", "deployer")
    assert ring.resolve(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    ring.put(replace(key, revoked_at=time.time()))
    assert ring.resolve(token) is None


def test_revocation_calls_each_watcher_of_that_key_once() -> None:
    ring = KeyRing([])
    first, _ = _key("a", "invoker")
    second, _ = _key("b", "invoker")
    ring.load([first, second])
    calls: list[str] = []
    ring.watch(first.id, lambda: calls.append("a1"))
    unwatch = ring.watch(first.id, lambda: calls.append("a2"))
    ring.watch(second.id, lambda: calls.append("b"))
    unwatch()
    assert ring.watching() == 2
    ring.put(first)  # an update that is not a revocation
    assert calls == []
    ring.put(replace(first, revoked_at=time.time()))
    assert calls == ["a1"]
    ring.put(replace(first, revoked_at=time.time()))  # revoked twice: no second call
    assert calls == ["a1"]
    assert ring.watching() == 1
    # Watching a key already revoked calls back at once (revoked between check and watch).
    ring.watch(first.id, lambda: calls.append("late"))
    assert calls == ["a1", "late"] and ring.watching() == 1


def test_reading_environment_values_needs_more_than_invoking() -> None:
    assert required_role("/lambdad.api.v1.FunctionService/GetFunction") == "invoker"
    assert not allowed("invoker", READ_ENV_ROLE)
    assert allowed("deployer", READ_ENV_ROLE) and allowed("admin", READ_ENV_ROLE)
    assert required_role("/lambdad.api.v1.FunctionService/SomethingNew") == "admin"
