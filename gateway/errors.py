"""The gateway's expected errors, each carrying the gRPC status a caller receives.

    GatewayError                 (base: code + message a person can act on)
    ├── ModelNotFound            NOT_FOUND          no route, or the upstream does not know it
    ├── InvalidRequest           INVALID_ARGUMENT   inputs do not match the model's metadata
    ├── NotSupported             UNIMPLEMENTED      an RPC the gateway cannot proxy
    ├── Conflict                 FAILED_PRECONDITION the change does not fit the state (e.g. a rollout under way)
    ├── UpstreamUnavailable      UNAVAILABLE        no endpoint of a pool could be reached
    ├── Overloaded               RESOURCE_EXHAUSTED the pool's queue is full (with a retry-after hint)
    ├── DeadlineExceeded         DEADLINE_EXCEEDED  it could not be served in time; Triton never saw it
    └── UpstreamError            (upstream's code)  Triton answered with an error: code and text kept

`from_upstream` is the one place that turns a `grpc.aio.AioRpcError` into one of these, by
status code and connection state, never by message text. Anything else that escapes a handler
is a bug: the servicer boundary logs it and answers INTERNAL with a request id.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Conflict",
    "DeadlineExceeded",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "NotSupported",
    "Overloaded",
    "UpstreamError",
    "UpstreamUnavailable",
    "from_upstream",
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


class Overloaded(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamError(GatewayError):
    """Triton's own error answer, passed on with its status code and message unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def from_upstream(exc: grpc.aio.AioRpcError, pool: str, endpoint: str, connected: bool) -> GatewayError:
    """Map an upstream failure; `connected` tells a dead endpoint from Triton's own UNAVAILABLE
    (its queue timeout, "Server not ready"), which must reach the caller as Triton sent it."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and not connected:
        return UpstreamUnavailable(f"upstream pool '{pool}' is unavailable: {endpoint} unreachable ({details})")
    return UpstreamError(code, details)
