"""Assembles the gateway once at start-up and runs it until SIGTERM/SIGINT.

Lifecycle: start → health checks until an upstream answers (health SERVING) → serve → on a
signal: health NOT_SERVING, wait `drain_delay_s` for load balancers to notice, stop accepting,
let in-flight requests finish within `grace_period_s`, close upstream channels, exit 0.
SIGHUP (or a change of the config file) reloads the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.admin import AdminServicer, BearerTokenInterceptor, token_names
from gateway.admission import admissions
from gateway.allocator import tune_allocator
from gateway.batcher import Batchers
from gateway.caching import InferenceCache
from gateway.config import ConfigError, GatewayConfig
from gateway.control_loop import ControlLoop
from gateway.dataplane import DataPlane
from gateway.discovery import Discovery
from gateway.health import HealthMonitor
from gateway.metrics import StatsCollector
from gateway.metrics_server import MetricsServer
from gateway.reload import ConfigReloader
from gateway.rollout.metrics import RolloutCollector
from gateway.route_sync import RouteSync
from gateway.servicer import InFlight, inference_handler
from gateway.shadow import ShadowRunner
from gateway.shadow_stats import ShadowStats
from gateway.signatures import SignatureCache
from gateway.telemetry import Telemetry
from gateway.tls import server_credentials
from gateway.upstream import INFERENCE_SERVICE, ModelKey, Pool
from gateway_admin import admin_pb2, admin_pb2_grpc
from router import Router, RouteStore

if TYPE_CHECKING:
    from gateway.native import NativeGateway

__all__ = ["ADMIN_TOKEN_ENV", "Gateway", "Serving", "admin_server", "listen", "ready_line", "serve"]

log = logging.getLogger(__name__)

_FLUSH_S = 1.0  # after the last handler returned: time for the answers still being written
ADMIN_TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"
_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Gateway:
    def __init__(
        self, config: GatewayConfig, config_path: Path | None = None, telemetry: Telemetry | None = None
    ) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry(config.telemetry)
        self.pools = {name: Pool(name, pool) for name, pool in config.pools.items()}
        self.store = RouteStore(self.pools, history=config.route_history)
        self.health = HealthMonitor(
            self.pools, config.health_check_interval_s, config.health_check_timeout_s, self._routed_models
        )
        self.store.replace([route.to_route(model) for model, route in config.routes.items()], kind="set")
        signatures = SignatureCache(self.pools, config.metadata_ttl_s)
        self.shadow_stats = ShadowStats()
        self.shadows = ShadowRunner(self.pools, signatures, self.shadow_stats, config.shadow, self.telemetry)
        default_pool = self.pools.get(config.default_pool or "")
        discovery = Discovery(self.store, default_pool) if default_pool else None
        self.cache = InferenceCache(config)
        self.batchers = Batchers(config)
        self.dataplane = DataPlane(
            self.store, Router(), self.pools, signatures, discovery, self.shadows, self.cache,
            admissions(config, self.pools), config.admission, self.batchers,
        )  # fmt: skip
        self.reloader = (
            ConfigReloader(config_path, config, self.store, on_reload=self._reconfigure) if config_path else None
        )

        self.inflight = InFlight()
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1),
        ]
        if config.max_connection_age_s is not None:
            age_ms = int(config.max_connection_age_s * 1000)
            options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", age_ms)]
        self.server = grpc.aio.server(options=options)
        handler = inference_handler(self.dataplane, self.health, self.inflight, self.telemetry)
        self.server.add_generic_rpc_handlers([handler])
        self.telemetry.registry.register(
            StatsCollector(
                self.pools, lambda: self.dataplane.admissions, self.cache, self.shadow_stats, self.batchers.stats
            )
        )
        telemetry_config = config.telemetry
        self.metrics_server = (
            MetricsServer(self.telemetry.registry, telemetry_config.metrics_host, telemetry_config.metrics_port)
            if telemetry_config.metrics_port is not None
            else None
        )
        self.control = ControlLoop(config, self.store, self.telemetry.variants.snapshot, self.shadow_stats)
        self.telemetry.registry.register(RolloutCollector(self.control.rollouts))
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection((INFERENCE_SERVICE, _HEALTH_SERVICE, reflection.SERVICE_NAME), self.server)
        self.admin_server = self._admin_server() if config.admin else None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics_port: int | None = None
        shared = config.shared
        self.route_sync = RouteSync(self.store, shared.redis_url, shared.namespace) if shared.redis_url else None

    def _reconfigure(self, config: GatewayConfig) -> None:
        self.cache.reconfigure(config)
        self.batchers.reconfigure(config)

    def _routed_models(self, pool: str) -> frozenset[ModelKey]:
        """Upstream (model, version) pairs the routes send to `pool`: the health checker probes them."""
        return frozenset(
            (variant.model, variant.version)
            for route in self.store.snapshot().values()
            for variant in route.variants
            if variant.pool == pool
        )

    def _admin_server(self) -> grpc.aio.Server:
        servicer = AdminServicer(self.dataplane, self.shadow_stats, self.cache, control=self.control)
        return admin_server(self.config, servicer)

    async def start(self) -> tuple[int, int | None]:
        """Bind, run a first health round, start serving; the bound data and admin ports."""
        credentials = server_credentials(self.config.tls) if self.config.tls else None
        port = listen(self.server, self.config.listen, credentials)
        if self.metrics_server is not None:
            self.metrics_port = await self.metrics_server.start()
        admin_port = None
        if self.admin_server is not None and self.config.admin is not None:
            admin_port = listen(self.admin_server, self.config.admin.listen, credentials)
            await self.admin_server.start()
        await self.health.check_once()
        self._tasks.append(asyncio.create_task(self.health.run()))
        if self.route_sync is not None:
            await self.route_sync.load()
            self._tasks.append(asyncio.create_task(self.route_sync.run()))
        if self.reloader is not None:
            self._tasks.append(asyncio.create_task(self.reloader.watch()))
        await self.control.start()
        await self.server.start()
        return port, admin_port

    async def stop(self) -> None:
        await self.health.drain()
        if self.config.drain_delay_s:
            await asyncio.sleep(self.config.drain_delay_s)
        # stop(grace) refuses new RPCs at once; the in-flight ones get the grace period. Long-lived
        # watchers (health Watch streams) would hold it to the end, so once the data-plane work is
        # done, a second stop ends them (a shorter grace in a later call wins). Not stop(0): a
        # handler that has returned may still be writing its answer, which stop(0) would cancel.
        stopping = asyncio.create_task(self.server.stop(self.config.grace_period_s))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.inflight.idle(), self.config.grace_period_s)
        await self.server.stop(min(_FLUSH_S, self.config.grace_period_s))
        await stopping
        await self.shadows.close(timeout_s=min(self.config.grace_period_s, 5.0))
        await self.batchers.close()
        await self.cache.close()
        if self.admin_server is not None:
            await self.admin_server.stop(0)
        await self.control.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pool in self.pools.values():
            await pool.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.route_sync is not None:
            await self.route_sync.close()
        self.telemetry.close()


def admin_server(config: GatewayConfig, servicer: AdminServicer) -> grpc.aio.Server:
    """The admin API's server, behind its bearer token (either engine)."""
    assert config.admin is not None
    token = config.admin.token or os.environ.get(ADMIN_TOKEN_ENV)
    if not token and not config.admin.tokens:
        raise ConfigError(
            f"admin: a bearer token is required (admin.token, admin.tokens, --admin-token or {ADMIN_TOKEN_ENV})"
        )
    accepted = token_names(token, config.admin.tokens)
    servicer.actors = accepted
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor(accepted)])
    admin_pb2_grpc.add_GatewayAdminServicer_to_server(servicer, server)
    admin_service = admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].full_name
    reflection.enable_server_reflection((admin_service, reflection.SERVICE_NAME), server)
    return server


