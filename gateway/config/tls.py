"""gRPC credentials from the TLS configuration (files read once, at start-up)."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.config.schema import ConfigError, TlsConfig, UpstreamTlsConfig

__all__ = ["channel_credentials", "server_credentials"]


def _read(path: Path | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    cert, key = _read(tls.cert, "tls.cert"), _read(tls.key, "tls.key")
    assert cert is not None and key is not None
    client_ca = _read(tls.client_ca, "tls.client_ca")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: UpstreamTlsConfig, pool: str) -> grpc.ChannelCredentials:
    prefix = f"pools.{pool}.tls"
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, f"{prefix}.ca"),
        private_key=_read(tls.key, f"{prefix}.key"),
        certificate_chain=_read(tls.cert, f"{prefix}.cert"),
    )
