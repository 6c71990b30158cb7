"""Upstream pools: Triton endpoints behind one name, called with raw bytes.

Requests and responses cross the gateway as serialized protobuf: the pool never decodes what it
forwards. Failures are mapped once, here, into `gateway.errors`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TypeAlias

import grpc

from gateway.errors import GatewayError, UpstreamUnavailable, from_upstream

__all__ = ["INFERENCE_SERVICE", "Endpoint", "Pool", "RawStreamCall"]

INFERENCE_SERVICE = "inference.GRPCInferenceService"

# The gateway enforces the caller-facing size limit; towards Triton anything goes.
_CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


RawUnary: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"
RawStream: TypeAlias = "grpc.aio.StreamStreamMultiCallable[bytes, bytes]"
RawStreamCall: TypeAlias = "grpc.aio.StreamStreamCall[bytes, bytes]"


def method_path(method: str) -> str:
    return f"/{INFERENCE_SERVICE}/{method}"


class Endpoint:
    """One Triton server: a channel, its raw-bytes call objects and its last health result."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self.ready = False
        self._unary: dict[str, RawUnary] = {}
        # No serializers: bytes go up and come back as they are.
        self.stream: RawStream = self.channel.stream_stream(method_path("ModelStreamInfer"), None, None)

    def unary(self, method: str) -> RawUnary:
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(method_path(method), None, None)
        return call

    def connected(self) -> bool:
        return self.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    def failure(self, exc: grpc.aio.AioRpcError, pool: str) -> GatewayError:
        return from_upstream(exc, pool, self.address, self.connected())

    async def close(self) -> None:
        await self.channel.close(None)


class Pool:
    """Interchangeable endpoints; requests go round-robin over the ready ones."""

    def __init__(self, name: str, addresses: Sequence[str]) -> None:
        self.name = name
        self.endpoints = [Endpoint(address) for address in addresses]
        self._turn = itertools.count()

    def ready(self) -> bool:
        return any(endpoint.ready for endpoint in self.endpoints)

    def pick(self) -> Endpoint:
        # Before the first health check (or when all look down) every endpoint gets a chance:
        # the call itself then says precisely what is wrong.
        candidates = [e for e in self.endpoints if e.ready] or self.endpoints
        return candidates[next(self._turn) % len(candidates)]

    async def call(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        endpoint = self.pick()
        try:
            response: bytes = await endpoint.unary(method)(payload, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise endpoint.failure(exc, self.name) from exc
        return response

    def unreachable(self) -> UpstreamUnavailable:
        addresses = ", ".join(e.address for e in self.endpoints)
        return UpstreamUnavailable(f"upstream pool '{self.name}' has no reachable endpoint ({addresses})")

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()