def listen(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


@dataclass(frozen=True, slots=True)
class Serving:
    """Where a started gateway listens (ports as bound: 0 in the configuration becomes a real one)."""

    host: str
    port: int
    admin: str | None  # HOST:PORT
    metrics: str | None  # HOST:PORT


def ready_line(config: GatewayConfig, serving: Serving, suffix: str = "") -> str:
    """What `gateway serve` prints once it serves; scripts and tests wait for it."""
    pools = "; ".join(f"{name}={','.join(p.endpoints)}" for name, p in config.pools.items())
    extra = f", admin on {serving.admin}" if serving.admin else ""
    extra += f", metrics on {serving.metrics}" if serving.metrics else ""
    return f"gateway serving on {serving.host}:{serving.port} (pools: {pools}){extra}{suffix}"


def _print_ready(config: GatewayConfig, serving: Serving) -> None:
    print(ready_line(config, serving), flush=True)


async def serve(
    config: GatewayConfig,
    config_path: Path | None = None,
    announce: Callable[[GatewayConfig, Serving], None] = _print_ready,
) -> None:
    tune_allocator()
    gateway: Gateway | NativeGateway
    if config.engine == "native":
        from gateway.native import NativeGateway

        gateway = NativeGateway(config, config_path)
    else:
        gateway = Gateway(config, config_path)
    port, admin_port = await gateway.start()
    host = config.listen.rpartition(":")[0]
    admin = f"{config.admin.listen.rpartition(':')[0]}:{admin_port}" if config.admin else None
    metrics = f"{config.telemetry.metrics_host}:{gateway.metrics_port}" if gateway.metrics_port else None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if gateway.reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, gateway.reloader.reload)
    # Announced last: whoever waits for it may signal the process at once.
    announce(config, Serving(host, port, admin, metrics))
    await stopping.wait()
    log.info("signal received: draining (grace period %.1fs)", config.grace_period_s)
    await gateway.stop()
    log.info("stopped")
