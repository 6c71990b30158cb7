"""The gateway's expected errors, each carrying the gRPC status a caller receives.

    GatewayError                 (base: code + message a person can act on)
    ├── ModelNotFound            NOT_FOUND          no route, or the upstream does not know it
    ├── InvalidRequest           INVALID_ARGUMENT   inputs do not match the model's metadata
    ├── NotSupported             UNIMPLEMENTED      an RPC the gateway cannot proxy
    ├── Conflict                 FAILED_PRECONDITION the change does not fit the state (e.g. a rollout under way)
    ├── UpstreamUnavailable      UNAVAILABLE        no endpoint of a pool could be reached
    └── UpstreamError            (upstream's code)  an answer with an error: code and text kept

The control plane's RPCs (admin API) raise these; the request path's own errors (overload,
deadlines, ...) are the core's
(crates/dataplane/src/protocol/error.rs), with the same codes and messages.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Conflict",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "NotSupported",
    "UpstreamError",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidRequest(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotSupported(GatewayError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Conflict(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UpstreamUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE


class UpstreamError(GatewayError):
    """Triton's own error answer, passed on with its status code and message unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
