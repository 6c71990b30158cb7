"""Runs the gateway until SIGTERM/SIGINT: the core serves, the control plane runs around it.

Lifecycle: start → health checks until an upstream answers (health SERVING) → serve → on a
signal: health NOT_SERVING, wait `drain_delay_s` for load balancers to notice, stop accepting,
let in-flight requests finish within `grace_period_s`, exit 0. SIGHUP (or a change of the config
file) reloads the routes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.reload import ConfigSource
from gateway.config.schema import GatewayConfig
from gateway.serving.gateway import Gateway

__all__ = ["Serving", "ready_line", "serve"]

log = logging.getLogger(__name__)


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
    source: ConfigSource | None = None,
    announce: Callable[[GatewayConfig, Serving], None] = _print_ready,
) -> None:
    """`source`: the file to reload routes from (and how to load it as at start)."""
    gateway = Gateway(config, source)
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
