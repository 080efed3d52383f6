"""The files a TCP control API needs: the API keys and the TLS certificate and key."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from lambdad.config import Config
from lambdad.host import StartupError


def read_api_keys(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise StartupError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise StartupError(f"--api-key-file {path} holds no key")
    return keys


def tls_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The TCP listener's credentials; None where there is no TCP listener or no TLS."""
    if config.grpc_listen is None or (config.tls_cert is None and config.tls_key is None):
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise StartupError("--tls-cert and --tls-key go together")
    try:
        chain = config.tls_cert.read_bytes()
        key = config.tls_key.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read the TLS certificate or key: {exc}") from None
    check_tls_pair(config.tls_cert, config.tls_key)
    return grpc.ssl_server_credentials([(key, chain)])


def check_tls_pair(cert: Path, key: Path) -> None:
    """gRPC takes any bytes here and only fails to bind later, which lambdad reported as
    "the address is in use": a wrong file must fail the start naming the files instead.
    No passphrase prompt (gRPC cannot use an encrypted key anyway)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise StartupError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate chain and its "
            f"unencrypted private key ({exc})") from None
