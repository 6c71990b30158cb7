"""Upstream failures map by status code and connection state, never by message text."""

from __future__ import annotations

import grpc
from grpc.aio import AioRpcError, Metadata

from gateway.errors import UpstreamError, UpstreamUnavailable, from_upstream


def _rpc_error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details, None)


def test_unavailable_while_disconnected_names_pool_and_endpoint() -> None:
    error = from_upstream(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), "gpu", "h:1", False)
    assert isinstance(error, UpstreamUnavailable)
    assert error.message == "upstream pool 'gpu' is unavailable: h:1 unreachable (connection refused)"


def test_tritons_own_unavailable_passes_through() -> None:
    """Triton's queue timeout is UNAVAILABLE on a live connection: the caller sees it as Triton sent it."""
    error = from_upstream(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Request timeout expired"), "gpu", "h:1", True)
    assert isinstance(error, UpstreamError)
    assert (error.code, error.message) == (grpc.StatusCode.UNAVAILABLE, "Request timeout expired")


def test_other_codes_keep_code_and_message() -> None:
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND):
        error = from_upstream(_rpc_error(code, "why"), "p", "h:1", False)
        assert (error.code, error.message) == (code, "why")
