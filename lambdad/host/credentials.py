"""The files a TCP control API needs: the API keys and the TLS certificate and key."""

from __future__ import annotations

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
    return grpc.ssl_server_credentials([(key, chain)])
