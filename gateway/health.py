"""Active health checks of every endpoint, feeding `grpc.health.v1.Health` and ServerReady."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2
from tritonclient.grpc import service_pb2

from gateway.upstream import INFERENCE_SERVICE, Endpoint, Pool

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)
_READY_REQUEST = service_pb2.ServerReadyRequest().SerializeToString()


class HealthMonitor:
    """Probes ServerReady on every endpoint; the gateway serves once any pool can answer."""

    def __init__(self, pools: Mapping[str, Pool], interval_s: float, timeout_s: float) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs predate grpc_health.aio
        self._pools = pools
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._draining = False

    def all_pools_ready(self) -> bool:
        return not self._draining and all(pool.ready() for pool in self._pools.values())

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            answer = await endpoint.unary("ServerReady")(_READY_REQUEST, timeout=self._timeout_s)
            ready = service_pb2.ServerReadyResponse.FromString(answer).ready
        except grpc.aio.AioRpcError:
            ready = False
        if ready != endpoint.ready:
            log.info("endpoint %s is %s", endpoint.address, "ready" if ready else "NOT ready")
        endpoint.ready = ready

    async def check_once(self) -> None:
        endpoints = [e for pool in self._pools.values() for e in pool.endpoints]
        await asyncio.gather(*(self._probe(e) for e in endpoints))
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
