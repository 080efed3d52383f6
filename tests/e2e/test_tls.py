"""TLS on the TCP control API: verified with a CA file, refused without it or in clear."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad


@pytest.fixture
def tls_daemon(fresh_lambdad: Lambdad, tmp_path: Path) -> Lambdad:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    fresh_lambdad.stop()
    fresh_lambdad.extra_args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    fresh_lambdad.start()
    fresh_lambdad.tls_ca = cert  # type: ignore[attr-defined]
    return fresh_lambdad


def test_tls_with_the_ca_and_a_key(tls_daemon: Lambdad) -> None:
    ca = tls_daemon.tls_ca  # type: ignore[attr-defined]
    port = tls_daemon.grpc_port
    env = tls_daemon.env(LAMBDA_HOST=f"tls://localhost:{port}", LAMBDA_API_KEY=tls_daemon.api_key)
    ok = tls_daemon.cli("list", "-o", "json", "--tls-ca", str(ca), env=env)
    assert ok.code == 0, ok.stderr
    deployed = tls_daemon.cli("deploy", "functions/greet", "--name", "remote", "--tls-ca",
                              str(ca), env=env)
    assert deployed.code == 0, deployed.stderr
    # Without the CA the self-signed certificate is not trusted: the call cannot go through.
    untrusted = tls_daemon.cli("list", env=env)
    assert untrusted.code == 69, untrusted.stderr
    # A plaintext client cannot talk to the TLS port.
    clear = tls_daemon.cli("list", env=tls_daemon.env(
        LAMBDA_HOST=f"127.0.0.1:{port}", LAMBDA_API_KEY=tls_daemon.api_key))
    assert clear.code == 69
