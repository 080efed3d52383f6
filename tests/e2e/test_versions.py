"""Versions, rollback, pinned versions, config-only versions and retention, end to end."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad

pytestmark = pytest.mark.slow

SOURCE = (
    "import os\n\n"
    "def handler(event, context):\n"
    "    return {'code': %r, 'version': context.function_version,\n"
    "            'colour': os.environ.get('COLOUR')}\n"
)


def _code(folder: Path, label: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(SOURCE % label)
    return folder


def _versions(daemon: Lambdad, name: str) -> list[dict[str, object]]:
    result = daemon.cli("versions", name, "-o", "json")
    assert result.code == 0, result.stderr
    return list(result.json())


def test_versions_rollback_pinned_and_config(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    lambdad.deploy(_code(folder, "one"), "--name", "app")
    lambdad.deploy(_code(folder, "two"), "--name", "app")
    lambdad.deploy(_code(folder, "three"), "--name", "app")
    assert lambdad.http("app").json()["code"] == "three"

    listed = _versions(lambdad, "app")
    assert [(v["version"], v["active"]) for v in listed] == [(1, False), (2, False), (3, True)]
    assert all(v["deployed_by"] == "local" and len(v["active_periods"]) == 1 for v in listed)
    table = lambdad.cli("versions", "app").stdout.splitlines()
    assert table[0].split()[:4] == ["VERSION", "CREATED", "BY", "CODE"]
    assert table[3].split()[0] == "*" and table[3].split()[1] == "3"

    # Pinned versions answer whatever is active, by URL and by invoke --version.
    port = lambdad.gateway_port
    pinned = lambdad.http(None, host=f"v1.app.localhost:{port}")
    assert pinned.status == 200 and pinned.json()["code"] == "one"
    assert pinned.headers["lambda-version"] == "1"
    invoked = lambdad.cli("invoke", "app", "--version", "2")
    assert json.loads(invoked.stdout)["code"] == "two"
    assert lambdad.http(None, host=f"v9.app.localhost:{port}").status == 404

    # Rollback: to the previous version, instantly, recorded, not a new version.
    rolled = lambdad.cli("rollback", "app")
    assert rolled.code == 0, rolled.stderr
    assert "from version 3 to version 2" in rolled.stderr
    assert lambdad.http("app").json()["code"] == "two"
    listed = _versions(lambdad, "app")
    assert [v["version"] for v in listed] == [1, 2, 3]
    periods = {v["version"]: v["active_periods"] for v in listed}
    assert [p["reason"] for p in periods[2]] == ["deploy", "rollback"]  # type: ignore[union-attr]
    assert periods[3][0]["deactivated_at"] is not None  # type: ignore[index]
    assert lambdad.cli("rollback", "app", "--to", "3").code == 0
    assert lambdad.http("app").json()["code"] == "three"
    assert lambdad.cli("rollback", "app", "--to", "3").code == 8  # already active
    assert lambdad.cli("rollback", "app", "--to", "42").code == 4

    # Config without code: a new version reusing the image; a rollback reverts it.
    configured = lambdad.cli("config", "app", "--env", "COLOUR=blue", "--timeout", "12")
    assert configured.code == 0, configured.stderr
    assert "version 4 is live" in configured.stderr
    assert lambdad.http("app").json() == {"code": "three", "version": "4", "colour": "blue"}
    v3, v4 = _versions(lambdad, "app")[2:]
    assert v4["image_id"] == v3["image_id"] and v4["source_version"] == 3
    shown = lambdad.cli("get", "app", "-o", "json").json()
    assert shown["config"]["env"] == {"COLOUR": "****"}
    assert shown["config"]["timeout_ms"] == 12_000
    assert "COLOUR=blue" in lambdad.cli("get", "app", "--show-env").stdout
    assert lambdad.cli("rollback", "app").code == 0
    assert lambdad.http("app").json()["colour"] is None


def test_retention_prunes_old_images_and_refuses_rollback_to_them(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    daemon.stop()
    daemon.extra_args += ["--keep-versions", "2"]
    daemon.start()
    folder = tmp_path / "kept"
    for label in ("one", "two", "three"):
        daemon.deploy(_code(folder, label), "--name", "kept")
    listed = _versions(daemon, "kept")
    assert [(v["version"], v["pruned"]) for v in listed] == [(1, True), (2, False), (3, False)]
    artifacts = daemon.state_dir / "artifacts" / "kept"
    assert sorted(p.name for p in artifacts.iterdir()) == ["v2", "v3"]
    refused = daemon.cli("rollback", "kept", "--to", "1")
    assert refused.code == 8 and "was pruned" in refused.stderr
    gone = daemon.http(None, host=f"v1.kept.localhost:{daemon.gateway_port}")
    assert gone.status == 404 and "pruned" in gone.json()["message"]
    assert daemon.cli("rollback", "kept").code == 0  # to 2, which is kept
    assert daemon.http("kept").json()["code"] == "two"


def test_rollback_under_load_fails_no_request(lambdad: Lambdad, tmp_path: Path) -> None:
    from tests.e2e.test_scaling import _load

    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import time\n\ndef handler(event, context):\n    time.sleep(0.01)\n"
        "    return {'version': context.function_version}\n"
    )
    (folder / "lambda.toml").write_text('name = "busy"\n[scaling]\nconcurrency = 10\n')
    lambdad.deploy(folder)
    lambdad.deploy(folder)

    def rollback() -> None:
        result = lambdad.cli("rollback", "busy")
        assert result.code == 0, result.stderr

    statuses, versions, errors = _load(lambdad, 30, rollback)
    assert errors == [], errors[:3]
    assert set(statuses) == {200}
    assert versions["2"] > 0 and versions["1"] > 0, versions


def test_state_survives_kill_9_including_rollbacks(fresh_lambdad: Lambdad, tmp_path: Path) -> None:
    daemon = fresh_lambdad
    folder = tmp_path / "durable"
    daemon.deploy(_code(folder, "one"), "--name", "durable")
    daemon.deploy(_code(folder, "two"), "--name", "durable")
    daemon.cli("config", "durable", "--env", "COLOUR=red")
    assert daemon.cli("rollback", "durable", "--to", "1").code == 0
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert daemon.http("durable").json()["code"] == "one"
    listed = _versions(daemon, "durable")
    assert [(v["version"], v["active"]) for v in listed] == [(1, True), (2, False), (3, False)]
    assert daemon.http(None, host=f"v3.durable.localhost:{daemon.gateway_port}").json()[
        "colour"] == "red"


def test_an_older_schema_is_migrated_after_a_backup(tmp_path: Path) -> None:
    from lambdad.store.migrations import MIGRATIONS, SCHEMA_VERSION, migrate

    path = tmp_path / "lambda.db"
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)  # the schema of the first release
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO functions VALUES ('old', 1, '2026-01-01 00:00:00')")
    db.execute(
        "INSERT INTO versions VALUES ('old', 1, 'lambda-fn/old:v1', 'sha256:x', "
        "'{\"runtime\": \"python3.11\", \"handler\": \"handler.handler\", \"timeout_s\": 30, "
        "\"memory_mb\": 128}', 'ab', 10, '2026-01-01 00:00:00', 'local')"
    )
    db.close()
    assert migrate(path) == 1
    backup = tmp_path / "lambda.db.bak-v1"
    assert backup.exists()
    with sqlite3.connect(backup) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    with sqlite3.connect(path) as new:
        assert new.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert new.execute("SELECT pruned, source_version FROM versions").fetchall() == [
            (0, None)]
        assert new.execute("SELECT function, version, reason FROM activations").fetchall() == [
            ("old", 1, "deploy")]


def test_concurrent_deploys_are_serialized(lambdad: Lambdad, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.daemon import ROOT

    folder = _code(tmp_path / "twice", "same")
    command = [sys.executable, "-m", "lambdactl", "deploy", str(folder), "--name", "twice"]
    deploys = [subprocess.Popen(command, env=lambdad.env(), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [d.wait(timeout=120) for d in deploys] == [0, 0, 0]
    assert [v["version"] for v in _versions(lambdad, "twice")] == [1, 2, 3]
    assert lambdad.http("twice").json()["version"] == "3"


def test_delete_during_a_deploy_is_refused(lambdad: Lambdad, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from tests.support.daemon import ROOT

    folder = _code(tmp_path / "slowbuild", "v1")
    lambdad.deploy(folder, "--name", "slowbuild")
    (folder / "Dockerfile").write_text(
        "FROM lambda-runtime/python:3.11\nRUN sleep 3\nCOPY handler.py /var/task/\n"
        'ENV _HANDLER=handler.handler\n'
    )
    deploy = subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "deploy", str(folder), "--name", "slowbuild"],
        env=lambdad.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while lambdad.cli("get", "slowbuild", "-o", "json").json()["status"] != "deploying":
        assert time.monotonic() < deadline, "the deploy never showed as deploying"
        time.sleep(0.1)
    refused = lambdad.cli("delete", "slowbuild")
    assert refused.code == 8 and "being deployed" in refused.stderr
    assert deploy.wait(timeout=120) == 0
    assert lambdad.http("slowbuild").json()["code"] == "v1"  # same code, version 2
    assert lambdad.http("slowbuild").json()["version"] == "2"
