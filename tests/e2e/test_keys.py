"""API keys and roles on TCP: created over the Unix socket, checked on every call."""

from __future__ import annotations

import sqlite3

from tests.support.daemon import Lambdad


def _tcp(daemon: Lambdad, key: str) -> dict[str, str]:
    return daemon.env(LAMBDA_HOST=f"127.0.0.1:{daemon.grpc_port}", LAMBDA_API_KEY=key)


def _create(daemon: Lambdad, name: str, role: str) -> str:
    result = daemon.cli("keys", "create", "--name", name, "--role", role)
    assert result.code == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("lk_") and "not shown again" in result.stderr
    return secret


def test_roles_revocation_and_hashed_storage(lambdad: Lambdad) -> None:
    invoker = _create(lambdad, "reader", "invoker")
    deployer = _create(lambdad, "ci", "deployer")
    admin = _create(lambdad, "ops", "admin")

    # invoker: invoke, list, get, logs; nothing that changes the system.
    assert lambdad.cli("list", env=_tcp(lambdad, invoker)).code == 0
    denied = lambdad.cli("deploy", "functions/greet", "--name", "keyed",
                         env=_tcp(lambdad, invoker))
    assert denied.code == 77 and "needs deployer" in denied.stderr
    # deployer: deploys, and the version records who deployed it.
    assert lambdad.cli("deploy", "functions/greet", "--name", "keyed",
                       env=_tcp(lambdad, deployer)).code == 0
    versions = lambdad.cli("versions", "keyed", "-o", "json").json()
    assert versions[0]["deployed_by"] == "ci"
    assert lambdad.cli("invoke", "keyed", env=_tcp(lambdad, invoker)).code == 0
    keys_denied = lambdad.cli("keys", "list", env=_tcp(lambdad, deployer))
    assert keys_denied.code == 77 and "needs admin" in keys_denied.stderr
    # admin: keys too.
    listed = lambdad.cli("keys", "list", "-o", "json", env=_tcp(lambdad, admin)).json()
    assert {k["name"]: k["role"] for k in listed} == {
        "reader": "invoker", "ci": "deployer", "ops": "admin"}
    # Revoked keys stop working at once; others keep working.
    assert lambdad.cli("keys", "revoke", "ci").code == 0
    revoked = lambdad.cli("list", env=_tcp(lambdad, deployer))
    assert revoked.code == 77 and "invalid or revoked" in revoked.stderr
    assert lambdad.cli("list", env=_tcp(lambdad, invoker)).code == 0
    # A forged secret with a real id is refused.
    forged = invoker[:16] + "x" * (len(invoker) - 16)
    assert lambdad.cli("list", env=_tcp(lambdad, forged)).code == 77
    # Only salted digests are stored: no secret appears in the database file.
    with sqlite3.connect(lambdad.state_dir / "lambda.db") as db:
        rows = db.execute("SELECT id, digest, salt FROM api_keys").fetchall()
    assert len(rows) == 3
    raw = (lambdad.state_dir / "lambda.db").read_bytes()
    for secret in (invoker, deployer, admin):
        assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw
    assert invoker not in lambdad.log()
    duplicate = lambdad.cli("keys", "create", "--name", "reader")
    assert duplicate.code == 8


def test_keys_survive_a_restart(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    key = _create(daemon, "keeper", "invoker")
    daemon.stop()
    daemon.start()
    assert daemon.cli("list", env=_tcp(daemon, key)).code == 0


def test_function_with_key_auth_needs_a_key_at_the_gateway(
    lambdad: Lambdad, tmp_path: object
) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "private"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "def handler(event, context):\n"
        "    return {'saw_authorization': 'authorization' in event['headers']}\n")
    (folder / "lambda.toml").write_text('name = "private"\nauth = "key"\n')
    lambdad.deploy(folder)
    key = _create(lambdad, "caller", "invoker")
    missing = lambdad.http("private")
    assert missing.status == 401 and missing.json()["error"] == "unauthenticated"
    wrong = lambdad.http("private", headers={"Authorization": "Bearer lk_000000000000_nope"})
    assert wrong.status == 401
    allowed = lambdad.http("private", headers={"Authorization": f"Bearer {key}"})
    assert allowed.status == 200
    assert allowed.json() == {"saw_authorization": False}  # the key never reaches the code
    lambdad.cli("keys", "revoke", "caller")
    assert lambdad.http("private", headers={"Authorization": f"Bearer {key}"}).status == 401
    # Functions without auth = "key" stay open.
    lambdad.deploy("greet", "--name", "public")
    assert lambdad.http("public", "/?name=x").status == 200
