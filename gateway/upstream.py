"""Upstream pools: Triton endpoints behind one name, called with raw bytes.

Requests and responses cross the gateway as serialized protobuf: the pool never decodes what it
forwards. Each call picks an endpoint by power of two choices among the eligible ones (ready by
the active probe, not ejected, ready for the model); a connection failure counts towards outlier
ejection and is retried on another endpoint while the retry budget and the deadline allow.
Failures are mapped once, here, into `gateway.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias

import grpc
from opentelemetry.trace import SpanKind

from gateway.balancer import EndpointLoad, choose
from gateway.config import PoolConfig
from gateway.errors import GatewayError, UpstreamUnavailable, from_upstream
from gateway.outlier import EndpointHealth, OutlierSettings
from gateway.pool_stats import PoolStats
from gateway.retry_budget import RetryBudget
from gateway.telemetry import child_span, current, outgoing_metadata
from gateway.tls import channel_credentials

__all__ = ["INFERENCE_SERVICE", "Endpoint", "ModelKey", "Pool", "RawStreamCall"]

log = logging.getLogger(__name__)

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
ModelKey = tuple[str, str]  # upstream model name, version


def method_path(method: str) -> str:
    return f"/{INFERENCE_SERVICE}/{method}"


class Endpoint:
    """One Triton server: a channel, its raw-bytes call objects, its health and load."""

    def __init__(
        self,
        address: str,
        outlier: OutlierSettings,
        clock: Callable[[], float],
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ) -> None:
        self.address = address
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            options = [*_CHANNEL_OPTIONS, *((("grpc.ssl_target_name_override", server_name),) if server_name else ())]
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        self.health = EndpointHealth(outlier, clock)
        self.load = EndpointLoad()
        self.unready_models: frozenset[ModelKey] = frozenset()  # from the active ModelReady probes
        self._unary: dict[str, RawUnary] = {}
        # No serializers: bytes go up and come back as they are.
        self.stream: RawStream = self.channel.stream_stream(method_path("ModelStreamInfer"), None, None)

    @property
    def ready(self) -> bool:
        return self.health.ready

    def unary(self, method: str) -> RawUnary:
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(method_path(method), None, None)
        return call

    def connected(self) -> bool:
        return self.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    def failure(self, exc: grpc.aio.AioRpcError, pool: str) -> GatewayError:
        return from_upstream(exc, pool, self.address, self.connected())

    def serves(self, model: ModelKey | None) -> bool:
        return model is None or model not in self.unready_models

    async def close(self) -> None:
        await self.channel.close(None)


class Pool:
    def __init__(
        self,
        name: str,
        config: PoolConfig,
        stats: PoolStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[int], int] = random.randrange,
    ) -> None:
        self.name = name
        self.config = config
        self.stats = stats or PoolStats()
        outlier = OutlierSettings(**config.outlier.model_dump())
        credentials = channel_credentials(config.tls, name) if config.tls else None
        server_name = config.tls.server_name if config.tls else None
        self.endpoints = [Endpoint(address, outlier, clock, credentials, server_name) for address in config.endpoints]
        self.budget = RetryBudget(ratio=config.retry_budget_ratio, initial=config.retry_budget_initial)
        self._clock = clock
        self._draw = draw

    def ready(self) -> bool:
        return any(endpoint.health.eligible() for endpoint in self.endpoints)

    def pick(self, model: ModelKey | None = None, exclude: Sequence[Endpoint] = ()) -> Endpoint:
        """The eligible endpoint to try; with none eligible, any not yet tried (the call itself
        then says precisely what is wrong, and nothing is refused on stale health)."""
        candidates = [e for e in self.endpoints if e not in exclude and e.health.eligible() and e.serves(model)]
        if not candidates:
            untried = [e for e in self.endpoints if e not in exclude] or self.endpoints
            candidates = [e for e in untried if not e.health.ejected()] or untried
        return candidates[choose([c.load for c in candidates], self._draw)]

    def _may_eject(self) -> bool:
        ejected = sum(e.health.ejected() for e in self.endpoints)
        return (ejected + 1) * 100 <= self.config.outlier.max_ejection_percent * len(self.endpoints)

    async def call(self, method: str, payload: bytes, timeout: float | None, model: ModelKey | None = None) -> bytes:
        self.budget.on_request()
        deadline = None if timeout is None else self._clock() + timeout
        if self.config.hedge_delay_ms is not None and method == "ModelInfer" and len(self.endpoints) > 1:
            return await self._hedged(payload, deadline, model)
        tried: list[Endpoint] = []
        while True:
            endpoint = self.pick(model, tried)
            tried.append(endpoint)
            try:
                return await self._attempt(endpoint, method, payload, deadline, len(tried))
            except UpstreamUnavailable:
                if not self._retry(tried, deadline):
                    raise

    async def _attempt(
        self, endpoint: Endpoint, method: str, payload: bytes, deadline: float | None, attempt: int
    ) -> bytes:
        """One call to one endpoint: load, outlier and trace bookkeeping; errors mapped."""
        remaining = None if deadline is None else max(deadline - self._clock(), 0.001)
        started = self._clock()
        endpoint.load.outstanding += 1
        self.stats.attempts += 1
        record = current()
        try:
            with child_span(f"upstream {method}", kind=SpanKind.CLIENT) as span:
                if span.is_recording():  # untraced requests build no attributes
                    span.set_attributes({"rpc.system": "grpc", "rpc.method": method, "server.address": endpoint.address,
                                         "gateway.pool": self.name, "gateway.attempt": attempt})  # fmt: skip
                call = endpoint.unary(method)
                response: bytes = await call(payload, timeout=remaining, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            error = endpoint.failure(exc, self.name)
            if not isinstance(error, UpstreamUnavailable):
                endpoint.health.success()  # Triton answered: the endpoint itself is fine
            elif endpoint.health.failure(self._may_eject()):
                self.stats.ejections += 1
                log.warning("pool %s: ejected %s after repeated connection failures", self.name, endpoint.address)
            raise error from exc
        finally:
            endpoint.load.outstanding -= 1
            if record is not None:
                record.upstream_s += self._clock() - started
                record.retries = attempt - 1
        endpoint.health.success()
        endpoint.load.observe(self._clock() - started)
        return response

    async def _hedged(self, payload: bytes, deadline: float | None, model: ModelKey | None) -> bytes:
        """Hedging: when the first attempt has not answered after `hedge_delay_ms`, a second goes to
        another endpoint; the first success wins and the other is cancelled. A hedge spends the
        retry budget, so a slow pool sees at most about (1 + ratio) times the traffic."""
        first_endpoint = self.pick(model)
        first = asyncio.create_task(self._attempt(first_endpoint, "ModelInfer", payload, deadline, 1))
        delay_s = (self.config.hedge_delay_ms or 0) / 1000
        done, _ = await asyncio.wait({first}, timeout=delay_s)
        if done:
            if isinstance(first.exception(), UpstreamUnavailable) and self._retry([first_endpoint], deadline):
                return await self._attempt(self.pick(model, [first_endpoint]), "ModelInfer", payload, deadline, 2)
            return await first
        if not self.budget.try_retry():
            return await first
        self.stats.hedges += 1
        second_endpoint = self.pick(model, [first_endpoint])
        second = asyncio.create_task(self._attempt(second_endpoint, "ModelInfer", payload, deadline, 2))
        pending = {first, second}
        error: BaseException | None = None
        try:
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.exception() is None:
                        return task.result()
                    error = task.exception()
            assert error is not None
            raise error
        finally:
            for task in pending:
                task.cancel()

    def _retry(self, tried: Sequence[Endpoint], deadline: float | None) -> bool:
        """Another attempt on another endpoint: within max_attempts, the deadline and the budget."""
        if len(tried) >= self.config.max_attempts or len(tried) >= len(self.endpoints):
            return False
        if deadline is not None and deadline <= self._clock():
            return False
        if not self.budget.try_retry():
            self.stats.retries_denied += 1
            return False
        self.stats.retries += 1
        return True

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()
