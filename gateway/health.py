"""Active health checks of every endpoint, feeding `grpc.health.v1.Health` and ServerReady."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import grpc
from grpc_health.v1 import health, health_pb2
from tritonclient.grpc import service_pb2

from gateway.upstream import INFERENCE_SERVICE, Endpoint, ModelKey, Pool

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)
_READY_REQUEST = service_pb2.ServerReadyRequest().SerializeToString()


class HealthMonitor:
    """Probes ServerReady on every endpoint, and ModelReady for the models routed to its pool;
    the gateway serves once any pool can answer."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        interval_s: float,
        timeout_s: float,
        routed_models: Callable[[str], frozenset[ModelKey]] | None = None,
    ) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs predate grpc_health.aio
        self._pools = pools
        self._routed_models = routed_models
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._draining = False

    def all_pools_ready(self) -> bool:
        return not self._draining and all(pool.ready() for pool in self._pools.values())

    async def _ready(self, endpoint: Endpoint, method: str, request: bytes) -> bool:
        try:
            answer = await endpoint.unary(method)(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(service_pb2.ServerReadyResponse.FromString(answer).ready)  # same wire shape as ModelReady's

    async def _probe(self, endpoint: Endpoint, models: frozenset[ModelKey]) -> None:
        ready = await self._ready(endpoint, "ServerReady", _READY_REQUEST)
        if ready != endpoint.health.ready:
            log.info("endpoint %s is %s", endpoint.address, "ready" if ready else "NOT ready")
        endpoint.health.ready = ready
        unready = set()
        if ready:
            for name, version in models:
                request = service_pb2.ModelReadyRequest(name=name, version=version).SerializeToString()
                if not await self._ready(endpoint, "ModelReady", request):
                    unready.add((name, version))
        endpoint.unready_models = frozenset(unready)

    async def check_once(self) -> None:
        probes = []
        for pool in self._pools.values():
            models = self._routed_models(pool.name) if self._routed_models else frozenset()
            probes += [self._probe(endpoint, models) for endpoint in pool.endpoints]
        await asyncio.gather(*probes)
        serving = any(pool.ready() for pool in self._pools.values())
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        if not self._draining:
            for service in ("", INFERENCE_SERVICE):
                await self.servicer.set(service, status)

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)

    async def drain(self) -> None:
        """NOT_SERVING from now on, whatever the probes say: load balancers stop sending."""
        self._draining = True
        await self.servicer.enter_graceful_shutdown()
