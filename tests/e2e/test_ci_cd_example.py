"""docs/examples/deploy-functions.sh against a real lambdad over TLS with a deployer key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = ROOT / "docs" / "examples" / "deploy-functions.sh"
HANDLER = 'def handler(event, context):\n    {body}\n'


def write_function(folder: Path, body: str, smoke: str | None = '{"name": "ci"}') -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lambda.toml").write_text('handler = "handler.handler"\ntimeout = 10\n')
    (folder / "handler.py").write_text(HANDLER.format(body=body))
    if smoke is not None:
        (folder / "smoke.json").write_text(smoke)


def test_pipeline_deploys_smoke_tests_and_rolls_back(fresh_lambdad: Lambdad,
                                                      tmp_path: Path) -> None:
    daemon = fresh_lambdad
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    daemon.stop()
    daemon.extra_args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    daemon.start()
    created = daemon.cli("keys", "create", "--name", "ci", "--role", "deployer")
    assert created.code == 0, created.stderr
    repo = tmp_path / "repo"
    write_function(repo / "functions" / "hello", 'return {"hi": event["name"]}')
    write_function(repo / "functions" / "flaky", "return 1")
    shutil.copy(SCRIPT, repo / "deploy.sh")
    env = {k: v for k, v in daemon.env().items() if k != "LAMBDA_HOST"}
    env.update(LAMBDA_HOST=f"tls://localhost:{daemon.grpc_port}",
               LAMBDA_API_KEY=created.stdout.strip(), LAMBDA_TLS_CA=str(cert),
               PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")

    def pipeline(*folders: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "deploy.sh", *folders], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)

    def active(name: str) -> int:
        got = daemon.cli("get", name, "-o", "json")
        assert got.code == 0, got.stderr
        version: int = got.json()["version"]
        return version

    first = pipeline()  # default: every folder under functions/
    assert first.returncode == 0, first.stdout + first.stderr
    assert "hello: smoke test passed" in first.stdout and "flaky: smoke test passed" in first.stdout
    assert active("hello") == 1 and active("flaky") == 1

    # The next push breaks flaky at run time: deployed as v2, smoke test fails, rolled back.
    write_function(repo / "functions" / "flaky", 'raise RuntimeError("broken")')
    second = pipeline()
    assert second.returncode == 1, second.stdout + second.stderr
    assert "smoke test of flaky failed (exit 1): rolling back" in second.stderr
    assert active("flaky") == 1 and active("hello") == 2
    assert daemon.http("flaky", "/").status == 200  # v1 serves again

    # A push that cannot build keeps the live version and reports the CLI's exit code.
    (repo / "functions" / "hello" / "lambda.toml").write_text("handler = 'handler.handler'\n"
                                                               "memory = 1\n")
    third = pipeline("functions/hello/")
    assert third.returncode == 5, third.stdout + third.stderr
    assert "deploy of hello failed (exit 5); the previous version stays live" in third.stderr
    assert active("hello") == 2

    # Without a key the script refuses before calling anything.
    no_key = subprocess.run(["bash", "deploy.sh"], cwd=repo, capture_output=True, text=True,
                            env={k: v for k, v in env.items() if k != "LAMBDA_API_KEY"})
    assert no_key.returncode == 78 and "deployer key" in no_key.stderr
