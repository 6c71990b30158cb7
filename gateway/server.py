"""Assembles the gateway once at start-up and runs it until SIGTERM/SIGINT.

Lifecycle: start → health checks until an upstream answers (health SERVING) → serve → on a
signal: health NOT_SERVING, wait `drain_delay_s` for load balancers to notice, stop accepting,
let in-flight requests finish within `grace_period_s`, close upstream channels, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.config import GatewayConfig
from gateway.dataplane import DataPlane
from gateway.health import HealthMonitor
from gateway.servicer import InFlight, inference_handler
from gateway.signatures import SignatureCache
from gateway.upstream import INFERENCE_SERVICE, Pool
from router import RouteTable, Target

__all__ = ["Gateway", "serve"]

log = logging.getLogger(__name__)


def route_table(config: GatewayConfig) -> RouteTable:
    routes = {name: Target(route.pool, route.model or name, route.version) for name, route in config.routes.items()}
    return RouteTable(routes, config.default_pool)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pools = {name: Pool(name, pool.endpoints) for name, pool in config.pools.items()}
        self.health = HealthMonitor(self.pools, config.health_check_interval_s, config.health_check_timeout_s)
        signatures = SignatureCache(self.pools, config.metadata_ttl_s)
        self.dataplane = DataPlane(route_table(config), self.pools, signatures)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 1),
            ]
        )
        self.inflight = InFlight()
        self.server.add_generic_rpc_handlers([inference_handler(self.dataplane, self.health, self.inflight)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        services = (INFERENCE_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), self.server)
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind, run a first health round, start serving; the bound port."""
        port = self.server.add_insecure_port(self.config.listen)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await self.health.check_once()
        self._health_task = asyncio.create_task(self.health.run())
        await self.server.start()
        return port

    async def stop(self) -> None:
        await self.health.drain()
        if self.config.drain_delay_s:
            await asyncio.sleep(self.config.drain_delay_s)
        # stop(grace) refuses new RPCs at once; the in-flight ones get the grace period. Long-lived
        # watchers (health Watch streams) would hold it to the end, so once the data-plane work is
        # done, a second stop(0) ends them (a shorter grace in a later call wins).
        stopping = asyncio.create_task(self.server.stop(self.config.grace_period_s))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.inflight.idle(), self.config.grace_period_s)
        await self.server.stop(0)
        await stopping
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for pool in self.pools.values():
            await pool.close()


async def serve(config: GatewayConfig) -> None:
    gateway = Gateway(config)
    port = await gateway.start()
    host = config.listen.rpartition(":")[0]
    pools = "; ".join(f"{name}={','.join(p.endpoints)}" for name, p in config.pools.items())
    print(f"gateway serving on {host}:{port} (pools: {pools})", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("signal received: draining (grace period %.1fs)", config.grace_period_s)
    await gateway.stop()
    log.info("stopped")
